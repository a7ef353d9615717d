"""dags/common/databricks_backend.py: settings -> runs/submit payload, and the real provider operator
against the Databricks test server (submit -> spark-submit -> runs/get -> get-output)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.databricks_server import (
    TEST_CLUSTER_ID,
    TEST_CLUSTERS,
    DatabricksTestServer,
    databricks_server,  # noqa: F401 - fixture
)

DAGS = Path(__file__).resolve().parents[2] / "dags"
JOBS = "/Workspace/Shared/jobs/v1"
WHEEL = f"{JOBS}/mlopsctl_jobs-0.1.0-py3-none-any.whl"


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(DAGS))
    for key in ("AIRFLOW_CONN_DATABRICKS_DEFAULT", "AIRFLOW_VAR_MLOPSCTL_DATABRICKS_JOBS_PATH"):
        monkeypatch.delenv(key, raising=False)
    from common import databricks_backend

    return databricks_backend


def test_compute_kinds(backend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_NODE_TYPE_ID", "Standard_DS3_v2")
    libraries = [{"whl": WHEEL}, {"pypi": {"package": "mlflow>=3.1,<4"}}]
    assert backend.compute_spec(JOBS) == {"new_cluster": {
        "spark_version": "17.3.x-cpu-ml-scala2.13", "node_type_id": "Standard_DS3_v2",
        "data_security_mode": "DATA_SECURITY_MODE_DEDICATED", "num_workers": 1}, "libraries": libraries}
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_NUM_WORKERS", "4")
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_DATA_SECURITY_MODE", "single_user")
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_CLUSTER_JSON", '{"autotermination_minutes": 10}')
    cluster = backend.compute_spec(JOBS)["new_cluster"]
    assert cluster["num_workers"] == 4 and cluster["data_security_mode"] == "SINGLE_USER"
    assert cluster["autotermination_minutes"] == 10
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_DATA_SECURITY_MODE", "NONE")  # no Unity Catalog, no ML runtime
    with pytest.raises(backend.DatabricksConfigError, match="DATA_SECURITY_MODE"):
        backend.compute_spec(JOBS)
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_COMPUTE", "existing")
    with pytest.raises(backend.DatabricksConfigError, match="CLUSTER_ID"):
        backend.compute_spec(JOBS)
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_CLUSTER_ID", "0101-abc")
    assert backend.compute_spec(JOBS) == {"existing_cluster_id": "0101-abc", "libraries": libraries}
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_COMPUTE", "gpu")
    with pytest.raises(backend.DatabricksConfigError, match="jobs, existing or serverless"):
        backend.compute_spec(JOBS)


def test_the_airflow_variable_switches_compute_without_redeploying(backend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_COMPUTE", "jobs")
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_CLUSTER_ID", "0101-from-env")
    monkeypatch.setenv("AIRFLOW_VAR_MLOPSCTL_DATABRICKS_COMPUTE", "existing")  # Variable.get's env backend
    monkeypatch.setenv("AIRFLOW_VAR_MLOPSCTL_DATABRICKS_CLUSTER_ID", "0101-from-variable")
    assert backend.compute_spec(JOBS)["existing_cluster_id"] == "0101-from-variable"
    monkeypatch.setenv("AIRFLOW_VAR_MLOPSCTL_DATABRICKS_COMPUTE", "serverless")
    assert backend.compute_spec(JOBS)["environment_key"] == backend.ENVIRONMENT_KEY
    monkeypatch.delenv("AIRFLOW_VAR_MLOPSCTL_DATABRICKS_COMPUTE")  # without the Variable, the environment applies
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_NODE_TYPE_ID", "i3.xlarge")
    assert backend.compute_spec(JOBS)["new_cluster"]["node_type_id"] == "i3.xlarge"


@pytest.mark.parametrize("kind", ["jobs", "existing"])
def test_classic_compute_installs_the_wheel_and_mlflow_3_and_leaves_the_runtimes_libraries(
        backend, monkeypatch, kind: str) -> None:
    from databricks.sdk.service.compute import Library

    monkeypatch.setenv("MLOPSCTL_DATABRICKS_COMPUTE", kind)
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_NODE_TYPE_ID", "i3.xlarge")
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_CLUSTER_ID", "0101-abc")
    libraries = backend.compute_spec("/Volumes/main/mlops/jobs/v0.1.0-abc", "train_model.py")["libraries"]
    assert [Library.from_dict(lib).as_dict() for lib in libraries] == libraries  # the SDK's own shape
    assert libraries[0] == {"whl": "/Volumes/main/mlops/jobs/v0.1.0-abc/mlopsctl_jobs-0.1.0-py3-none-any.whl"}
    packages = [lib["pypi"]["package"] for lib in libraries[1:]]
    assert packages == ["mlflow>=3.1,<4"]  # pandas, pyarrow, pyspark, sklearn: the ML runtime's, matched to Spark


def test_serverless_environment_uses_environment_version_not_the_deprecated_client(backend, monkeypatch) -> None:
    from databricks.sdk.service.jobs import JobEnvironment

    monkeypatch.setenv("MLOPSCTL_DATABRICKS_COMPUTE", "serverless")
    spec = backend.compute_spec(JOBS)
    assert spec["environment_key"] == "mlopsctl"
    assert spec["environments"] == [{"environment_key": "mlopsctl", "spec": {
        "environment_version": "2", "dependencies": [WHEEL, *backend.SERVERLESS_PINS]}}]
    assert "libraries" not in spec  # serverless refuses task libraries
    env = JobEnvironment.from_dict(spec["environments"][0])
    assert env.spec.environment_version == "2" and env.spec.client is None
    assert env.as_dict() == spec["environments"][0]
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_ENVIRONMENT_VERSION", "4")
    assert backend.compute_spec(JOBS)["environments"][0]["spec"]["environment_version"] == "4"


def test_serverless_installs_the_wheel_then_what_the_jobs_import_pinned_then_the_extras(backend, monkeypatch) -> None:
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_COMPUTE", "serverless")
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_PIP", "xgboost==2.1.0, ,lightgbm")
    deps = backend.compute_spec(JOBS)["environments"][0]["spec"]["dependencies"]
    assert deps[0] == WHEEL
    pinned = dict(d.split("==") for d in deps[1:4])
    assert set(pinned) == {"mlflow", "scikit-learn", "matplotlib"} and all(pinned.values())
    assert deps[4:] == ["xgboost==2.1.0", "lightgbm"]  # MLOPSCTL_DATABRICKS_PIP adds, never replaces


def test_new_cluster_without_a_node_type_is_refused_naming_the_setting(backend) -> None:
    with pytest.raises(backend.DatabricksConfigError) as exc:
        backend.compute_spec(JOBS, "train_model.py")
    message = str(exc.value)
    assert "MLOPSCTL_DATABRICKS_NODE_TYPE_ID" in message and "\n" not in message
    assert "i3.xlarge" in message and "Standard_DS3_v2" in message  # examples per cloud, no default


def test_new_cluster_runtime_ships_mlflow_3_and_reads_unity_catalog(backend, monkeypatch) -> None:
    from databricks.sdk.service.compute import DataSecurityMode

    monkeypatch.setenv("MLOPSCTL_DATABRICKS_NODE_TYPE_ID", "n2-standard-4")
    cluster = backend.compute_spec(JOBS, "train_model.py")["new_cluster"]
    major, minor = (int(x) for x in cluster["spark_version"].split(".")[:2])
    assert (major, minor) >= (17, 3) and "-ml-" in cluster["spark_version"]  # 17.3 LTS ML: MLflow 3.0
    assert DataSecurityMode(cluster["data_security_mode"]) in (
        DataSecurityMode.DATA_SECURITY_MODE_DEDICATED, DataSecurityMode.SINGLE_USER)


def test_grid_search_gets_a_single_node_cluster(backend, monkeypatch) -> None:
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_NODE_TYPE_ID", "i3.xlarge")
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_NUM_WORKERS", "4")
    single = backend.compute_spec(JOBS, "grid_search.py")["new_cluster"]
    assert single["num_workers"] == 0
    assert single["spark_conf"]["spark.databricks.cluster.profile"] == "singleNode"
    assert single["spark_conf"]["spark.master"].startswith("local[*")
    assert single["custom_tags"] == {"ResourceClass": "SingleNode"}
    spark = backend.compute_spec(JOBS, "grid_search_spark.py")["new_cluster"]
    assert spark["num_workers"] == 4 and "spark_conf" not in spark
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_COMPUTE", "serverless")
    assert "new_cluster" not in backend.compute_spec(JOBS, "grid_search.py")


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
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_EXPERIMENT_PREFIX", "/tests")
    out = backend.databricks_parameters(argv, "/Workspace/x")
    assert out[5] == "http://127.0.0.1:5001" and out[7] == "" and out[9] == "/tests"


def test_the_local_stacks_experiment_prefix_does_not_override_the_databricks_default(backend, monkeypatch) -> None:
    monkeypatch.setenv("MLOPSCTL_MLFLOW_EXPERIMENT_PREFIX", "/mlopsctl")  # what the image sets for the local stack
    assert backend.experiment_prefix() == "/Shared/mlopsctl"
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_EXPERIMENT_PREFIX", "/Users/me@example.com/mlops/")
    assert backend.experiment_prefix() == "/Users/me@example.com/mlops"


@pytest.mark.parametrize("prefix", ["/mlopsctl", "/Sharedx/m", "/Repos/me/m", "Shared/m"])
def test_workspace_experiments_must_live_under_shared_or_users(backend, monkeypatch, prefix: str) -> None:
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_EXPERIMENT_PREFIX", prefix)
    with pytest.raises(backend.DatabricksConfigError, match="MLOPSCTL_DATABRICKS_EXPERIMENT_PREFIX.*/Shared/"):
        backend.experiment_prefix()
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_TRACKING_URI", "databricks://prod")
    with pytest.raises(backend.DatabricksConfigError):
        backend.experiment_prefix()
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_TRACKING_URI", "http://127.0.0.1:5000")  # not workspace paths
    assert backend.experiment_prefix() == prefix.rstrip("/")


def test_the_image_puts_experiments_where_a_workspace_user_can_create_them() -> None:
    """Every experiment prefix the Dockerfile sets resolves to a folder under /Shared/ or /Users/."""
    text = (DAGS.parent / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, re.MULTILINE))
    env = dict(re.findall(r"\b(MLOPSCTL_\w*EXPERIMENT_PREFIX)=(\S+)", text))
    assert env.get("MLOPSCTL_DATABRICKS_EXPERIMENT_PREFIX")
    for name, value in env.items():
        value = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), value.rstrip("\\").strip())
        assert value.startswith(("/Shared/", "/Users/")), f"{name}={value}"


def test_unity_catalog_needs_three_part_model_names(backend, monkeypatch) -> None:
    with pytest.raises(backend.DatabricksConfigError) as exc:
        backend.model_name("mlopsctl-random-forest")
    assert "MLOPSCTL_DATABRICKS_UC_SCHEMA" in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(backend.DatabricksConfigError, match="UC_SCHEMA"):
        backend.model_name("mlops.model")
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_UC_SCHEMA", "main")  # one part is not catalog.schema
    with pytest.raises(backend.DatabricksConfigError, match="UC_SCHEMA"):
        backend.model_name("model")
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_UC_SCHEMA", "main.mlops")
    assert backend.model_name("model") == "main.mlops.model"
    assert backend.model_name("model", "") == "main.mlops.model"
    monkeypatch.delenv("MLOPSCTL_DATABRICKS_UC_SCHEMA")
    assert backend.model_name("model", "") == "model"  # the tracking server's registry takes any name


def test_idempotency_token_is_per_try_and_within_the_api_limit(backend) -> None:
    token = backend.idempotency_token("build_model", "manual__2026-11-30T10:00:00+00:00", "train_model", 1)
    assert len(token) <= 64
    assert token == backend.idempotency_token("build_model", "manual__2026-11-30T10:00:00+00:00", "train_model", 1)
    others = {backend.idempotency_token("build_model", "manual__2026-11-30T10:00:00+00:00", "train_model", 2),
              backend.idempotency_token("build_model", "manual__2026-11-30T10:00:00+00:00", "preprocess_data", 1),
              backend.idempotency_token("build_model", "manual__other", "train_model", 1),
              backend.idempotency_token("grid_search", "manual__2026-11-30T10:00:00+00:00", "train_model", 1)}
    assert token not in others and len(others) == 4


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
    _runs = iter(range(1, 10_000))

    def __init__(self, dag_id: str = "build_model", try_number: int = 1, run_id: str | None = None) -> None:
        self.stats_tags: dict[str, str] = {}  # read by the provider's resumable-job mixin
        self.xcom: dict[str, Any] = {}
        self.dag_id, self.try_number = dag_id, try_number
        self.run_id = run_id or f"manual__test-{next(self._runs)}"

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


@pytest.fixture(scope="module")
def jobs_wheel_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The real jobs' wheel of spark_jobs/, as `deploy jobs` uploads it beside the scripts."""
    from mlopsctl import __version__, jobs_wheel

    return jobs_wheel.build(DAGS.parent / "spark_jobs", tmp_path_factory.mktemp("wheel"), __version__).read_bytes()


