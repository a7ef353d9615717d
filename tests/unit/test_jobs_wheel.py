"""The jobs' wheel (mlopsctl-jobs: the package spark_jobs/mlopsctl_jobs/): built into mlopsctl's own wheel by
hatch_build.py, chosen or built by `deploy jobs`, uploaded beside the scripts (the package's files never are),
the file name and pins the Databricks backend in dags/common/ relies on, and the entry scripts importing only
that package, as a Databricks task runs them."""

from __future__ import annotations

import ast
import email.parser
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from mlopsctl import __version__, jobs_wheel, paths
from mlopsctl.errors import ConfigError, ExitCode
from tests.fixtures.databricks_server import (
    DatabricksTestServer,
    databricks_server,  # noqa: F401 - fixture
)

REPO = Path(__file__).resolve().parents[2]
SPARK_JOBS = REPO / "spark_jobs"
ENTRY_SCRIPTS = {"preprocess_data.py", "train_model.py", "grid_search.py", "grid_search_spark.py", "evaluate_model.py",
                 "batch_score.py"}
PACKAGE = SPARK_JOBS / "mlopsctl_jobs"


def _package_sources() -> dict[str, bytes]:
    """The checkout's package files as the wheel names them (caches left out)."""
    return {f"mlopsctl_jobs/{p.relative_to(PACKAGE).as_posix()}": p.read_bytes() for p in sorted(PACKAGE.rglob("*.py"))
            if "__pycache__" not in p.parts}


def _project_version() -> str:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def _backend_constants() -> dict[str, object]:
    """The plain constants of dags/common/databricks_backend.py, read without importing Airflow (a constant
    may name one defined above it)."""
    tree = ast.parse((REPO / "dags" / "common" / "databricks_backend.py").read_text())
    found: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) and node.targets[0].id in (
                "MLFLOW_PIN", "SERVERLESS_PINS", "CLASSIC_PYPI"):
            found[node.targets[0].id] = eval(compile(ast.Expression(node.value), "backend", "eval"), {}, dict(found))
    return found


def _metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        [name] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return email.parser.Parser().parsestr(archive.read(name).decode())


@pytest.fixture(scope="module")
def mlopsctl_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """mlopsctl's wheel, built once the way the PEP 517 backend builds it (`uv build`, pip): hatchling's
    WheelBuilder on the repository, build hook included."""
    from hatchling.builders.wheel import WheelBuilder

    out = tmp_path_factory.mktemp("dist")
    return Path(next(WheelBuilder(str(REPO)).build(directory=str(out), versions=["standard"])))


