"""
### grid_search

Grid search of scikit-learn's `RandomForestRegressor` over `max_depth` x `n_estimators` with k-fold
cross-validation, **without Spark for the search**: `grid_search` runs as a child Python process of
the Airflow task (the worker, not the scheduler), fitting with joblib on every core.

`preprocess_data` (the same Spark job as build_model) validates and cleans the data first. MLflow
(experiment `/mlopsctl/grid_search`): one parent run (best params, best CV rmse, held-out rmse/mae/r2
of the refit best model, `heatmap.png`, registered model) and one child run per grid point (a
point that fails is a FAILED child run with tag `mlopsctl.error`; the others are kept).

Trigger: `{"logical_date": null, "conf": {"max_depth": [80, 90], "n_estimators": [100, 200], "cv": 3}}`
or `mlopsctl grid-search`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import dag
from common.compute import DEFAULT_ARGS, MACROS, common_arguments, compute_tag, job_task, model_arguments
from common.params import params_for


@dag(
    dag_id="grid_search",
    schedule=None,
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["mlopsctl", "grid-search", compute_tag()],
    doc_md=__doc__,
    params=params_for("grid_search"),
    default_args=DEFAULT_ARGS,
    user_defined_macros=MACROS,
    max_active_runs=2,
)
def grid_search() -> None:
    preprocess = job_task("preprocess_data", "preprocess_data.py", common_arguments())
    search = job_task(
        "grid_search",
        "grid_search.py",
        [
            *common_arguments(),
            "--max-depth", "{{ params.max_depth | join(',') }}",
            "--n-estimators", "{{ params.n_estimators | join(',') }}",
            "--cv", "{{ params.cv }}",
            *model_arguments(),
        ],
        spark=False,
    )
    preprocess >> search


grid_search()