@pytest.fixture
def deployed(backend, databricks_server: DatabricksTestServer, monkeypatch, tmp_path,  # noqa: F811
             jobs_wheel_bytes: bytes) -> DatabricksTestServer:
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.service.workspace import ImportFormat

    w = WorkspaceClient(host=databricks_server.url, token=databricks_server.token)
    w.workspace.mkdirs("/Shared/jobs/v1")
    w.workspace.upload("/Shared/jobs/v1/echo.py", io.BytesIO(JOB), format=ImportFormat.AUTO, overwrite=True)
    w.workspace.upload(f"/Shared/jobs/v1/{backend.JOBS_WHEEL}", io.BytesIO(jobs_wheel_bytes),
                       format=ImportFormat.AUTO, overwrite=True)
    monkeypatch.setenv("AIRFLOW_CONN_DATABRICKS_DEFAULT", json.dumps({
        "conn_type": "databricks", "host": "127.0.0.1", "port": databricks_server.port, "schema": "http",
        "password": databricks_server.token}))
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_JOBS_PATH", "/Workspace/Shared/jobs/v1")
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_POLL_SECONDS", "1")
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_COMPUTE", "existing")
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_CLUSTER_ID", "0101-test")
    databricks_server.clusters["0101-test"] = TEST_CLUSTERS[TEST_CLUSTER_ID]  # the workspace's cluster
    return databricks_server