@pytest.fixture
def installed(mlopsctl_wheel: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """mlopsctl's package data as a wheel install lays it out: `paths` finds the bundled jobs and wheel there."""
    with zipfile.ZipFile(mlopsctl_wheel) as archive:
        archive.extractall(tmp_path / "site", [n for n in archive.namelist() if n.startswith("mlopsctl/_bundled/")])
    monkeypatch.setattr(paths, "_PKG", tmp_path / "site" / "mlopsctl")
    assert jobs_wheel.bundled_wheel() is not None
    return tmp_path / "site" / "mlopsctl" / "_bundled"


def _without_hatchling(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, package=None: None if name == "hatchling" else real(name, package))


# --- built with mlopsctl -----------------------------------------------------------------------------------
def test_mlopsctl_wheel_carries_the_jobs_wheel(mlopsctl_wheel: Path, tmp_path: Path) -> None:
    version = _project_version()
    inner_name = f"mlopsctl/_bundled/wheels/mlopsctl_jobs-{version}-py3-none-any.whl"
    with zipfile.ZipFile(mlopsctl_wheel) as archive:
        names = archive.namelist()
        assert [n for n in names if n.endswith(".whl")] == [inner_name]
        assert "mlopsctl/_bundled/spark_jobs/pyproject.toml" in names  # what deploy compares a project with
        inner = tmp_path / Path(inner_name).name
        inner.write_bytes(archive.read(inner_name))
    assert jobs_wheel.package_files(inner) == _package_sources()
    with zipfile.ZipFile(inner) as archive:
        assert not ENTRY_SCRIPTS & {Path(n).name for n in archive.namelist()}  # scripts are uploaded as files
        assert not [n for n in archive.namelist() if "__pycache__" in n or n.endswith(".pyc")]
        [wheel_info] = [n for n in archive.namelist() if n.endswith(".dist-info/WHEEL")]
        info = archive.read(wheel_info).decode()
    assert "Root-Is-Purelib: true" in info and "Tag: py3-none-any" in info
    meta = _metadata(inner)
    assert (meta["Name"], meta["Version"]) == ("mlopsctl-jobs", version)
    requires = {r.name: r for r in map(Requirement, meta.get_all("Requires-Dist"))}
    assert set(requires) == {"mlflow", "scikit-learn", "matplotlib"}  # no pyspark/pandas/pyarrow/numpy
    assert not any(r.marker for r in requires.values())
    assert str(requires["mlflow"]) == _backend_constants()["MLFLOW_PIN"]  # the MLflow the tasks install beside it


def test_the_jobs_wheel_builds_reproducibly(tmp_path: Path) -> None:
    """Same sources, same bytes: a re-deploy of unchanged jobs lands in the same version folder."""
    first = jobs_wheel.build(SPARK_JOBS, tmp_path / "a", "0.1.0")
    second = jobs_wheel.build(SPARK_JOBS, tmp_path / "b", "0.1.0")
    assert first.name == second.name == "mlopsctl_jobs-0.1.0-py3-none-any.whl"
    assert first.read_bytes() == second.read_bytes()


def test_a_deploy_folder_names_its_wheel_version() -> None:
    assert jobs_wheel.wheel_version("v0.1.0-1a2b3c4d5e6f") == "0.1.0+1a2b3c4d5e6f"
    assert jobs_wheel.wheel_version("v2.0.1rc1-fix.2") == "2.0.1rc1+fix.2"
    for bad in ("v1", "latest", "0.1.0-abc", "v0.1.0-", "v0.1.0-A", "v0.1.0-a_b", "v0.1.0-a/b", "v0.1.0-a..b"):
        with pytest.raises(ValueError, match="v<version>-<label>"):
            jobs_wheel.wheel_version(bad)


def test_a_wheel_re_versioned_installs_as_that_version(tmp_path: Path) -> None:
    """`deploy jobs` uploads the wheel at its folder's version: the same files, metadata that says so, a
    RECORD that matches, and the same bytes for the same input."""
    import base64
    import hashlib
    from importlib.metadata import distributions

    base = jobs_wheel.build(SPARK_JOBS, tmp_path / "base", "0.1.0")
    first = jobs_wheel.with_version(base, "0.1.0+1a2b3c4d5e6f", tmp_path / "a")
    again = jobs_wheel.with_version(base, "0.1.0+1a2b3c4d5e6f", tmp_path / "b")
    assert first.name == "mlopsctl_jobs-0.1.0+1a2b3c4d5e6f-py3-none-any.whl"
    assert first.read_bytes() == again.read_bytes()
    assert jobs_wheel.package_files(first) == jobs_wheel.package_files(base)
    assert _metadata(first)["Version"] == "0.1.0+1a2b3c4d5e6f"
    assert _metadata(first).get_all("Requires-Dist") == _metadata(base).get_all("Requires-Dist")
    with zipfile.ZipFile(first) as archive:
        names = archive.namelist()
        assert not [n for n in names if n.startswith("mlopsctl_jobs-0.1.0.dist-info/")]
        record = archive.read("mlopsctl_jobs-0.1.0+1a2b3c4d5e6f.dist-info/RECORD").decode().splitlines()
        rows = {line.split(",")[0]: line.split(",")[1:] for line in record}
        assert set(rows) == set(names)
        for name, (digest, size) in rows.items():
            if digest:  # RECORD lists itself without a hash
                data = archive.read(name)
                assert digest == "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
                assert int(size) == len(data)
    [dist] = distributions(path=[str(first)])  # what importlib.metadata reports where it is installed
    assert (dist.metadata["Name"], dist.version) == ("mlopsctl-jobs", "0.1.0+1a2b3c4d5e6f")


# --- chosen or built by deploy -----------------------------------------------------------------------------
def test_stock_jobs_deploy_the_bundled_wheel_even_without_hatchling(installed: Path, tmp_path, monkeypatch) -> None:
    project = tmp_path / "spark_jobs"
    shutil.copytree(SPARK_JOBS, project)
    _without_hatchling(monkeypatch)  # a CLI-only install: no build backend
    wheel = jobs_wheel.for_deploy(project, __version__, tmp_path / "build")
    assert (wheel.origin, wheel.path) == ("bundled", jobs_wheel.bundled_wheel())
    assert wheel.modules == set(_package_sources())
    assert not (tmp_path / "build").exists()
    assert jobs_wheel.for_deploy(installed / "spark_jobs", __version__, tmp_path / "build").origin == "bundled"


def test_edited_jobs_get_their_own_wheel(installed: Path, tmp_path: Path) -> None:
    project = tmp_path / "spark_jobs"
    shutil.copytree(SPARK_JOBS, project)
    edited = (project / "mlopsctl_jobs" / "model.py").read_bytes() + b"\nEDITED = True\n"
    (project / "mlopsctl_jobs" / "model.py").write_bytes(edited)
    wheel = jobs_wheel.for_deploy(project, __version__, tmp_path / "build")
    assert wheel.origin == "built" and wheel.path.parent == tmp_path / "build"
    assert wheel.path.name == jobs_wheel.wheel_file_name(__version__)
    assert jobs_wheel.package_files(wheel.path) == {**_package_sources(), "mlopsctl_jobs/model.py": edited}
    # a module added to the package is an edit too
    shutil.copy(PACKAGE / "model.py", project / "mlopsctl_jobs" / "model.py")
    (project / "mlopsctl_jobs" / "features_extra.py").write_text("EXTRA = True\n")
    wheel = jobs_wheel.for_deploy(project, __version__, tmp_path / "build1")
    assert wheel.origin == "built" and "mlopsctl_jobs/features_extra.py" in jobs_wheel.package_files(wheel.path)
    # the stock package, but the project's pyproject.toml declares one more dependency: built too
    (project / "mlopsctl_jobs" / "features_extra.py").unlink()
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"matplotlib>=3.7",', '"matplotlib>=3.7",\n    "xgboost>=2",'))
    wheel = jobs_wheel.for_deploy(project, __version__, tmp_path / "build2")
    assert wheel.origin == "built"
    assert "xgboost>=2" in _metadata(wheel.path).get_all("Requires-Dist")


def test_edited_jobs_without_hatchling_are_refused_saying_how_to_fix_it(installed, tmp_path, monkeypatch) -> None:
    project = tmp_path / "spark_jobs"
    shutil.copytree(SPARK_JOBS, project)
    (project / "mlopsctl_jobs" / "data.py").write_text("EDITED = True\n")
    _without_hatchling(monkeypatch)
    with pytest.raises(ConfigError) as exc:
        jobs_wheel.for_deploy(project, __version__, tmp_path / "build")
    message, hint = exc.value.message, exc.value.hint or ""
    assert "\n" not in message + hint
    assert str(project) in message and "mlopsctl_jobs/" in message and "hatchling" in message
    assert "pip install hatchling" in hint and f"--src {installed / 'spark_jobs'}" in hint
    assert exc.value.exit_code == ExitCode.CONFIG


def test_a_source_checkout_builds_the_wheel_or_says_it_needs_hatchling(tmp_path, monkeypatch) -> None:
    assert jobs_wheel.bundled_wheel() is None  # the tests run from the checkout: no built wheel in it
    assert jobs_wheel.for_deploy(SPARK_JOBS, __version__, tmp_path / "build").origin == "built"
    _without_hatchling(monkeypatch)
    with pytest.raises(ConfigError, match="source checkout.*hatchling") as exc:
        jobs_wheel.for_deploy(SPARK_JOBS, __version__, tmp_path / "build2")
    assert "--src" not in (exc.value.hint or "")  # there is no other wheel to fall back on


@pytest.mark.parametrize(("pyproject", "error"), [
    ("[project\nname = 'x'\n", "Building the jobs' wheel from .* failed: TOMLDecodeError"),
    ("[project]\nname = 'x'\ndynamic = ['version']\n[tool.hatch.build.targets.wheel]\nonly-include = ['other.py']\n",
     "has no mlopsctl_jobs package"),
])
def test_a_broken_jobs_project_is_a_one_line_error(tmp_path: Path, pyproject: str, error: str) -> None:
    project = tmp_path / "spark_jobs"
    shutil.copytree(SPARK_JOBS, project)
    (project / "other.py").write_text("X = 1\n")
    (project / "pyproject.toml").write_text(pyproject)
    with pytest.raises(ConfigError, match=error) as exc:
        jobs_wheel.for_deploy(project, __version__, tmp_path / "build")
    assert "\n" not in exc.value.message


# --- what a Databricks task finds -------------------------------------------------------------------------
def test_each_entry_script_imports_with_only_the_wheel_on_its_path(tmp_path: Path) -> None:
    """A serverless task runs its script from a working directory that is not guaranteed, with the jobs' wheel
    installed: here each entry script runs from a scratch folder, its own folder kept off sys.path (``-P``), and
    nothing but the wheel on PYTHONPATH. A script that imports a sibling file fails with ModuleNotFoundError."""
    wheel = jobs_wheel.build(SPARK_JOBS, tmp_path / "wheel", "0.1.0")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {"PATH": os.environ["PATH"], "HOME": str(scratch), "LANG": "C.UTF-8", "PYTHONPATH": str(wheel)}

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-P", *argv], cwd=scratch, env=env, capture_output=True, text=True,
                              timeout=300, check=False)

    found = run("-c", "import mlopsctl_jobs, sys; print(mlopsctl_jobs.__file__); print(sys.path)")
    assert found.returncode == 0, found.stderr
    origin, path = found.stdout.splitlines()
    assert origin.startswith(str(wheel)) and str(SPARK_JOBS) not in path
    for script in sorted(ENTRY_SCRIPTS):
        done = run(str(SPARK_JOBS / script), "--help")
        assert done.returncode == 0, f"{script}:\n{done.stderr[-3000:]}"
        assert "--dag-id" in done.stdout and "--work-dir" in done.stdout


