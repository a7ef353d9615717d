"""End-to-end on the Databricks path, with the settings a user sets for a real workspace.

Real Airflow 3 (MLOPSCTL_COMPUTE=databricks) + the real Databricks provider operator -> the local Databricks
stand-in (tests/fixtures/databricks/) -> each job in a venv of only what its compute lends and its payload
declares, in a mount namespace that sees only /Workspace and /Volumes: serverless and the standard-access
cluster as Spark Connect clients, the dedicated job cluster under classic Spark -> the workspace's MLflow
(tracking URI `databricks`, registry `databricks-uc`), which the stand-in serves with the workspace's rules
over a real MLflow server.

The backend kind is read when the DAGs are parsed (dags/common/compute.py), so this module starts its own
stack (same devenv code as `mlopsctl dev start`) with MLOPSCTL_COMPUTE=databricks and the runtime settings in
its environment. The job files and their wheel reach a UC volume through `mlopsctl deploy jobs
--set-variable`; the compute mode is switched per test with the Airflow Variable MLOPSCTL_DATABRICKS_COMPUTE.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from mlopsctl.errors import ExitCode
from tests.fixtures.databricks_server import STANDARD_CLUSTER_ID, TEST_CLUSTERS, DatabricksTestServer
from tests.fixtures.stack import LocalStack, free_port, make_project, stack_settings, stop_and_check

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CLI_TIMEOUT = 1200  # a bound so a hang fails the test instead of the CI job; asserts nothing about speed
JOBS_ROOT = "/Volumes/main/mlops/jobs"  # a UC volume: the work dir defaults to /Volumes/main/mlops/jobs/work
UC_SCHEMA = "main.mlops"
EXPERIMENTS = "/Shared/mlopsctl"  # the default MLOPSCTL_DATABRICKS_EXPERIMENT_PREFIX; `deploy jobs` creates it
MODEL = f"{UC_SCHEMA}.mlopsctl-random-forest"
#: compute mode -> (what its task payload carries, the engine its Spark jobs report)
MODES = {
    "serverless": ("environment_key", "spark-connect("),
    "jobs": ("new_cluster", "spark(local"),  # a dedicated-access ML job cluster: classic Spark
    "existing": ("existing_cluster_id", "spark-connect("),  # the standard-access cluster: Spark Connect only
}


class DbxEnv:
    def __init__(self, stack: LocalStack, server: DatabricksTestServer) -> None:
        self.stack = stack
        self.server = server
        self.outputs: list[str] = []  # every captured CLI stdout/stderr, for the token grep

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPSCTL_", "DATABRICKS_"))}
        env.update(self.stack.env)
        # the CLI reads the runs' metrics where the jobs logged them: the workspace's MLflow
        env.update(NO_COLOR="1", COLUMNS="200", PYTHONPATH=str(REPO), MLOPSCTL_MLFLOW_TRACKING_URI="databricks",
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

    def use_compute(self, mode: str) -> None:
        client = self.stack.client()
        try:
            client.set_variable("MLOPSCTL_DATABRICKS_COMPUTE", mode)
        finally:
            client.close()


@pytest.fixture(scope="module")
def dbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DbxEnv]:
    root = tmp_path_factory.mktemp("dbx-live")
    project = make_project(root / "project")
    airflow_port = free_port()
    mlflow_port = free_port({airflow_port})
    settings = stack_settings(project, airflow_port=airflow_port, mlflow_port=mlflow_port, compute="databricks")
    # the workspace's MLflow is the stand-in's, over the stack's real MLflow server
    server = DatabricksTestServer(root / "databricks-server", clusters=TEST_CLUSTERS,
                                  hide=[tmp_path_factory.getbasetemp()], mlflow_url=settings.local_mlflow_url,
                                  sandboxed=True, max_concurrent_runs=3)
    server.start(free_port({airflow_port, mlflow_port, settings.spark_connect_port}))
    runtime = {  # what the image sets on the Airflow components for a real workspace (tracking URI, registry
        # and experiment folder keep their defaults: databricks, databricks-uc, /Shared/mlopsctl)
        "MLOPSCTL_COMPUTE": "databricks",
        "MLOPSCTL_DATABRICKS_COMPUTE": "serverless",
        "MLOPSCTL_DATABRICKS_ENVIRONMENT_VERSION": "4",  # the default, set explicitly as a user pins it
        "MLOPSCTL_DATABRICKS_NODE_TYPE_ID": "i3.xlarge",
        "MLOPSCTL_DATABRICKS_CLUSTER_ID": STANDARD_CLUSTER_ID,
        "MLOPSCTL_DATABRICKS_UC_SCHEMA": UC_SCHEMA,
        "MLOPSCTL_DATABRICKS_POLL_SECONDS": "2",
    }
    stack = LocalStack(settings)
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("MLOPSCTL_DATABRICKS_")]:
            mp.delenv(key)
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
    names = {p.removeprefix(doc["path"] + "/") for p in doc["files"]}
    assert {"preprocess_data.py", "train_model.py"} <= names
    assert not [n for n in names if n.startswith("mlopsctl_jobs/")]  # the package: in the wheel
    assert doc["wheel"] in doc["files"] and doc["wheel"].endswith("-py3-none-any.whl")
    for remote in doc["files"]:
        if remote != doc["wheel"]:
            local = REPO / "spark_jobs" / remote.removeprefix(doc["path"] + "/")
            assert dbx.server.workspace_path(remote).read_bytes() == local.read_bytes()
    assert doc["experiment_folder"] == EXPERIMENTS and dbx.server.workspace_path(EXPERIMENTS).is_dir()
    client = _airflow(dbx)
    try:
        assert client.get_variable("MLOPSCTL_DATABRICKS_JOBS_PATH").value == doc["path"]
    finally:
        client.close()


def _mlflow(dbx: DbxEnv, path: str, **body: object) -> dict:
    """The real MLflow server behind the workspace's MLflow (what the jobs logged, bypassing the stand-in)."""
    with httpx.Client(timeout=30) as http:
        res = (http.post(f"{dbx.stack.mlflow_url}/api/2.0/mlflow/{path}", json=body) if body
               else http.get(f"{dbx.stack.mlflow_url}/api/2.0/mlflow/{path}"))
        res.raise_for_status()
        return res.json()