def test_operator_submits_runs_and_survives_429(backend, deployed: DatabricksTestServer) -> None:
    deployed.inject(429, times=2, path_prefix="/api/2.2/jobs/runs/submit")
    # a 4xx that is retried all the same (the provider's hook knows it; the backend keeps it retryable)
    deployed.inject(400, times=1, path_prefix="/api/2.2/jobs/runs/submit", error_code="COULD_NOT_ACQUIRE_LOCK")
    deployed.inject(503, times=1, path_prefix="/api/2.2/jobs/runs/get")
    from datetime import timedelta

    op = backend.make_databricks_task("train_model", "echo.py", ["--work-dir", "x", "--max-depth", "80"],
                                      execution_timeout=timedelta(hours=3))
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
    assert task["libraries"] == [{"whl": "/Workspace/Shared/jobs/v1/mlopsctl_jobs-0.1.0-py3-none-any.whl"},
                                 {"pypi": {"package": "mlflow>=3.1,<4"}}]
    assert "environments" not in body
    assert body["idempotency_token"] == backend.idempotency_token("build_model", ti.run_id, "train_model", 1)
    assert "build_model" in body["run_name"] and "train_model" in body["run_name"] and ti.run_id in body["run_name"]
    assert int(body["timeout_seconds"]) == 3 * 3600  # the task's execution_timeout (the provider sends a string)
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
    [_, bad_run] = deployed.runs()
    assert "target" not in (bad_run.tasks[0].error or "")  # found in the task's logs, not in `error`


