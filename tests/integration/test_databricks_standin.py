"""The Databricks stand-in runs jobs as strictly as a workspace: the compute decides classic Spark or Spark
Connect, a job imports only what its compute lends and its payload declares, and it sees only /Workspace
and /Volumes. Real venvs (uv), a real Spark Connect server per dependency set, real spark-submit."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import textwrap
import zipfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.databricks import rules, sandbox
from tests.fixtures.databricks.server import connect_server_name
from tests.fixtures.databricks_server import (
    STANDARD_CLUSTER_ID,
    TEST_CLUSTER_ID,
    TEST_CLUSTERS,
    DatabricksTestServer,
    TaskRun,
)

REPO = Path(__file__).resolve().parents[2]
LIBS = "/Volumes/main/default/libs"
SERVERLESS: dict[str, Any] = {"environment_key": "e"}


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabricksTestServer]:
    """One stand-in for the module, so its Connect servers (one per dependency set) are started once."""
    server = DatabricksTestServer(tmp_path_factory.mktemp("standin"), clusters=TEST_CLUSTERS,
                                  hide=[tmp_path_factory.getbasetemp()], pending_seconds=0.1).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def sdk(standin: DatabricksTestServer):
    from databricks.sdk import WorkspaceClient

    client = WorkspaceClient(host=standin.url, token=standin.token)
    client.files.upload(f"{LIBS}/{TINYLIB.name}", io.BytesIO(TINYLIB.data), overwrite=True)
    return client


class _Wheel:
    """A one-module wheel, byte-identical on every build (so its venv is reused across sessions)."""

    def __init__(self, name: str, version: str, module: str, source: str) -> None:
        self.name = f"{name}-{version}-py3-none-any.whl"
        dist = f"{name}-{version}.dist-info"
        files = {f"{module}.py": source,
                 f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
                 f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
        record = []
        for path, text in files.items():
            digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
            record.append(f"{path},sha256={digest},{len(text.encode())}")
        files[f"{dist}/RECORD"] = "\n".join([*record, f"{dist}/RECORD,,"]) + "\n"
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as archive:
            for path, text in files.items():
                archive.writestr(zipfile.ZipInfo(path, date_time=(2020, 1, 1, 0, 0, 0)), text)
        self.data = buf.getvalue()


TINYLIB = _Wheel("tinylib", "0.1", "tinylib", "def tag():\n    return 'tinylib-ok'\n")


def _submit(sdk, standin: DatabricksTestServer, name: str, code: str, compute: dict[str, Any], *,
            dependencies: list[str] | None = None, params: tuple[str, ...] = ()) -> TaskRun:
    from databricks.sdk.service.jobs import JobEnvironment, SubmitTask

    sdk.workspace.mkdirs("/Shared/standin")
    path = f"/Workspace/Shared/standin/{name}.py"
    sdk.workspace.import_(path, content=base64.b64encode(textwrap.dedent(code).encode()).decode(),
                          format=_auto(), overwrite=True)
    task = {"task_key": name, "spark_python_task": {"python_file": path, "parameters": list(params)}, **compute}
    environments = None
    if "environment_key" in compute:
        environments = [JobEnvironment.from_dict({"environment_key": "e", "spec": {
            "environment_version": "4", "dependencies": dependencies or []}})]
    run = sdk.jobs.submit(run_name=name, tasks=[SubmitTask.from_dict(task)], environments=environments).result(
        timeout=timedelta(minutes=20))
    [job] = [r for r in standin.runs() if r.run_id == run.run_id]
    return job.tasks[0]


def _locked(name: str) -> str:
    import tomllib

    return next(p["version"] for p in tomllib.loads((REPO / "uv.lock").read_text())["package"] if p["name"] == name)


def _auto():
    from databricks.sdk.service.workspace import ImportFormat

    return ImportFormat.AUTO


def test_serverless_job_imports_only_what_it_declares(sdk, standin) -> None:
    """No scikit-learn on serverless unless declared; declared (with a wheel from a volume), the client and
    the Connect server's Python workers both import it. The job's environment is a Databricks task's."""
    job = """
        import json, os
        print("ENV " + json.dumps(sorted(os.environ)))
        print("RUNTIME " + os.environ["DATABRICKS_RUNTIME_VERSION"])
        import sklearn
    """
    forgot = _submit(sdk, standin, "forgot", job, SERVERLESS)
    assert forgot.result_state == "FAILED"
    assert "ModuleNotFoundError: No module named 'sklearn'" in forgot.logs
    env = json.loads(next(ln for ln in forgot.logs.splitlines() if ln.startswith("ENV "))[4:])
    assert "SPARK_REMOTE" in env and "DATABRICKS_RUNTIME_VERSION" in env
    assert not [k for k in env if k.startswith(("AIRFLOW", "MLOPSCTL_", "PYTEST", "VIRTUAL_ENV", "UV"))]
    assert "PYTHONPATH" not in env and "RUNTIME client.4" in forgot.logs

    declared = """
        import pandas, pyspark, sklearn, tinylib
        from pyspark.errors import PySparkException
        from pyspark.sql import SparkSession

        print("CLIENT-PYSPARK " + pyspark.__version__, hasattr(PySparkException, "getCondition"))
        print("PANDAS " + pandas.__version__)

        def in_worker(batches):
            import sklearn, tinylib
            for batch in batches:
                yield batch.assign(tag=tinylib.tag() + "/" + sklearn.__version__)

        spark = SparkSession.builder.getOrCreate()
        print("SESSION " + type(spark).__module__)
        rows = spark.range(3).mapInPandas(in_worker, "id long, tag string").collect()
        print("WORKERS " + ",".join(sorted({r.tag for r in rows})))
        print("CLIENT " + tinylib.tag() + "/" + sklearn.__version__)
    """
    pandas = f"pandas=={_locked('pandas')}"  # also in the base: the declared one is installed over it
    ok = _submit(sdk, standin, "declared", declared, SERVERLESS,
                 dependencies=[f"{LIBS}/{TINYLIB.name}", "scikit-learn", pandas])
    assert ok.result_state == "SUCCESS", ok.logs
    assert "SESSION pyspark.sql.connect" in ok.logs
    client = next(ln for ln in ok.logs.splitlines() if ln.startswith("CLIENT ")).split(" ", 1)[1]
    assert client.startswith("tinylib-ok/") and f"WORKERS {client}" in ok.logs
    assert ok.environment != forgot.environment
    # environment version 4: the job is a pyspark-client 4.0 client (getCondition and all) of the stand-in's
    # Connect server, whose workers run its own PySpark with the same declared packages
    client_version = rules.SERVERLESS_ENVIRONMENTS["4"].client.split("==")[1]
    assert client_version.startswith("4.0.") and f"CLIENT-PYSPARK {client_version} True" in ok.logs
    assert ok.environment != ok.connect_environment
    assert connect_server_name(ok.connect_environment, serverless=True) in standin.connect_servers()
    assert f"PANDAS {_locked('pandas')}" in ok.logs
    assert [n for n in ok.library_notes if "pandas of serverless environment 4 is replaced" in n and pandas in n]