def _runs_of(dbx: DbxEnv, dag_id: str, dag_run_id: str) -> list[dict]:
    exp = _mlflow(dbx, f"experiments/get-by-name?experiment_name={EXPERIMENTS}/{dag_id}")["experiment"]
    found = _mlflow(dbx, "runs/search", experiment_ids=[exp["experiment_id"]],
                    filter=f"tags.`airflow.dag_run_id` = '{dag_run_id}'", max_results=100)
    return found.get("runs", [])


def _tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def _run_id(doc: dict) -> str:
    for key in ("dag_run_id", "run_id"):
        if isinstance(doc.get(key), str):
            return doc[key]
    return doc["run"]["dag_run_id"]


def _submitted_since(dbx: DbxEnv, before: int) -> list[dict]:
    return [body for path, body in dbx.server.bodies[before:] if path.endswith("/runs/submit")]


@pytest.mark.parametrize("mode", list(MODES))
def test_all_three_pipelines_run_on_each_compute(dbx: DbxEnv, mode: str) -> None:
    """build-model, grid-search and grid-search --spark, end to end, on serverless, a new job cluster and an
    existing standard-access cluster, with the workspace's MLflow and the Unity Catalog registry."""
    assert dbx.cli("deploy", "jobs", "--to", JOBS_ROOT, "--set-variable").returncode == 0  # idempotent
    assert dbx.cli("connect", "databricks", "--insecure").returncode == 0
    dbx.use_compute(mode)
    compute_field, engine = MODES[mode]
    registered = dbx.server.mlflow.models
    versions_before = len(registered[MODEL.lower()].versions) if MODEL.lower() in registered else 0
    runs_before, bodies_before = len(dbx.server.runs()), len(dbx.server.bodies)
    if mode == "serverless":  # the provider's retries: throttling, and a submit whose answer is lost
        dbx.server.inject(429, times=2, path_prefix="/api/2.2/jobs/runs/get")
        dbx.server.inject(503, times=1, path_prefix="/api/2.2/jobs/runs/submit", lost_response=True)

    # the three pipelines at once, as a team shares a workspace: each CLI follows its own run
    grid_argv = ("--max-depth", "3,6", "--n-estimators", "5,10", "--cv", "2", "--json")
    with ThreadPoolExecutor(max_workers=3) as pool:
        build, grid, spark_grid = pool.map(lambda argv: dbx.cli(*argv), [
            ("run", "build-model", "--max-depth", "8", "--n-estimators", "20", "--json"),
            ("grid-search", *grid_argv),
            ("grid-search", "--spark", *grid_argv),
        ])
    for res in (build, grid, spark_grid):
        assert res.returncode == 0, res.args[3:] + [res.stdout + res.stderr]
    assert dbx.server.pending_faults() == 0

    # Six tasks, one Databricks run each (the lost submit answer found its run again by idempotency token).
    bodies = _submitted_since(dbx, bodies_before)
    runs = dbx.server.runs()[runs_before:]
    assert len(runs) == 6, [r.run_name for r in runs]
    assert len({b["idempotency_token"] for b in bodies}) == 6
    assert all(t.result_state == "SUCCESS" for r in runs for t in r.tasks), [t.logs[-2000:] for r in runs
                                                                            for t in r.tasks]
    for body in bodies:
        [task] = body["tasks"]
        assert task.get(compute_field), (mode, task)
    if mode == "serverless":
        deps = bodies[0]["environments"][0]["spec"]["dependencies"]
        assert deps[0].startswith(JOBS_ROOT) and deps[0].endswith(".whl")
        assert not bodies[0]["tasks"][0].get("libraries")
        # environment version 4: every job ran as a client of its Spark line (pyspark-client 4.0.x)
        assert {b["environments"][0]["spec"]["environment_version"] for b in bodies} == {"4"}
        clients = [[d.name for d in t.venv.glob("lib/python3*/site-packages/pyspark_client-*.dist-info")]
                   for r in runs for t in r.tasks if t.venv]
        assert len(clients) == 6 and all(len(c) == 1 and c[0].startswith("pyspark_client-4.0.") for c in clients)
    else:
        assert all(b["tasks"][0]["libraries"][0]["whl"].endswith(".whl") for b in bodies)
    if mode == "jobs":
        sizes = {b["tasks"][0]["spark_python_task"]["python_file"].rsplit("/", 1)[1]: b["tasks"][0]["new_cluster"]
                 for b in bodies}
        # dedicated access under the name the Clusters API takes without `kind`
        assert {(c["data_security_mode"], c.get("kind")) for c in sizes.values()} == {("SINGLE_USER", None)}
        # (the provider sends numbers as strings)
        assert int(sizes["grid_search.py"]["num_workers"]) == 0 and int(sizes["grid_search_spark.py"]["num_workers"]) >= 1
    spark_logs = [t.logs for r in runs for t in r.tasks if "spark:" in t.logs]
    assert spark_logs and all(f"spark: {engine}" in logs for logs in spark_logs), spark_logs[0][-1500:]

    # MLflow: the workspace experiments under /Shared/mlopsctl hold each pipeline's runs, and the CLI printed them.
    [single] = _runs_of(dbx, "build_model", _run_id(json.loads(build.stdout)))
    metrics = {m["key"]: m["value"] for m in single["data"]["metrics"]}
    assert 0 < metrics["rmse"] < 200 and f"{metrics['rmse']}"[:6] in build.stdout
    assert engine in _tags(single)["mlopsctl.engine"]
    for doc, dag_id in ((grid, "grid_search"), (spark_grid, "grid_search_spark")):
        logged = _runs_of(dbx, dag_id, _run_id(json.loads(doc.stdout)))
        roles = sorted(_tags(r)["mlopsctl.role"] for r in logged)
        assert roles == ["child"] * 4 + ["parent"], roles
    # Unity Catalog: each pipeline registered a version of catalog.schema.model
    assert len(dbx.server.mlflow.models[MODEL.lower()].versions) == versions_before + 3