def test_a_job_refuses_to_run_another_installed_version_with_exit_3(tmp_path: Path) -> None:
    """Finding 3: a task names the jobs' version it was deployed with; a job that finds another one installed
    (a cluster keeps its first wheel until it restarts) stops with one mlopsctl-error line naming the restart,
    before any work. Without --jobs-version (a local run) nothing is checked."""
    base = jobs_wheel.build(SPARK_JOBS, tmp_path / "base", "0.1.0")
    wheel = jobs_wheel.with_version(base, "0.1.0+aaaaaaaaaaaa", tmp_path / "wheel")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "LANG": "C.UTF-8", "PYTHONPATH": str(wheel)}
    parse = ("import sys; from mlopsctl_jobs import cli; "
             "print(cli.base_parser('x').parse_args(sys.argv[1:]).jobs_version)")
    common = ["--dag-id", "d", "--run-id", "r", "--work-dir", str(tmp_path)]

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-P", "-c", parse, *common, *argv], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120, check=False)

    same = run("--jobs-version", "0.1.0+aaaaaaaaaaaa")
    assert (same.returncode, same.stdout.strip()) == (0, "0.1.0+aaaaaaaaaaaa"), same.stderr
    assert run().stdout.strip() == "None" and run("--jobs-version", "").stdout.strip() == "None"
    stale = run("--jobs-version", "0.1.0+bbbbbbbbbbbb")
    assert stale.returncode == 3 and stale.stdout == ""
    [line] = stale.stderr.splitlines()
    assert line.startswith("mlopsctl-error: ") and "0.1.0+aaaaaaaaaaaa" in line and "0.1.0+bbbbbbbbbbbb" in line
    assert "restart the cluster" in line
    env["PYTHONPATH"] = str(SPARK_JOBS)  # the package from a folder, no wheel installed
    missing = run("--jobs-version", "0.1.0+bbbbbbbbbbbb")
    assert missing.returncode == 3 and "has no mlopsctl-jobs installed" in missing.stderr