def test_a_resubmit_within_one_try_finds_the_same_run(backend, deployed: DatabricksTestServer) -> None:
    ti = _TI()
    backend.make_databricks_task("train_model", "echo.py", []).execute({"ti": ti})
    backend.make_databricks_task("train_model", "echo.py", []).execute({"ti": ti})  # the same try again
    assert len(deployed.bodies) == 2 and len(deployed.runs()) == 1
    retry = _TI(run_id=ti.run_id, try_number=2)  # Airflow's next try: a fresh Databricks run
    backend.make_databricks_task("train_model", "echo.py", []).execute({"ti": retry})
    assert len(deployed.runs()) == 2


@pytest.mark.parametrize(("env", "setting"), [
    ({"MLOPSCTL_DATABRICKS_COMPUTE": "jobs"}, "MLOPSCTL_DATABRICKS_NODE_TYPE_ID"),
    ({"MLOPSCTL_DATABRICKS_TRACKING_URI": "databricks", "MLOPSCTL_DATABRICKS_EXPERIMENT_PREFIX": "/mlopsctl"},
     "MLOPSCTL_DATABRICKS_EXPERIMENT_PREFIX"),
    ({"MLOPSCTL_DATABRICKS_REGISTRY_URI": "databricks-uc"}, "MLOPSCTL_DATABRICKS_UC_SCHEMA"),
])
def test_refusals_fail_the_task_before_submitting(backend, deployed, monkeypatch, env, setting) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    op = backend.make_databricks_task("train_model", "echo.py", ["--register-model", "mlopsctl-random-forest"])
    with pytest.raises(AirflowFailException, match=setting):  # no retry: nothing a retry could change
        op.execute({"ti": _TI()})
    assert deployed.bodies == []


