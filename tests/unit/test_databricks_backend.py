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
JOBS = "/Workspace/Shared/jobs/v0.1.0-1a2b3c4d5e6f"  # a folder `deploy jobs` names after its content
WHEEL = f"{JOBS}/mlopsctl_jobs-0.1.0+1a2b3c4d5e6f-py3-none-any.whl"  # the wheel in it, at the folder's version


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(DAGS))
    for key in ("AIRFLOW_CONN_DATABRICKS_DEFAULT", "AIRFLOW_VAR_MLOPSCTL_DATABRICKS_JOBS_PATH"):
        monkeypatch.delenv(key, raising=False)
    from common import databricks_backend

    return databricks_backend


def test_compute_kinds(backend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_NODE_TYPE_ID", "Standard_DS3_v2")
    libraries = [{"whl": WHEEL}, {"pypi": {"package": "mlflow==3.17.2"}}]
    assert backend.compute_spec(JOBS) == {"new_cluster": {
        "spark_version": "17.3.x-cpu-ml-scala2.13", "node_type_id": "Standard_DS3_v2",
        "data_security_mode": "SINGLE_USER", "num_workers": 1}, "libraries": libraries}
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
    assert libraries[0] == {"whl": "/Volumes/main/mlops/jobs/v0.1.0-abc/mlopsctl_jobs-0.1.0+abc-py3-none-any.whl"}
    packages = [lib["pypi"]["package"] for lib in libraries[1:]]
    # one exact MLflow, the serverless one (not a range that upgrades a shared cluster to whatever is newest);
    # pandas, pyarrow, pyspark, sklearn: the ML runtime's, matched to its Spark
    assert packages == [backend.MLFLOW_PIN] and backend.MLFLOW_PIN in backend.SERVERLESS_PINS


def test_serverless_environment_uses_environment_version_not_the_deprecated_client(backend, monkeypatch) -> None:
    from databricks.sdk.service.jobs import JobEnvironment

    monkeypatch.setenv("MLOPSCTL_DATABRICKS_COMPUTE", "serverless")
    spec = backend.compute_spec(JOBS)
    assert spec["environment_key"] == "mlopsctl"
    assert spec["environments"] == [{"environment_key": "mlopsctl", "spec": {
        "environment_version": "4", "dependencies": [WHEEL, *backend.SERVERLESS_PINS]}}]
    assert "libraries" not in spec and "performance_target" not in spec  # unset: the workspace's default
    env = JobEnvironment.from_dict(spec["environments"][0])
    assert env.spec.environment_version == "4" and env.spec.client is None
    assert env.as_dict() == spec["environments"][0]
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_ENVIRONMENT_VERSION", "5")
    assert backend.compute_spec(JOBS)["environments"][0]["spec"]["environment_version"] == "5"


@pytest.mark.parametrize(("version", "client"), [("1", "Databricks Connect 14.3 (Spark 3.5 client)"),
                                                  ("2", "Databricks Connect 15.4 (Spark 3.5 client)"),
                                                  ("3", "Databricks Connect 16.4 (Spark 3.5 client)")])
def test_serverless_environments_with_a_spark_3_client_are_refused(backend, monkeypatch, version, client) -> None:
    """The jobs are pyspark 4 code: on versions 1-3 a missing features table would be an AttributeError (no
    PySparkException.getCondition), retried, instead of a bad-data failure."""
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_COMPUTE", "serverless")
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_ENVIRONMENT_VERSION", version)
    with pytest.raises(backend.DatabricksConfigError) as exc:
        backend.compute_spec(JOBS)
    message = str(exc.value)
    assert f"MLOPSCTL_DATABRICKS_ENVIRONMENT_VERSION={version}" in message and client in message
    assert "4 or 5" in message and "\n" not in message
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_ENVIRONMENT_VERSION", "client.2")  # a name the table does not know
    with pytest.raises(backend.DatabricksConfigError, match="'client.2'.*4 or 5"):
        backend.compute_spec(JOBS)


def test_performance_target_is_the_sdks_enum_and_only_serverless_sends_it(backend, monkeypatch) -> None:
    from databricks.sdk.service.jobs import PerformanceTarget

    from tests.fixtures.databricks.payload import check_round_trip

    monkeypatch.setenv("MLOPSCTL_DATABRICKS_COMPUTE", "serverless")
    for target in PerformanceTarget:
        monkeypatch.setenv("MLOPSCTL_DATABRICKS_PERFORMANCE_TARGET", target.value.lower())
        spec = backend.compute_spec(JOBS)
        assert spec["performance_target"] == target.value
        check_round_trip({"performance_target": spec["performance_target"]}, [])  # a runs/submit field
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_PERFORMANCE_TARGET", "COST_OPTIMIZED")  # the API would drop it silently
    with pytest.raises(backend.DatabricksConfigError) as exc:
        backend.compute_spec(JOBS)
    assert "MLOPSCTL_DATABRICKS_PERFORMANCE_TARGET='COST_OPTIMIZED'" in str(exc.value)
    assert all(t.value in str(exc.value) for t in PerformanceTarget)
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_PERFORMANCE_TARGET", "STANDARD")
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_COMPUTE", "existing")  # classic compute: not a field of its runs
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_CLUSTER_ID", "0101-abc")
    assert "performance_target" not in backend.compute_spec(JOBS)


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
    # dedicated access under its legacy name, the one the Clusters API takes without `kind`
    assert DataSecurityMode(cluster["data_security_mode"]) == DataSecurityMode.SINGLE_USER and "kind" not in cluster


@pytest.mark.parametrize("extra", [None, '{"is_single_node": true}', '{"use_ml_runtime": true}'])
def test_kind_only_cluster_fields_are_refused_without_classic_preview(backend, monkeypatch, extra) -> None:
    """The DATA_SECURITY_MODE_* names, is_single_node and use_ml_runtime need kind CLASSIC_PREVIEW (databricks-sdk
    ClusterSpec); the task refuses such a cluster before a workspace would."""
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_NODE_TYPE_ID", "i3.xlarge")
    if extra:
        monkeypatch.setenv("MLOPSCTL_DATABRICKS_CLUSTER_JSON", extra)
    else:
        monkeypatch.setenv("MLOPSCTL_DATABRICKS_DATA_SECURITY_MODE", "DATA_SECURITY_MODE_DEDICATED")
    with pytest.raises(backend.DatabricksConfigError) as exc:
        backend.compute_spec(JOBS, "train_model.py")
    assert "CLASSIC_PREVIEW" in str(exc.value) and "MLOPSCTL_DATABRICKS_CLUSTER_JSON" in str(exc.value)
    with_kind = json.loads(extra or "{}") | {"kind": "CLASSIC_PREVIEW"}
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_CLUSTER_JSON", json.dumps(with_kind))
    assert backend.compute_spec(JOBS, "train_model.py")["new_cluster"]["kind"] == "CLASSIC_PREVIEW"


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
    out = backend.databricks_parameters(argv, "/Workspace/x/v0.1.0-1a2b3c4d5e6f")
    assert out == ["--dag-id", "build_model", "--work-dir", "/Volumes/c/s/v/work", "--tracking-uri", "databricks",
                   "--registry-uri", "databricks-uc", "--experiment-prefix", "/Shared/mlopsctl", "--max-depth", "80",
                   "--register-model", "main.mlops.mlopsctl-random-forest", "--data", "",
                   "--jobs-version", "0.1.0+1a2b3c4d5e6f"]
    assert backend.model_name("cat.sch.model") == "cat.sch.model"
    assert backend.model_name("") == ""  # empty = do not register
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_TRACKING_URI", "http://127.0.0.1:5001")
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_REGISTRY_URI", "")
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_EXPERIMENT_PREFIX", "/tests")
    out = backend.databricks_parameters(argv, JOBS)
    assert out[5] == "http://127.0.0.1:5001" and out[7] == "" and out[9] == "/tests"


def test_the_wheel_and_the_version_a_task_expects_follow_the_jobs_folder(backend, monkeypatch) -> None:
    """Each deploy folder holds its own wheel version (finding 3: a constant name let a cluster keep the first
    wheel it installed), and each task tells its job which version it must find installed."""
    for folder, version in (("v0.1.0-1a2b3c4d5e6f", "0.1.0+1a2b3c4d5e6f"), ("v2.0.1rc1-abc.7", "2.0.1rc1+abc.7")):
        jobs = f"/Volumes/main/mlops/jobs/{folder}"
        assert backend.jobs_version(jobs) == version
        assert backend.jobs_wheel_path(jobs) == f"{jobs}/mlopsctl_jobs-{version}-py3-none-any.whl"
        assert backend.databricks_parameters(["--dag-id", "d"], jobs)[-2:] == ["--jobs-version", version]
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_COMPUTE", "serverless")
    for jobs in ("/Volumes/main/mlops/jobs/v1", "/Workspace/Shared/jobs/latest", "/Workspace/Shared/jobs/v0.1.0-A_B"):
        with pytest.raises(backend.DatabricksConfigError, match="deploy jobs") as exc:
            backend.compute_spec(jobs)
        assert "not a folder `mlopsctl deploy jobs` made" in str(exc.value)


def test_the_backend_names_the_wheel_deploy_jobs_uploads(backend) -> None:
    """The backend's copy of the folder -> wheel version rule is mlopsctl/jobs_wheel.py's."""
    from mlopsctl import jobs_wheel

    assert backend.JOBS_FOLDER.pattern == jobs_wheel.FOLDER.pattern
    folder = JOBS.rsplit("/", 1)[1]
    assert backend.jobs_wheel_path(JOBS) == f"{JOBS}/{jobs_wheel.wheel_file_name(jobs_wheel.wheel_version(folder))}"


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

    built = jobs_wheel.build(DAGS.parent / "spark_jobs", tmp_path_factory.mktemp("wheel"), __version__)
    return jobs_wheel.with_version(built, "0.1.0+1a2b3c4d5e6f", built.parent / "versioned").read_bytes()


@pytest.fixture
def deployed(backend, databricks_server: DatabricksTestServer, monkeypatch, tmp_path,  # noqa: F811
             jobs_wheel_bytes: bytes) -> DatabricksTestServer:
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.service.workspace import ImportFormat

    w = WorkspaceClient(host=databricks_server.url, token=databricks_server.token)
    folder = JOBS.removeprefix("/Workspace")
    w.workspace.mkdirs(folder)
    w.workspace.upload(f"{folder}/echo.py", io.BytesIO(JOB), format=ImportFormat.AUTO, overwrite=True)
    w.workspace.upload(WHEEL.removeprefix("/Workspace"), io.BytesIO(jobs_wheel_bytes),
                       format=ImportFormat.AUTO, overwrite=True)
    monkeypatch.setenv("AIRFLOW_CONN_DATABRICKS_DEFAULT", json.dumps({
        "conn_type": "databricks", "host": "127.0.0.1", "port": databricks_server.port, "schema": "http",
        "password": databricks_server.token}))
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_JOBS_PATH", JOBS)
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
    assert task["spark_python_task"]["python_file"] == f"{JOBS}/echo.py"
    params = task["spark_python_task"]["parameters"]
    assert params[0] == "--work-dir" and params[1].endswith("/work")  # the Databricks work dir, not the DAG's
    assert params[2:] == ["--max-depth", "80", "--jobs-version", "0.1.0+1a2b3c4d5e6f"]  # what the job must find
    assert task["existing_cluster_id"] == "0101-test"
    assert task["libraries"] == [{"whl": WHEEL}, {"pypi": {"package": "mlflow==3.17.2"}}]
    assert "environments" not in body and "performance_target" not in body
    assert body["idempotency_token"] == backend.idempotency_token("build_model", ti.run_id, "train_model", 1)
    assert "build_model" in body["run_name"] and "train_model" in body["run_name"] and ti.run_id in body["run_name"]
    assert int(body["timeout_seconds"]) == 3 * 3600  # the task's execution_timeout (the provider sends a string)
    [run] = deployed.runs()
    assert run.tasks[0].result_state == "SUCCESS"
    assert "ARGS --work-dir" in run.tasks[0].logs and "--max-depth 80" in run.tasks[0].logs
    # the existing cluster keeps what the task installed (the stand-in's Libraries API)
    statuses = deployed.cluster_libraries.statuses("0101-test")
    assert [(st["library"], st["status"]) for st in statuses] == [(lib, "INSTALLED") for lib in task["libraries"]]
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
    ({"MLOPSCTL_DATABRICKS_COMPUTE": "serverless", "MLOPSCTL_DATABRICKS_ENVIRONMENT_VERSION": "2"},
     "MLOPSCTL_DATABRICKS_ENVIRONMENT_VERSION"),
    ({"MLOPSCTL_DATABRICKS_COMPUTE": "serverless", "MLOPSCTL_DATABRICKS_PERFORMANCE_TARGET": "fast"},
     "MLOPSCTL_DATABRICKS_PERFORMANCE_TARGET"),
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
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_PERFORMANCE_TARGET", "STANDARD")
    op = backend.make_databricks_task("train_model", "echo.py", [])
    op.execute({"ti": _TI()})
    [(_, body)] = deployed.bodies
    assert body["environments"][0]["environment_key"] == body["tasks"][0]["environment_key"] == "mlopsctl"
    assert "client" not in body["environments"][0]["spec"]
    assert body["performance_target"] == "STANDARD" and "performance_target" not in body["tasks"][0]
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


def test_every_setting_the_backend_reads_is_in_the_settings_table_of_the_docs() -> None:
    source = (DAGS / "common" / "databricks_backend.py").read_text()
    read = set(re.findall(r'"(MLOPSCTL_DATABRICKS_[A-Z_]+)"', source))
    table = (DAGS.parent / "docs" / "databricks.md").read_text().split("## Settings", 1)[1].split("\n## ", 1)[0]
    assert "MLOPSCTL_DATABRICKS_PERFORMANCE_TARGET" in read
    assert not [name for name in sorted(read) if f"| `{name}` |" not in table]


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