@contextmanager
def workspace_mlflow(dbx: DbxEnv) -> Iterator[None]:
    """MLflow in this process pointed at the stand-in's workspace (tracking `databricks`, registry
    `databricks-uc`), for the tests that register or load versions themselves."""
    import mlflow

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DATABRICKS_HOST", dbx.server.url)
        mp.setenv("DATABRICKS_TOKEN", dbx.server.token)
        mlflow.set_tracking_uri("databricks")
        mlflow.set_registry_uri("databricks-uc")
        try:
            yield
        finally:
            mlflow.set_tracking_uri(None)
            mlflow.set_registry_uri(None)


@pytest.fixture(scope="module")
def trained_versions(dbx: DbxEnv) -> tuple[str, str]:
    """Two versions of MODEL that the pipelines trained and registered in Unity Catalog on the stand-in: the
    newest two that `test_all_three_pipelines_run_on_each_compute` left, or, run on its own, two build-models
    on serverless."""
    assert dbx.cli("deploy", "jobs", "--to", JOBS_ROOT, "--set-variable").returncode == 0
    assert dbx.cli("connect", "databricks", "--insecure").returncode == 0
    registered = dbx.server.mlflow.models
    if MODEL.lower() not in registered or len(registered[MODEL.lower()].versions) < 2:
        dbx.use_compute("serverless")
        for depth, trees in (("3", "4"), ("8", "20")):
            res = dbx.cli("run", "build-model", "--max-depth", depth, "--n-estimators", trees)
            assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    first, second = sorted(registered[MODEL.lower()].versions)[-2:]
    return str(first), str(second)