def test_deploy_refuses_the_old_layout_before_building_or_uploading(
        project: Path, cli, monkeypatch, databricks_server: DatabricksTestServer) -> None:  # noqa: F811
    """A project scaffolded before the package carries its own spark_jobs/rf_core.py, which its scripts import:
    `deploy jobs` refuses it with the upgrade step, before anything is built or sent to the workspace."""
    monkeypatch.setenv("DATABRICKS_HOST", databricks_server.url)
    monkeypatch.setenv("DATABRICKS_TOKEN", databricks_server.token)
    old = project / "spark_jobs"
    old.mkdir()
    (old / "rf_core.py").write_text("def run_main(fn):\n    fn()\n")
    (old / "train_model.py").write_text("import rf_core\n")
    monkeypatch.setattr(jobs_wheel, "build", lambda *a, **k: pytest.fail("the old layout must not be built"))
    code, out, err = cli("deploy", "jobs", "--to", "/Workspace/Shared/mlopsctl/jobs")
    assert code == ExitCode.CONFIG, out + err
    text = " ".join(err.split())
    assert "rf_core.py" in text and "mlopsctl_jobs" in text
    assert "mlopsctl init --force" in text and "delete spark_jobs/rf_core.py" in text
    assert not databricks_server.workspace_path("/Workspace/Shared/mlopsctl/jobs").exists()
    with pytest.raises(ConfigError) as exc:
        jobs_wheel.check_layout(old)
    assert "\n" not in exc.value.message + (exc.value.hint or "")  # one paragraph
    jobs_wheel.check_layout(SPARK_JOBS)  # the current layout passes


