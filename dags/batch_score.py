"""
### batch_score

Score a data set with one registered model version, on the workers.

`batch_score` (Spark job) loads `models:/<model_name>/<model_version>` (the CLI resolves an alias to the version
before it triggers), refuses data that lacks a column the model's signature names (without retries), casts each
input column to the signature's type, predicts with `mlflow.pyfunc.spark_udf`, and writes the input columns plus
`prediction`, `model_name`, `model_version` and `scored_at` to `output` (Parquet; a Delta table on Databricks for
a table name). `mode` says what to do when the output exists: `error` (refuse), `overwrite` or `append`. It logs
one MLflow run (experiment `/mlopsctl/batch_score`, role `scoring`) with the rows scored and the prediction's
count, min, mean and max.

Trigger: `POST /api/v2/dags/batch_score/dagRuns` with `{"logical_date": null, "conf": {"model_name": "m",
"model_version": 3, "data": "/data/new.csv", "output": "/data/scored"}}`, or `mlopsctl score m@champion --data
new.csv --output scored`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import dag
from common.compute import DEFAULT_ARGS, MACROS, compute_tag, job_task, run_arguments
from common.params import params_for


@dag(
    dag_id="batch_score",
    schedule=None,
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["mlopsctl", "score", compute_tag()],
    doc_md=__doc__,
    params=params_for("batch_score"),
    default_args=DEFAULT_ARGS,
    user_defined_macros=MACROS,
    max_active_runs=4,
)
def batch_score() -> None:
    job_task(
        "batch_score",
        "batch_score.py",
        [
            *run_arguments(),
            "--model-name", "{{ params.model_name if params.model_name is not none else '' }}",
            "--model-version", "{{ params.model_version if params.model_version is not none else '' }}",
            "--data", "{{ params.data if params.data is not none else '' }}",
            "--output", "{{ params.output if params.output is not none else '' }}",
            "--mode", "{{ params.mode }}",
        ],
    )


batch_score()