def test_promote_in_unity_catalog_on_serverless(dbx: DbxEnv, trained_versions: tuple[str, str]) -> None:
    """`promote` with the workspace's MLflow and a three-part name, on versions the pipelines registered: the
    evaluate_model job runs on serverless compute against Unity Catalog, a failing gate changes nothing, a
    passing one sets the alias and records its tags (keys UC accepts), the second version is judged beside the
    first, and --rollback moves the alias back."""
    v1, v2 = trained_versions
    dbx.use_compute("serverless")
    model = dbx.server.mlflow.models[MODEL.lower()]

    res = dbx.cli("promote", MODEL, v1, "--gate", "rmse<=0.0001", "--yes")
    assert res.returncode == ExitCode.GATE_FAILED, res.stdout + res.stderr[-3000:]
    assert "champion" not in model.aliases
    res = dbx.cli("promote", MODEL, v1, "--gate", "rmse<=1000", "--yes", "--json")
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    assert {a: str(v) for a, v in model.aliases.items()} == {"champion": v1}
    tags = model.versions[int(v1)].tags
    assert tags["mlopsctl_prev_champion"] == "none" and "rmse<=1000 pass" in tags["mlopsctl_gates_champion"]
    res = dbx.cli("promote", MODEL, v2, "--gate", "rmse<=1000", "--yes", "--json")
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    doc = json.loads(res.stdout)
    assert doc["evaluation"]["champion_version"] == v1 and doc["evaluation"]["champion"]["rmse"] > 0
    [evaluation] = [r for r in _runs_of(dbx, "evaluate_model", doc["evaluation"]["dag_run_id"])
                    if _tags(r)["mlopsctl.role"] == "evaluation"]
    assert "spark-connect(" not in _tags(evaluation)["mlopsctl.engine"]  # the default rows need no Spark
    assert {a: str(v) for a, v in model.aliases.items()} == {"champion": v2}
    assert model.versions[int(v2)].tags["mlopsctl_prev_champion"] == v1
    res = dbx.cli("promote", MODEL, "--rollback", "--yes")
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    assert {a: str(v) for a, v in model.aliases.items()} == {"champion": v1}


SCORING_MODEL = f"{UC_SCHEMA}.mlopsctl-score-live"


@pytest.fixture(scope="module")
def scoring_model(dbx: DbxEnv) -> str:
    """A version that takes raw rows, registered in the stand-in's Unity Catalog under a three-part name (the
    shape the training jobs register), with alias champion; returns its version."""
    import mlflow

    from tests.fixtures.raw_model import log_raw_model, raw_frame

    assert dbx.cli("deploy", "jobs", "--to", JOBS_ROOT, "--set-variable").returncode == 0  # creates /Shared/mlopsctl
    with workspace_mlflow(dbx):
        version = log_raw_model(SCORING_MODEL, raw_frame(), experiment=f"{EXPERIMENTS}/tests_score")
        mlflow.MlflowClient().set_registered_model_alias(SCORING_MODEL, "champion", version)
    return version