def test_a_second_run_of_a_dependency_set_builds_nothing(sdk, standin) -> None:
    job = "import sklearn, tinylib\nprint('again', tinylib.tag())\n"
    deps = [f"{LIBS}/{TINYLIB.name}", "scikit-learn"]
    first = _submit(sdk, standin, "reuse1", job, SERVERLESS, dependencies=deps)
    builds = sum(standin.environments.builds.values())
    connect_servers = standin.connect_servers()
    second = _submit(sdk, standin, "reuse2", job, SERVERLESS, dependencies=deps)
    assert first.result_state == second.result_state == "SUCCESS", second.logs
    assert first.environment == second.environment and first.venv == second.venv
    assert standin.environments.builds[first.environment] <= 1  # at most once this session (0: cached before)
    assert sum(standin.environments.builds.values()) == builds  # the second run built no venv
    assert standin.connect_servers() == connect_servers  # and started no Connect server


def test_serverless_and_standard_clusters_are_connect_dedicated_is_classic(sdk, standin) -> None:
    job = """
        from pyspark.sql import SparkSession
        spark = SparkSession.builder.getOrCreate()
        print("COUNT", spark.range(5).count())
        print("MASTER=" + spark.sparkContext.master)
        import sklearn
    """
    serverless = _submit(sdk, standin, "ctx_serverless", job, SERVERLESS)
    standard = _submit(sdk, standin, "ctx_standard", job, {"existing_cluster_id": STANDARD_CLUSTER_ID})
    dedicated = _submit(sdk, standin, "ctx_dedicated", job, {"existing_cluster_id": TEST_CLUSTER_ID})
    for connect in (serverless, standard):
        assert connect.result_state == "FAILED" and "COUNT 5" in connect.logs
        assert "[JVM_ATTRIBUTE_NOT_SUPPORTED] Attribute `sparkContext` is not supported in Spark Connect" in connect.logs
    # the same base and no declared packages: one venv for both (serverless has a Connect server of its own)
    assert standard.connect_environment == serverless.connect_environment == standard.environment
    assert dedicated.result_state == "SUCCESS", dedicated.logs  # classic Spark; the ML runtime lends sklearn
    assert "MASTER=local[2]" in dedicated.logs
    assert standard.compute.connect and not dedicated.compute.connect