# --- uploaded by deploy ------------------------------------------------------------------------------------
@pytest.mark.parametrize("root", ["/Workspace/Shared/mlopsctl/jobs", "/Volumes/main/mlops/jobs"])
def test_deploy_jobs_uploads_the_scripts_and_the_wheel_and_not_the_package(
        project: Path, cli, monkeypatch, databricks_server: DatabricksTestServer, root: str) -> None:  # noqa: F811
    monkeypatch.setenv("DATABRICKS_HOST", databricks_server.url)
    monkeypatch.setenv("DATABRICKS_TOKEN", databricks_server.token)
    shutil.copytree(SPARK_JOBS, project / "spark_jobs", ignore=shutil.ignore_patterns("__pycache__"))
    code, out, err = cli("deploy", "jobs", "--to", root, "--json")
    assert code == 0, err
    doc = json.loads(out)
    dest = doc["path"]
    assert dest.startswith(f"{root}/v{__version__}-")
    names = {remote.removeprefix(dest + "/") for remote in doc["files"]}
    folder = dest.rsplit("/", 1)[1]
    assert doc["wheel_version"] == f"{__version__}+{folder.rsplit('-', 1)[1]}"  # the folder's, not mlopsctl's
    wheel_name = jobs_wheel.wheel_file_name(doc["wheel_version"])  # where the DAGs look for it
    assert names == ENTRY_SCRIPTS | {wheel_name}
    assert doc["wheel"] == f"{dest}/{wheel_name}" and doc["wheel_origin"] == "built"  # a source checkout
    assert not databricks_server.workspace_path(f"{dest}/mlopsctl_jobs").exists()
    uploaded = databricks_server.workspace_path(doc["wheel"])
    assert jobs_wheel.package_files(uploaded) == _package_sources()
    assert _metadata(uploaded)["Version"] == doc["wheel_version"]
    for script in ENTRY_SCRIPTS:
        assert databricks_server.workspace_path(f"{dest}/{script}").read_bytes() == (SPARK_JOBS / script).read_bytes()
    # unchanged jobs: the same folder; an edit of the package (only in the wheel) moves it
    code, out, err = cli("deploy", "jobs", "--to", root, "--json")
    assert json.loads(out)["path"] == dest
    with (project / "spark_jobs" / "mlopsctl_jobs" / "grid.py").open("a") as fh:
        fh.write("\n# edited\n")
    code, out, err = cli("deploy", "jobs", "--to", root, "--json")
    assert code == 0, err
    edited = json.loads(out)
    assert edited["path"] != dest and edited["wheel_version"] != doc["wheel_version"]  # a new version to install
    assert _metadata(databricks_server.workspace_path(edited["wheel"]))["Version"] == edited["wheel_version"]


