"""
### build_model

Train scikit-learn's `RandomForestRegressor` on one data set and track it in MLflow.

`preprocess_data` (Spark job) reads the source (`data`: CSV/Parquet path, or null for scikit-learn's
bundled diabetes data), validates it (bad data fails fast, without retries), cleans it and writes a
typed training table keyed by this run's id; `train_model` (Spark job) trains on it, evaluates rmse/mae/r2
on a held-out split and logs one MLflow run (experiment `/mlopsctl/build_model`, tags
`airflow.dag_run_id` = this run) plus a registered model version.

Trigger: `POST /api/v2/dags/build_model/dagRuns` with
`{"logical_date": null, "conf": {"max_depth": 80, "n_estimators": 100}}`, or `mlopsctl run build-model`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import dag
from common.compute import DEFAULT_ARGS, MACROS, common_arguments, compute_tag, job_task, model_arguments
from common.params import params_for


@dag(
    dag_id="build_model",
    schedule=None,
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["mlopsctl", "build-model", compute_tag()],
    doc_md=__doc__,
    params=params_for("build_model"),
    default_args=DEFAULT_ARGS,
    user_defined_macros=MACROS,
    max_active_runs=4,
)
def build_model() -> None:
    preprocess = job_task("preprocess_data", "preprocess_data.py", common_arguments())
    train = job_task(
        "train_model",
        "train_model.py",
        [
            *common_arguments(),
            "--max-depth", "{{ params.max_depth }}",
            "--n-estimators", "{{ params.n_estimators }}",
            *model_arguments(),
        ],
    )
    preprocess >> train


build_model()
