"""docs/databricks-payloads.md shows what the backend sends: its examples are checked against
`compute_spec`/`databricks_parameters` and against databricks-sdk's request types."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.fixtures.databricks.payload import check_round_trip

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "databricks-payloads.md"
JOBS = "/Volumes/main/mlops/jobs/v0.1.0-1a2b3c4d5e6f"
RUN_ID = "manual__2026-12-01T09:00:00+00:00"
SECTIONS = {"serverless": "## Serverless", "jobs": "## Jobs compute", "existing": "## An existing cluster"}


def _example(kind: str) -> dict:
    text = DOC.read_text()
    section = text[text.index(SECTIONS[kind]):]
    block = re.search(r"```json\n(.*?)\n```", section, re.DOTALL)
    assert block, f"no JSON example under {SECTIONS[kind]!r}"
    return json.loads(block.group(1))


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(REPO / "dags"))
    for key in ("AIRFLOW_VAR_MLOPSCTL_DATABRICKS_COMPUTE", "AIRFLOW_VAR_MLOPSCTL_DATABRICKS_CLUSTER_ID",
                "MLOPSCTL_DATABRICKS_PIP", "MLOPSCTL_DATABRICKS_WORK_DIR", "MLOPSCTL_DATABRICKS_TRACKING_URI",
                "MLOPSCTL_DATABRICKS_REGISTRY_URI", "MLOPSCTL_DATABRICKS_EXPERIMENT_PREFIX",
                "MLOPSCTL_DATABRICKS_SPARK_VERSION", "MLOPSCTL_DATABRICKS_NUM_WORKERS",
                "MLOPSCTL_DATABRICKS_DATA_SECURITY_MODE", "MLOPSCTL_DATABRICKS_CLUSTER_JSON",
                "MLOPSCTL_DATABRICKS_ENVIRONMENT_VERSION", "MLOPSCTL_DATABRICKS_PERFORMANCE_TARGET"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_UC_SCHEMA", "main.mlops")
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_NODE_TYPE_ID", "i3.xlarge")
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_CLUSTER_ID", "0101-123456-abcdefgh")
    from common import databricks_backend

    return databricks_backend


@pytest.mark.parametrize("kind", list(SECTIONS))
def test_documented_payload_is_what_the_backend_sends(backend, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_COMPUTE", kind)
    body = _example(kind)
    [task] = body["tasks"]
    spec = backend.compute_spec(JOBS, "train_model.py")
    top = backend.TOP_LEVEL_FIELDS  # environments, performance_target: the run's, not the task's
    assert {k: body.get(k) for k in top} == {k: spec.get(k) for k in top}
    assert {k: task[k] for k in spec if k not in top} == {k: v for k, v in spec.items() if k not in top}
    compute_keys = {"new_cluster", "existing_cluster_id", "environment_key", "libraries"}
    assert compute_keys & set(task) == compute_keys & set(spec)  # the example shows no other compute
    assert task["spark_python_task"]["python_file"] == f"{JOBS}/train_model.py"
    assert body["run_name"] == backend.run_name("build_model", "train_model", RUN_ID)
    assert body["timeout_seconds"] == "10800"  # the DAGs' execution_timeout, as the provider sends it
    check_round_trip({k: v for k, v in body.items() if k != "tasks"}, body["tasks"])  # raises on unknown fields


def test_documented_parameters_are_the_databricks_side_values(backend) -> None:
    documented = _example("serverless")["tasks"][0]["spark_python_task"]["parameters"]
    assert documented[-2:] == ["--jobs-version", "0.1.0+1a2b3c4d5e6f"]  # added by the backend, from JOBS
    dag_side = documented[:-2]
    for flag, local in (("--work-dir", "/tmp/work"), ("--tracking-uri", "http://127.0.0.1:5000"),
                        ("--registry-uri", ""), ("--experiment-prefix", "/mlopsctl"),
                        ("--register-model", "mlopsctl-random-forest")):
        dag_side[dag_side.index(flag) + 1] = local  # what the DAG renders for the local stack
    assert backend.databricks_parameters(dag_side, JOBS) == documented