def test_deploy_warns_when_the_existing_cluster_holds_another_wheel_or_mlflow(
        project: Path, cli, monkeypatch, databricks_server: DatabricksTestServer) -> None:  # noqa: F811
    """Finding 3: the cluster's library status (Libraries API) shows the jobs' wheel of an earlier deploy and
    another MLflow; `deploy jobs --cluster-id` uploads, then says the cluster keeps them until it restarts."""
    from tests.fixtures.databricks_server import TEST_CLUSTER_ID

    monkeypatch.setenv("DATABRICKS_HOST", databricks_server.url)
    monkeypatch.setenv("DATABRICKS_TOKEN", databricks_server.token)
    root = "/Volumes/main/mlops/jobs"
    code, out, err = cli("deploy", "jobs", "--to", root, "--cluster-id", TEST_CLUSTER_ID, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["cluster"] == {"id": TEST_CLUSTER_ID, "stale": [], "error": None}  # nothing installed yet
    mlflow = jobs_wheel.requirement(databricks_server.workspace_path(doc["wheel"]), "mlflow")
    databricks_server.cluster_libraries.attach(TEST_CLUSTER_ID, [{"whl": doc["wheel"]}, {"pypi": {"package": mlflow}}])
    code, out, err = cli("deploy", "jobs", "--to", root, "--cluster-id", TEST_CLUSTER_ID, "--json")
    assert json.loads(out)["cluster"]["stale"] == []  # the same deploy: what the cluster holds is current
    older = {"whl": f"{root}/v0.0.9-0123456789ab/mlopsctl_jobs-0.0.9+0123456789ab-py3-none-any.whl"}
    databricks_server.cluster_libraries.restart(TEST_CLUSTER_ID)
    databricks_server.cluster_libraries.attach(TEST_CLUSTER_ID, [older, {"pypi": {"package": "mlflow==2.22.0"}}])
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_CLUSTER_ID", TEST_CLUSTER_ID)  # the setting the Airflow workers read
    code, out, err = cli("deploy", "jobs", "--to", root)
    assert code == 0, err  # uploaded all the same
    text = " ".join(err.split())
    assert f"Cluster {TEST_CLUSTER_ID} still holds mlopsctl-jobs 0.0.9+0123456789ab" in text
    assert "MLflow 'mlflow==2.22.0'" in text and f"databricks clusters restart {TEST_CLUSTER_ID}" in text
    code, out, err = cli("deploy", "jobs", "--to", root, "--cluster-id", "0000-nope")
    assert code == 0 and "Could not read the libraries of cluster 0000-nope" in " ".join(err.split())


def test_deploy_refuses_a_version_folder_that_names_no_wheel_version(
        project: Path, cli, monkeypatch, databricks_server: DatabricksTestServer) -> None:  # noqa: F811
    monkeypatch.setenv("DATABRICKS_HOST", databricks_server.url)
    monkeypatch.setenv("DATABRICKS_TOKEN", databricks_server.token)
    for bad in ("latest", "v1", "a/b"):
        code, out, err = cli("deploy", "jobs", "--to", "/Volumes/main/mlops/jobs", "--version", bad)
        assert code == ExitCode.USAGE and "v<version>-<label>" in err, err
    code, out, err = cli("deploy", "jobs", "--to", "/Volumes/main/mlops/jobs", "--version", "v1.2-hotfix.1", "--json")
    assert code == 0 and json.loads(out)["wheel"].endswith("/v1.2-hotfix.1/mlopsctl_jobs-1.2+hotfix.1-py3-none-any.whl")


# --- what the DAGs rely on ---------------------------------------------------------------------------------
def test_the_backends_wheel_name_and_pins_follow_the_project_and_uv_lock() -> None:
    constants = _backend_constants()
    assert __version__ == _project_version()
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    locked = {p["name"]: p["version"] for p in lock["package"]}
    pins = dict(pin.split("==") for pin in constants["SERVERLESS_PINS"])
    assert pins == {name: locked[name] for name in ("mlflow", "scikit-learn", "matplotlib")}


def test_one_exact_mlflow_everywhere_and_it_is_uv_locks() -> None:
    """Serverless dependencies, classic libraries and the jobs' wheel's Requires-Dist: one MLflow, the locked one,
    so every compute runs the same MLflow and a shared cluster is not upgraded to whatever is newest."""
    constants = _backend_constants()
    locked = {p["name"]: p["version"] for p in tomllib.loads((REPO / "uv.lock").read_text())["package"]}
    pin = constants["MLFLOW_PIN"]
    assert pin == f"mlflow=={locked['mlflow']}"
    assert [p for p in constants["SERVERLESS_PINS"] if Requirement(p).name == "mlflow"] == [pin]
    assert list(constants["CLASSIC_PYPI"]) == [pin]
    jobs_deps = tomllib.loads((SPARK_JOBS / "pyproject.toml").read_text())["project"]["dependencies"]
    assert [d for d in jobs_deps if Requirement(d).name == "mlflow"] == [pin]