def test_serverless_payload_is_accepted(backend, deployed: DatabricksTestServer, monkeypatch) -> None:
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_COMPUTE", "serverless")
    op = backend.make_databricks_task("train_model", "echo.py", [])
    op.execute({"ti": _TI()})
    [(_, body)] = deployed.bodies
    assert body["environments"][0]["environment_key"] == body["tasks"][0]["environment_key"] == "mlopsctl"
    assert "client" not in body["environments"][0]["spec"]
    assert body["environments"][0]["spec"]["dependencies"][0] == WHEEL
    assert not {"existing_cluster_id", "new_cluster", "libraries"} & set(body["tasks"][0])


def test_new_cluster_payload_is_accepted(backend, deployed: DatabricksTestServer, monkeypatch) -> None:
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_COMPUTE", "jobs")
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_NODE_TYPE_ID", "i3.xlarge")
    backend.make_databricks_task("train_model", "echo.py", []).execute({"ti": _TI()})
    [(_, body)] = deployed.bodies
    [task] = body["tasks"]
    assert task["new_cluster"]["spark_version"] == "17.3.x-cpu-ml-scala2.13"
    assert task["libraries"][0] == {"whl": WHEEL} and "environments" not in body
    assert deployed.runs()[0].tasks[0].result_state == "SUCCESS"


def test_missing_jobs_path_fails_without_retry(backend, deployed, monkeypatch) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    monkeypatch.delenv("MLOPSCTL_DATABRICKS_JOBS_PATH")
    with pytest.raises(AirflowFailException, match="deploy jobs"):
        backend.make_databricks_task("t", "echo.py", []).execute({"ti": _TI()})
    assert deployed.bodies == []


# --- failures that are what they look like: refused requests, and the deferrable path -------------------
def _api_error(status: int, body: object):
    """What the provider's hook raises for a non-retried HTTP error: DatabricksApiError from requests' HTTPError."""
    import requests
    from airflow.providers.databricks.exceptions import DatabricksApiError

    response = requests.Response()
    response.status_code = status
    response._content = json.dumps(body).encode() if not isinstance(body, bytes) else body
    try:
        try:
            response.raise_for_status()
        except requests.HTTPError as http:
            raise DatabricksApiError(f"Response: {response.text}, Status Code: {status}",
                                     http_status_code=status) from http
    except DatabricksApiError as exc:
        return exc