def test_jobs_see_the_workspace_and_volumes_only(sdk, standin, tmp_path) -> None:
    reason = sandbox.unavailable()
    if reason:
        pytest.skip(f"job isolation is not available here: {reason}")
    secret = tmp_path / "test-machine.csv"
    secret.write_text("x\n1\n")
    sdk.files.upload("/Volumes/main/default/data/rows.csv", io.BytesIO(b"x\n1\n2\n3\n"), overwrite=True)
    job = """
        import os, sys
        from pyspark.sql import SparkSession
        print("CWD", os.getcwd(), os.listdir("."))
        for path in sys.argv[1:3]:
            print("EXISTS", path, os.path.exists(path))
        spark = SparkSession.builder.getOrCreate()
        print("ROWS", spark.read.csv(sys.argv[3], header=True).count())  # the Connect server reads it
        print("LOCAL", len(open(sys.argv[3]).read().splitlines()))
        spark.read.csv(sys.argv[1], header=True).count()
    """
    run = _submit(sdk, standin, "sandbox", job, SERVERLESS,
                  params=(str(secret), str(REPO / "pyproject.toml"), "/Volumes/main/default/data/rows.csv"))
    assert f"EXISTS {secret} False" in run.logs and f"EXISTS {REPO / 'pyproject.toml'} False" in run.logs
    assert "ROWS 3" in run.logs and "LOCAL 4" in run.logs
    assert f"CWD /tmp/run-{run.run_id} []" in run.logs  # a fresh scratch dir
    assert run.result_state == "FAILED" and "PATH_NOT_FOUND" in run.logs  # the server cannot read it either


