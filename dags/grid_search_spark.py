"""
### grid_search_spark

The same grid search as `grid_search` (same Params, splits, seeds and MLflow shape, hence the same
best params and metrics), but every (grid point, fold) is a Spark task: the training split is
broadcast and each executor fits the same scikit-learn `RandomForestRegressor`; the driver gathers
the scores and logs to MLflow (experiment `/mlopsctl/grid_search_spark`: a parent run with the best
model, `heatmap.png` and a registered version, one child run per grid point).

Trigger: `{"logical_date": null, "conf": {"max_depth": [80, 90], "n_estimators": [100, 200], "cv": 3}}`
or `mlopsctl grid-search --spark`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import dag
from common.compute import DEFAULT_ARGS, MACROS, common_arguments, compute_tag, job_task, model_arguments
from common.params import params_for


@dag(
    dag_id="grid_search_spark",
    schedule=None,
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["mlopsctl", "grid-search", "spark", compute_tag()],
    doc_md=__doc__,
    params=params_for("grid_search_spark"),
    default_args=DEFAULT_ARGS,
    user_defined_macros=MACROS,
    max_active_runs=2,
)
def grid_search_spark() -> None:
    preprocess = job_task("preprocess_data", "preprocess_data.py", common_arguments())
    search = job_task(
        "grid_search_spark",
        "grid_search_spark.py",
        [
            *common_arguments(),
            "--max-depth", "{{ params.max_depth | join(',') }}",
            "--n-estimators", "{{ params.n_estimators | join(',') }}",
            "--cv", "{{ params.cv }}",
            "--worker-memory", "{{ mlopsctl.grid_worker_memory }}",
            *model_arguments(),
        ],
    )
    preprocess >> search


grid_search_spark()
