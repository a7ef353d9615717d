"""dags/common/databricks_backend.py: settings -> runs/submit payload, and the real provider operator
against the Databricks test server (submit -> spark-submit -> runs/get -> get-output)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.databricks_server import (
    DatabricksTestServer,
    databricks_server,  # noqa: F401 - fixture
)

DAGS = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(DAGS))
    for key in ("AIRFLOW_CONN_DATABRICKS_DEFAULT", "AIRFLOW_VAR_MLOPSCTL_DATABRICKS_JOBS_PATH"):
        monkeypatch.delenv(key, raising=False)
    from common import databricks_backend

    return databricks_backend


def test_compute_kinds(backend, monkeypatch: pytest.MonkeyPatch) -> None:
    assert backend.compute_spec() == {"new_cluster": {
        "spark_version": backend.DEFAULT_SPARK_VERSION, "node_type_id": backend.DEFAULT_NODE_TYPE, "num_workers": 1}}
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_NUM_WORKERS", "4")
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_CLUSTER_JSON", '{"data_security_mode": "SINGLE_USER"}')
    cluster = backend.compute_spec()["new_cluster"]
    assert cluster["num_workers"] == 4 and cluster["data_security_mode"] == "SINGLE_USER"
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_COMPUTE", "existing")
    with pytest.raises(backend.DatabricksConfigError, match="CLUSTER_ID"):
        backend.compute_spec()
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_CLUSTER_ID", "0101-abc")
    assert backend.compute_spec() == {"existing_cluster_id": "0101-abc"}
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_COMPUTE", "serverless")
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_PIP", "scikit-learn==1.5.2, pandas")
    spec = backend.compute_spec()
    assert spec["environment_key"] == "mlopsctl"
    assert spec["environments"] == [{"environment_key": "mlopsctl",
                                     "spec": {"client": "2", "dependencies": ["scikit-learn==1.5.2", "pandas"]}}]
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_COMPUTE", "gpu")
    with pytest.raises(backend.DatabricksConfigError, match="jobs, existing or serverless"):
        backend.compute_spec()


def test_jobs_path_and_work_dir(backend, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(backend.DatabricksConfigError, match="deploy jobs"):
        backend.jobs_path()
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_JOBS_PATH", "/tmp/jobs")
    with pytest.raises(backend.DatabricksConfigError, match="/Workspace/"):
        backend.jobs_path()
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_JOBS_PATH", "/Volumes/main/mlops/jobs/v1/")
    assert backend.jobs_path() == "/Volumes/main/mlops/jobs/v1"
    assert backend.work_dir("/Volumes/main/mlops/jobs/v1") == "/Volumes/main/mlops/jobs/work"
    with pytest.raises(backend.DatabricksConfigError, match="WORK_DIR"):
        backend.work_dir("/Workspace/Shared/jobs/v1")
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_WORK_DIR", "/Volumes/main/mlops/work/")
    assert backend.work_dir("/Workspace/Shared/jobs/v1") == "/Volumes/main/mlops/work"


def test_parameters_get_databricks_values(backend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_WORK_DIR", "/Volumes/c/s/v/work")
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_UC_SCHEMA", "main.mlops")
    argv = ["--dag-id", "build_model", "--work-dir", "/local", "--tracking-uri", "http://127.0.0.1:5000",
            "--registry-uri", "", "--experiment-prefix", "/mlopsctl", "--max-depth", 80,
            "--register-model", "mlopsctl-random-forest", "--data", None]
    out = backend.databricks_parameters(argv, "/Workspace/x")
    assert out == ["--dag-id", "build_model", "--work-dir", "/Volumes/c/s/v/work", "--tracking-uri", "databricks",
                   "--registry-uri", "databricks-uc", "--experiment-prefix", "/Shared/mlopsctl", "--max-depth", "80",
                   "--register-model", "main.mlops.mlopsctl-random-forest", "--data", ""]
    assert backend.model_name("cat.sch.model") == "cat.sch.model"
    assert backend.model_name("") == ""  # empty = do not register
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_TRACKING_URI", "http://127.0.0.1:5001")
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_REGISTRY_URI", "")
    monkeypatch.setenv("MLOPSCTL_MLFLOW_EXPERIMENT_PREFIX", "/tests")
    out = backend.databricks_parameters(argv, "/Workspace/x")
    assert out[5] == "http://127.0.0.1:5001" and out[7] == "" and out[9] == "/tests"


def test_compute_routes_to_the_databricks_operator(backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """compute.job_task builds this backend's operator when MLOPSCTL_COMPUTE=databricks, with templates intact."""
    monkeypatch.setenv("MLOPSCTL_COMPUTE", "databricks")
    from common import compute

    op = compute.job_task("train_model", "train_model.py", ["--max-depth", "{{ params.max_depth }}"])
    assert isinstance(op, backend.MlopsctlDatabricksRunOperator)
    assert "spark_python_task" in op.template_fields
    assert op.spark_python_task == {"python_file": "train_model.py", "parameters": ["--max-depth",
                                                                                   "{{ params.max_depth }}"]}