def test_a_4xx_is_a_refusal_with_databricks_words_but_throttling_and_locks_are_not(backend) -> None:
    refused = backend.databricks_refusal(_api_error(400, {"error_code": "INVALID_PARAMETER_VALUE",
                                                          "message": "Cluster 0101-x does not exist"}))
    assert refused == "400 INVALID_PARAMETER_VALUE: Cluster 0101-x does not exist"
    assert backend.databricks_refusal(_api_error(403, {"error_code": "PERMISSION_DENIED",
                                                       "message": "Invalid access token."})).startswith("403 ")
    assert "Status Code: 404" in backend.databricks_refusal(_api_error(404, b"<html>not json</html>"))
    assert backend.databricks_refusal(_api_error(429, {"error_code": "REQUEST_LIMIT_EXCEEDED"})) is None
    assert backend.databricks_refusal(_api_error(400, {"error_code": "COULD_NOT_ACQUIRE_LOCK", "message": "x"})) is None
    assert backend.databricks_refusal(_api_error(503, {"error_code": "TEMPORARILY_UNAVAILABLE"})) is None
    from airflow.sdk.exceptions import AirflowException

    assert backend.databricks_refusal(AirflowException("API requests to Databricks failed 6 times")) is None


def test_a_refused_payload_fails_the_task_without_retry_with_databricks_message(backend, deployed, monkeypatch) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    monkeypatch.setenv("MLOPSCTL_DATABRICKS_CLUSTER_ID", "0101-gone")  # a cluster the workspace does not have
    op = backend.make_databricks_task("train_model", "echo.py", [])
    with pytest.raises(AirflowFailException, match="refused the request: 400 INVALID_PARAMETER_VALUE: Cluster "
                                                   "0101-gone does not exist"):
        op.execute({"ti": _TI()})
    assert len(deployed.bodies) == 1 and deployed.runs() == []  # one submit, not the hook's retries


def _deferred_then_resumed(backend, script_args: list[str]) -> Any:
    """Run echo.py the way Airflow runs a deferrable task: `execute` submits and defers, the trigger polls
    the run to its end, and a fresh operator (a resumed task is rebuilt from the DAG) completes it."""
    import asyncio

    from airflow.sdk.exceptions import TaskDeferred

    ti = _TI()
    # deferrable=True: what `[operators] default_deferrable = True` makes the provider's default (read when the
    # provider is imported, so the test passes it)
    op = backend.make_databricks_task("preprocess_data", "echo.py", script_args, deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({"ti": ti})

    async def first_event() -> Any:
        async for event in deferred.value.trigger.run():
            return event.payload
        raise AssertionError("the trigger ended without an event")

    event = asyncio.run(first_event())
    resumed = backend.make_databricks_task("preprocess_data", "echo.py", script_args, deferrable=True)
    return getattr(resumed, deferred.value.method_name)({"ti": ti}, event)


def test_bad_data_fails_without_retry_when_the_operator_defers(backend, deployed) -> None:
    """Deferrable, the provider raises a failed run from `execute_complete`: bad data still fails the task for
    good, and a crash still carries the job's log tail (`test_failed_job_fails_the_task_with_databricks_error`
    is the same without deferral)."""
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    with pytest.raises(AirflowFailException, match="preprocess_data: mlopsctl-error: column 'target' not found"):
        _deferred_then_resumed(backend, ["--bad-data"])
    with pytest.raises(AirflowException, match="job output \\(last lines\\)") as crash:
        _deferred_then_resumed(backend, ["--explode"])
    assert not isinstance(crash.value, AirflowFailException) and "RuntimeError: exploded on purpose" in str(crash.value)
    assert [r.tasks[0].result_state for r in deployed.runs()] == ["FAILED", "FAILED"]
