"""End-to-end on the Databricks path: real Airflow 3 (MLOPSCTL_COMPUTE=databricks) + the real Databricks
provider operator -> the local Databricks test server -> spark-submit -> the real MLflow server.

The backend kind is read when the DAGs are parsed (dags/common/compute.py), and the session stack runs
with `local`, so this module starts its own stack (same devenv code as `mlopsctl dev start`) with
MLOPSCTL_COMPUTE=databricks and the MLOPSCTL_DATABRICKS_* runtime settings in its environment. The job
files reach the "workspace" through `mlopsctl deploy jobs --set-variable` (the Airflow Variable path).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mlopsctl.errors import ExitCode
from tests.fixtures.databricks_server import TEST_CLUSTERS, DatabricksTestServer
from tests.fixtures.stack import LocalStack, free_port, make_project, stack_settings, stop_and_check

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
CLI_TIMEOUT = 1200  # a bound so a hang fails the test instead of the CI job; asserts nothing about speed
JOBS_ROOT = "/Workspace/Shared/mlopsctl/jobs"


class DbxEnv:
    def __init__(self, stack: LocalStack, server: DatabricksTestServer) -> None:
        self.stack = stack
        self.server = server
        self.outputs: list[str] = []  # every captured CLI stdout/stderr, for the token grep

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPSCTL_", "DATABRICKS_"))}
        env.update(self.stack.env)
        env.update(NO_COLOR="1", COLUMNS="200", PYTHONPATH=str(REPO),
                   DATABRICKS_HOST=self.server.url, DATABRICKS_TOKEN=self.server.token)
        env.update(extra)
        return env

    def cli(self, *argv: str, **extra_env: str) -> subprocess.CompletedProcess:
        res = subprocess.run(
            [sys.executable, "-m", "mlopsctl", *argv], env=self.env(**extra_env), cwd=str(self.stack.project_dir),
            capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False,
        )
        self.outputs += [res.stdout, res.stderr]
        return res


@pytest.fixture(scope="module")
def dbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DbxEnv]:
    root = tmp_path_factory.mktemp("dbx-live")
    server = DatabricksTestServer(root / "databricks-server", clusters=TEST_CLUSTERS,
                                  hide=[tmp_path_factory.getbasetemp()]).start()
    project = make_project(root / "project")
    airflow_port = free_port({server.port})
    mlflow_port = free_port({server.port, airflow_port})
    settings = stack_settings(project, airflow_port, mlflow_port, compute="databricks")
    runtime = {  # what a Dockerfile would set on the Airflow components for a real workspace, test values
        "MLOPSCTL_COMPUTE": "databricks",
        "MLOPSCTL_DATABRICKS_COMPUTE": "existing",
        "MLOPSCTL_DATABRICKS_CLUSTER_ID": "0101-000000-test",
        "MLOPSCTL_DATABRICKS_WORK_DIR": str(root / "databricks-work"),
        "MLOPSCTL_DATABRICKS_TRACKING_URI": settings.local_mlflow_url,  # instead of `databricks`
        "MLOPSCTL_DATABRICKS_REGISTRY_URI": "",  # the tracking server's registry, instead of databricks-uc
        "MLOPSCTL_DATABRICKS_EXPERIMENT_PREFIX": "/mlopsctl",
        "MLOPSCTL_DATABRICKS_POLL_SECONDS": "2",
    }
    stack = LocalStack(settings)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in runtime.items():
            mp.setenv(key, value)
        try:
            stack.start()
        except BaseException:
            stop_and_check(stack)
            server.stop()
            raise
    try:
        yield DbxEnv(stack, server)
    finally:
        try:
            stop_and_check(stack)
        finally:
            server.stop()


def _airflow(dbx: DbxEnv):
    return dbx.stack.client()


def test_connect_creates_then_updates_the_airflow_connection(dbx: DbxEnv) -> None:
    first = dbx.cli("connect", "databricks", "--insecure", "--json")
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert doc["action"] == "created"
    assert doc["identity"]["user_name"] == dbx.server.user
    second = dbx.cli("connect", "databricks", "--insecure")
    assert second.returncode == 0, second.stderr
    assert "Updated Airflow connection databricks_default" in second.stderr
    client = _airflow(dbx)
    try:
        conn = client.get_connection("databricks_default")
    finally:
        client.close()
    assert conn.conn_type == "databricks"
    assert (conn.host, conn.schema_, conn.port) == ("127.0.0.1", "http", dbx.server.port)
    assert conn.password == "***" and not conn.login
    status = dbx.cli("connect", "status", "--json")
    assert status.returncode == 0, status.stderr
    [row] = json.loads(status.stdout)["connections"]
    assert row["check"].startswith("ok")


def test_deploy_jobs_uploads_and_sets_the_variable(dbx: DbxEnv) -> None:
    res = dbx.cli("deploy", "jobs", "--to", JOBS_ROOT, "--set-variable", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["path"].startswith(JOBS_ROOT + "/v") and doc["variable_set"]
    names = {p.rsplit("/", 1)[1] for p in doc["files"]}
    assert {"preprocess_data.py", "train_model.py"} <= names and "rf_core.py" not in names  # rf_core: in the wheel
    assert doc["wheel"] in doc["files"] and doc["wheel"].endswith("-py3-none-any.whl")
    for remote in doc["files"]:
        if remote != doc["wheel"]:
            local = REPO / "spark_jobs" / remote.removeprefix(doc["path"] + "/")
            assert dbx.server.workspace_path(remote).read_bytes() == local.read_bytes()
    client = _airflow(dbx)
    try:
        assert client.get_variable("MLOPSCTL_DATABRICKS_JOBS_PATH").value == doc["path"]
    finally:
        client.close()


def _mlflow_runs(dbx: DbxEnv, dag_run_id: str) -> list[dict]:
    base = f"{dbx.stack.mlflow_url}/api/2.0/mlflow"
    with httpx.Client(timeout=30) as http:
        exp = http.get(f"{base}/experiments/get-by-name", params={"experiment_name": "/mlopsctl/build_model"})
        exp.raise_for_status()
        body = http.post(f"{base}/runs/search", json={
            "experiment_ids": [exp.json()["experiment"]["experiment_id"]],
            "filter": f"tags.`airflow.dag_run_id` = '{dag_run_id}'"})
        body.raise_for_status()
        return body.json().get("runs", [])


def _run_id(doc: dict) -> str:
    for key in ("dag_run_id", "run_id"):
        if isinstance(doc.get(key), str):
            return doc[key]
    return doc["run"]["dag_run_id"]


def test_build_model_runs_on_databricks_and_survives_429s(dbx: DbxEnv) -> None:
    deployed = dbx.cli("deploy", "jobs", "--to", JOBS_ROOT, "--set-variable", "--json")  # idempotent
    assert deployed.returncode == 0, deployed.stderr
    jobs_path = json.loads(deployed.stdout)["path"]
    assert dbx.cli("connect", "databricks", "--insecure").returncode == 0
    submitted_before = len(dbx.server.bodies)
    dbx.server.inject(429, times=2, path_prefix="/api/2.2/jobs/runs/submit")
    dbx.server.inject(429, times=2, path_prefix="/api/2.2/jobs/runs/get")
    dbx.server.inject(503, times=1, path_prefix="/api/2.2/jobs/runs/get")

    res = dbx.cli("run", "build-model", "--max-depth", "80", "--n-estimators", "100", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert dbx.server.pending_faults() == 0
    bodies = dbx.server.bodies[submitted_before:]
    files = [b["tasks"][0]["spark_python_task"]["python_file"] for _, b in bodies]
    assert files == [f"{jobs_path}/preprocess_data.py", f"{jobs_path}/train_model.py"]
    train_params = bodies[1][1]["tasks"][0]["spark_python_task"]["parameters"]
    assert all(isinstance(p, str) for p in train_params)
    assert train_params[train_params.index("--max-depth") + 1] == "80"
    assert train_params[train_params.index("--n-estimators") + 1] == "100"
    assert bodies[1][1]["tasks"][0]["existing_cluster_id"] == "0101-000000-test"
    assert all(t.result_state == "SUCCESS" for r in dbx.server.runs()[-2:] for t in r.tasks)

    # What the CLI printed matches what MLflow holds for this Airflow run.
    [run] = _mlflow_runs(dbx, _run_id(doc))
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["max_depth"] == "80" and params["n_estimators"] == "100"
    assert 0 < metrics["rmse"] < 200 and -1 < metrics["r2"] <= 1
    printed = json.dumps(doc)
    assert f"{metrics['rmse']}"[:6] in printed


def test_failing_job_fails_the_task_with_the_databricks_error(dbx: DbxEnv, tmp_path: Path) -> None:
    assert dbx.cli("deploy", "jobs", "--to", JOBS_ROOT, "--set-variable").returncode == 0
    assert dbx.cli("connect", "databricks", "--insecure").returncode == 0
    bad = tmp_path / "no-target.csv"
    bad.write_text("a,b\n1,2\n3,4\n5,6\n")
    runs_before = len(dbx.server.runs())
    # A path on the CLI's machine: the DAG is tagged compute:databricks, so the CLI refuses it before triggering.
    refused = dbx.cli("run", "build-model", "--data", str(bad), "--max-depth", "5", "--n-estimators", "5")
    assert refused.returncode == ExitCode.USAGE, refused.stdout + refused.stderr
    assert "cannot see this machine's files" in refused.stderr and "databricks fs cp" in refused.stderr
    assert len(dbx.server.runs()) == runs_before
    # A URI (the test server's "cluster" shares this file system): passes the CLI; the job finds the column missing
    res = dbx.cli("run", "build-model", "--data", bad.as_uri(), "--max-depth", "5", "--n-estimators", "5")
    assert res.returncode == ExitCode.RUN_FAILED, res.stdout + res.stderr
    [failed] = dbx.server.runs()[runs_before:]  # bad data: the task failed without an Airflow retry
    task = failed.tasks[0]
    assert task.result_state == "FAILED" and task.task_key == "preprocess_data"
    assert "target column 'target' not found" in task.logs  # the job's own words are in its logs
    assert task.error and "target" not in task.error  # Databricks' error is unstructured
    shown = res.stdout + res.stderr
    assert "preprocess_data" in shown
    line = next(ln for ln in task.logs.splitlines() if "mlopsctl-error:" in ln)
    assert line.split("mlopsctl-error:")[-1].strip()[:40] in shown


def test_the_token_is_nowhere(dbx: DbxEnv) -> None:
    """Every captured CLI output, every log and every file of the project/state tree and of the server."""
    token = dbx.server.token.encode()
    assert dbx.outputs, "run the other tests of this module first (pytest keeps file order)"
    leaks = [i for i, text in enumerate(dbx.outputs) if dbx.server.token in text]
    assert not leaks, f"token in CLI output #{leaks}"
    roots = [dbx.stack.project_dir, dbx.stack.state_dir, dbx.server.root]
    scanned = 0
    for root in roots:
        for path in Path(root).rglob("*"):
            if path.is_file() and not path.is_symlink():
                scanned += 1
                assert token not in path.read_bytes(), f"token found in {path}"
    assert scanned > 10
    logs = list(Path(dbx.stack.state_dir).rglob("*.log"))
    assert logs, "expected Airflow task and component logs to scan"
