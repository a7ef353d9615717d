"""
### evaluate_model

Score a registered model version (the candidate) and the current holder of an alias on the same rows, with
MLflow's `mlflow.models.evaluate`, and log both sets of metrics (rmse, mae, r2) to one MLflow run (experiment
`/mlopsctl/evaluate_model`, tag `mlopsctl.role` = evaluation, `airflow.dag_run_id` = this run).

`evaluate_model` (Spark job) reads `data` (a file, URI, volume path or table) or, when it is null, the held-out
rows the candidate's training run logged. `mlopsctl promote` triggers this DAG, then judges its gates on the
metrics and moves the alias; the DAG itself changes nothing in the registry.

Trigger: `POST /api/v2/dags/evaluate_model/dagRuns` with
`{"logical_date": null, "conf": {"model_name": "mlopsctl-random-forest", "model_version": 3}}`, or
`mlopsctl promote mlopsctl-random-forest 3`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import dag
from common.compute import DEFAULT_ARGS, MACROS, compute_tag, job_task, run_arguments
from common.params import params_for


@dag(
    dag_id="evaluate_model",
    schedule=None,
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["mlopsctl", "evaluate-model", compute_tag()],
    doc_md=__doc__,
    params=params_for("evaluate_model"),
    default_args=DEFAULT_ARGS,
    user_defined_macros=MACROS,
    max_active_runs=4,
)
def evaluate_model() -> None:
    job_task(
        "evaluate_model",
        "evaluate_model.py",
        [
            *run_arguments(),
            "--data", "{{ params.data if params.data is not none else '' }}",
            "--model-name", "{{ params.model_name }}",
            "--model-version", "{{ params.model_version if params.model_version is not none else '' }}",
            "--alias", "{{ params.alias }}",
        ],
    )


evaluate_model()