# On serverless MLflow's spark_udf takes its Databricks Connect path: it reads the runtime with
# `SELECT current_version()` and ships the model to the workers with `addArtifact`.
@pytest.mark.parametrize("mode", list(MODES))
def test_score_runs_on_each_compute(dbx: DbxEnv, scoring_model: str, mode: str) -> None:
    """`score catalog.schema.model@champion` on a CSV in a volume writes Parquet to a volume on serverless, a new
    job cluster and an existing standard-access cluster, equal to the version's own predict."""
    import numpy as np
    import pandas as pd

    from tests.fixtures.raw_model import raw_frame

    assert dbx.cli("connect", "databricks", "--insecure").returncode == 0
    dbx.use_compute(mode)
    rows = raw_frame().drop(columns=["price"]).head(50).copy()
    rows.loc[1, "city"] = "west"
    data, output = f"{JOBS_ROOT}/score/new rows.csv", f"{JOBS_ROOT}/score/scored-{mode}"
    local = dbx.server.workspace_path(data)
    local.parent.mkdir(parents=True, exist_ok=True)
    rows.to_csv(local, index=False)
    res = dbx.cli("score", f"{SCORING_MODEL}@champion", "--data", data, "--output", output, "--json")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    doc = json.loads(res.stdout)
    assert doc["conf"]["model_version"] == int(scoring_model)
    assert doc["mlflow"]["run"]["metrics"]["rows_scored"] == len(rows)
    scored = pd.read_parquet(dbx.server.workspace_path(output))
    assert list(scored.columns) == [*rows.columns, "prediction", "model_name", "model_version", "scored_at"]
    import mlflow

    with workspace_mlflow(dbx):
        model = mlflow.pyfunc.load_model(f"models:/{SCORING_MODEL}/{scoring_model}")
    expected = np.asarray(model.predict(scored[list(rows.columns)]), dtype="float64")
    np.testing.assert_allclose(scored["prediction"].to_numpy(), expected, rtol=1e-9)