# --- the real provider operator against the test server -------------------------------------------------
class _TI:
    def __init__(self) -> None:
        self.stats_tags: dict[str, str] = {}  # read by the provider's resumable-job mixin
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


JOB = b"""import sys
print("ARGS " + " ".join(sys.argv[1:]))
if "--explode" in sys.argv:
    raise RuntimeError("exploded on purpose")
if "--bad-data" in sys.argv:
    print("mlopsctl-error: column 'target' not found", file=sys.stderr)
    sys.exit(3)
"""


@pytest.fixture
def deployed(backend, databricks_server: DatabricksTestServer, monkeypatch, tmp_path) -> DatabricksTestServer:  # noqa: F811
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.service.workspace import ImportFormat

    w = WorkspaceClient(host=databricks_server.url, token=databricks_server.token)
    w.workspace.mkdirs("/Shared/jobs/v1")
    w.workspace.upload("/Shared/jobs/v1/echo.py", io.BytesIO(JOB), format=ImportFormat.AUTO, overwrite=True)
    monkeypatch.setenv("AIRFLOW_CONN_DATABRICKS_DEFAULT", json.dumps({
        "conn_type": "databricks", "host": "127.0.0.1", "port": databricks_server.port, "schema": "http",
        "password": databricks_server.token}))
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_JOBS_PATH", "/Workspace/Shared/jobs/v1")
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_POLL_SECONDS", "1")
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_COMPUTE", "existing")
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_CLUSTER_ID", "0101-test")
    return databricks_server


def test_operator_submits_runs_and_survives_429(backend, deployed: DatabricksTestServer) -> None:
    deployed.inject(429, times=2, path_prefix="/api/2.2/jobs/runs/submit")
    deployed.inject(503, times=1, path_prefix="/api/2.2/jobs/runs/get")
    op = backend.make_databricks_task("train_model", "echo.py", ["--work-dir", "x", "--max-depth", "80"])
    ti = _TI()
    op.execute({"ti": ti})
    [(path, body)] = deployed.bodies
    assert path == "/api/2.2/jobs/runs/submit"
    [task] = body["tasks"]
    assert task["spark_python_task"]["python_file"] == "/Workspace/Shared/jobs/v1/echo.py"
    params = task["spark_python_task"]["parameters"]
    assert params[0] == "--work-dir" and params[1].endswith("/work")  # the Databricks work dir, not the DAG's
    assert params[2:] == ["--max-depth", "80"]
    assert task["existing_cluster_id"] == "0101-test"
    [run] = deployed.runs()
    assert run.tasks[0].result_state == "SUCCESS"
    assert "ARGS --work-dir" in run.tasks[0].logs and "--max-depth 80" in run.tasks[0].logs
    assert ti.xcom["run_id"] == run.run_id  # the provider pushes the Databricks run id and page URL
    assert deployed.pending_faults() == 0


def test_failed_job_fails_the_task_with_databricks_error(backend, deployed: DatabricksTestServer) -> None:
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    op = backend.make_databricks_task("train_model", "echo.py", ["--explode"])
    with pytest.raises(AirflowException, match="RuntimeError: exploded on purpose") as exc:
        op.execute({"ti": _TI()})
    assert not isinstance(exc.value, AirflowFailException)  # Airflow may retry a crash
    bad = backend.make_databricks_task("preprocess_data", "echo.py", ["--bad-data"])
    with pytest.raises(AirflowFailException, match="column 'target' not found"):  # bad data: no retry
        bad.execute({"ti": _TI()})


def test_serverless_payload_is_accepted(backend, deployed: DatabricksTestServer, monkeypatch) -> None:
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_COMPUTE", "serverless")
    op = backend.make_databricks_task("train_model", "echo.py", [])
    op.execute({"ti": _TI()})
    [(_, body)] = deployed.bodies
    assert body["environments"][0]["environment_key"] == body["tasks"][0]["environment_key"] == "mlopsctl"
    assert "existing_cluster_id" not in body["tasks"][0] and "new_cluster" not in body["tasks"][0]


def test_missing_jobs_path_fails_without_retry(backend, deployed, monkeypatch) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    monkeypatch.delenv("MLOPSCTL_DATABRICKS_JOBS_PATH")
    with pytest.raises(AirflowFailException, match="deploy jobs"):
        backend.make_databricks_task("t", "echo.py", []).execute({"ti": _TI()})
    assert deployed.bodies == []