def test_serverless_executors_cannot_read_workspace_files_and_scripts_have_no_siblings(sdk, standin) -> None:
    """rules.SERVERLESS_WORKSPACE_FILES and rules.WORKING_DIRECTORY: the job's own process reads a workspace
    file, Spark on serverless cannot (`file:/Workspace/...`), a volume it can; the job runs from a scratch
    dir, and a module beside the script is not importable."""
    reason = sandbox.unavailable()
    if reason:
        pytest.skip(f"job isolation is not available here: {reason}")
    sdk.workspace.mkdirs("/Shared/standin")
    sdk.workspace.upload("/Shared/standin/rows.csv", io.BytesIO(b"x\n1\n2\n"), format=_auto(), overwrite=True)
    sdk.workspace.upload("/Shared/standin/sibling.py", io.BytesIO(b"VALUE = 1\n"), format=_auto(), overwrite=True)
    sdk.files.upload("/Volumes/main/default/data/rows.csv", io.BytesIO(b"x\n1\n2\n3\n"), overwrite=True)
    job = """
        import os, sys
        from pyspark.sql import SparkSession
        print("CWD", os.getcwd(), "SCRIPT DIR ON PATH", os.path.dirname(__file__) in sys.path)
        try:
            import sibling
        except ModuleNotFoundError as exc:
            print("SIBLING", exc)
        print("DRIVER", len(open("/Workspace/Shared/standin/rows.csv").read().splitlines()))
        spark = SparkSession.builder.getOrCreate()
        print("VOLUME", spark.read.csv("/Volumes/main/default/data/rows.csv", header=True).count())
        try:
            spark.read.csv("file:/Workspace/Shared/standin/rows.csv", header=True).count()
        except Exception as exc:
            print("EXECUTORS", str(exc).splitlines()[0])
    """
    run = _submit(sdk, standin, "workspace_files", job, SERVERLESS)
    assert run.result_state == "SUCCESS", run.logs
    assert f"CWD /tmp/run-{run.run_id} SCRIPT DIR ON PATH False" in run.logs
    assert "SIBLING No module named 'sibling'" in run.logs
    assert "DRIVER 3" in run.logs and "VOLUME 3" in run.logs
    assert "EXECUTORS" in run.logs and "PATH_NOT_FOUND" in run.logs


def test_serverless_python_workers_get_one_gigabyte_for_user_code(sdk, standin) -> None:
    """rules.SERVERLESS_PYTHON_MEMORY: a mapInPandas function's worker is bounded; it may take half a GiB, and
    taking more than the room left under the bound fails (the Spark job then fails, as MEMORY_LIMIT_SERVERLESS
    fails it on Databricks). The bound is an idle worker's measured address space plus 1 GiB, and a worker's own
    address space varies with what it ran before, so the room measured inside the function is 1 to about 2 GiB
    (measured: 2.1 GiB after a job that only read files): the stand-in is looser than Databricks' 1 GB by up to
    a GiB. Address space only: nothing is touched."""
    job = """
        import resource
        from pyspark.sql import SparkSession

        def probe(batches):
            import numpy
            bound = resource.getrlimit(resource.RLIMIT_AS)[0]
            held = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status")
                        if line.startswith("VmSize:"))
            room = -1 if bound == resource.RLIM_INFINITY else bound - held
            half = numpy.empty(2**29, dtype=numpy.uint8)
            del half
            try:
                numpy.empty(max(room, 0) + 2**28, dtype=numpy.uint8)
                refused = False
            except MemoryError:
                refused = True
            for batch in batches:
                yield batch.assign(room=room, refused=refused)

        spark = SparkSession.builder.getOrCreate()
        [row] = spark.range(1).mapInPandas(probe, "id long, room long, refused boolean").collect()
        print("ROOM", "unbounded" if row.room < 0 else round(row.room / 2**30, 2), "REFUSED", row.refused)
    """
    run = _submit(sdk, standin, "python_memory", job, SERVERLESS)
    assert run.result_state == "SUCCESS", run.logs
    room = float(run.logs.split("ROOM ")[1].split()[0])
    assert 0.5 <= room <= 2.5 and "REFUSED True" in run.logs, run.logs[-3000:]
    standard = _submit(sdk, standin, "python_memory_std", job, {"existing_cluster_id": STANDARD_CLUSTER_ID})
    assert "ROOM unbounded REFUSED False" in standard.logs, standard.logs[-3000:]  # a cluster's workers: no cap