def test_a_changed_jobs_package_on_an_existing_cluster_runs_only_after_a_restart(dbx: DbxEnv, tmp_path: Path) -> None:
    """Finding 3: the existing cluster keeps the first jobs' wheel it installed. A redeploy with a changed
    mlopsctl_jobs is a new wheel version: `deploy jobs --cluster-id` warns, the task's job finds the old
    wheel and stops without a retry, naming the restart; after the restart the same pipeline runs the new code."""
    assert dbx.cli("connect", "databricks", "--insecure").returncode == 0
    dbx.use_compute("existing")
    libraries = dbx.server.cluster_libraries
    if not any("mlopsctl_jobs-" in str(st["library"].get("whl")) for st in libraries.statuses(STANDARD_CLUSTER_ID)):
        # run on its own: put the stock wheel on the cluster first, as the pipelines test above does
        assert dbx.cli("deploy", "jobs", "--to", JOBS_ROOT, "--set-variable").returncode == 0
        primed = dbx.cli("run", "build-model", "--max-depth", "4", "--n-estimators", "5")
        assert primed.returncode == 0, primed.stdout + primed.stderr
    edited = tmp_path / "spark_jobs"
    shutil.copytree(REPO / "spark_jobs", edited, ignore=shutil.ignore_patterns("__pycache__"))
    with (edited / "mlopsctl_jobs" / "__init__.py").open("a") as fh:
        fh.write('\nprint("mlopsctl_jobs: the edited package", flush=True)\n')
    deployed = dbx.cli("deploy", "jobs", "--src", str(edited), "--to", JOBS_ROOT, "--set-variable", "--cluster-id",
                       STANDARD_CLUSTER_ID, "--json")
    assert deployed.returncode == 0, deployed.stderr
    doc = json.loads(deployed.stdout)
    [stale] = doc["cluster"]["stale"]  # the stock wheel, still installed on the cluster
    assert stale.startswith("mlopsctl-jobs ") and f"not {doc['wheel_version']}" in stale

    runs_before = len(dbx.server.runs())
    refused = dbx.cli("run", "build-model", "--max-depth", "4", "--n-estimators", "5")
    assert refused.returncode == ExitCode.RUN_FAILED, refused.stdout + refused.stderr
    [run] = dbx.server.runs()[runs_before:]  # the first task stopped, and Airflow did not retry it
    task = run.tasks[0]
    assert task.task_key == "preprocess_data" and task.result_state == "FAILED"
    assert "the edited package" not in task.logs  # the old wheel ran, and stopped before any work
    line = next(ln for ln in task.logs.splitlines() if "mlopsctl-error:" in ln)
    assert doc["wheel_version"] in line and "restart the cluster" in line
    assert "restart the cluster" in " ".join((refused.stdout + refused.stderr).split())

    from databricks.sdk import WorkspaceClient

    WorkspaceClient(host=dbx.server.url, token=dbx.server.token).clusters.restart_and_wait(STANDARD_CLUSTER_ID)
    try:
        runs_before = len(dbx.server.runs())
        rerun = dbx.cli("run", "build-model", "--max-depth", "4", "--n-estimators", "5")
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        tasks = [t for r in dbx.server.runs()[runs_before:] for t in r.tasks]
        assert [t.task_key for t in tasks] == ["preprocess_data", "train_model"]
        assert all(t.result_state == "SUCCESS" and "the edited package" in t.logs for t in tasks)
    finally:  # the stock jobs and a cluster that holds nothing, for the tests after this one
        libraries.restart(STANDARD_CLUSTER_ID)
        assert dbx.cli("deploy", "jobs", "--to", JOBS_ROOT, "--set-variable").returncode == 0


def test_failing_job_fails_the_task_with_the_databricks_error(dbx: DbxEnv, tmp_path: Path) -> None:
    assert dbx.cli("deploy", "jobs", "--to", JOBS_ROOT, "--set-variable").returncode == 0
    assert dbx.cli("connect", "databricks", "--insecure").returncode == 0
    dbx.use_compute("serverless")
    bad = tmp_path / "no-target.csv"
    bad.write_text("a,b\n1,2\n3,4\n5,6\n")
    runs_before = len(dbx.server.runs())
    # A path on the CLI's machine: the DAG is tagged compute:databricks, so the CLI refuses it before triggering.
    refused = dbx.cli("run", "build-model", "--data", str(bad), "--max-depth", "5", "--n-estimators", "5")
    assert refused.returncode == ExitCode.USAGE, refused.stdout + refused.stderr
    assert "cannot see this machine's files" in refused.stderr and "databricks fs cp" in refused.stderr
    assert len(dbx.server.runs()) == runs_before
    # The same file in a UC volume: it reaches the job, which finds the target column missing (bad data).
    volume_file = "/Volumes/main/mlops/data/no-target.csv"
    dbx.server.workspace_path(volume_file).parent.mkdir(parents=True, exist_ok=True)
    dbx.server.workspace_path(volume_file).write_bytes(bad.read_bytes())
    res = dbx.cli("run", "build-model", "--data", volume_file, "--max-depth", "5", "--n-estimators", "5")
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
    # The same file as a workspace file: serverless Spark cannot read /Workspace (the stand-in's rule), so the job
    # reads it on the driver, and finds the same missing target.
    workspace_file = "/Workspace/Shared/mlopsctl-data/no-target.csv"
    dbx.server.workspace_path(workspace_file).parent.mkdir(parents=True, exist_ok=True)
    dbx.server.workspace_path(workspace_file).write_bytes(bad.read_bytes())
    res = dbx.cli("run", "build-model", "--data", workspace_file, "--max-depth", "5", "--n-estimators", "5")
    assert res.returncode == ExitCode.RUN_FAILED, res.stdout + res.stderr
    [_, from_workspace] = dbx.server.runs()[runs_before:]
    assert "target column 'target' not found" in from_workspace.tasks[0].logs, from_workspace.tasks[0].logs[-2000:]


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
