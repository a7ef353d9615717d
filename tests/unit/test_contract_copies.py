"""Constants the Spark jobs, the DAGs and the CLI must agree on, where each side keeps its own copy (the jobs
import nothing from dags/ or mlopsctl/, and the DAG files nothing from the jobs): every copy is pinned here.

Values are read from the source with `ast` (no import: the jobs need pyspark, the DAGs Airflow)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from mlopsctl.pipelines import default_registered_model

REPO = Path(__file__).resolve().parents[2]
PINNED = ("EXIT_NO_RETRY", "ERROR_PREFIX", "DEFAULT_REGISTERED_MODEL")
# where each constant is known to be defined (more copies anywhere under dags/ or spark_jobs/ are pinned too)
KNOWN = {
    "spark_jobs/mlopsctl_jobs/cli.py": {"EXIT_NO_RETRY", "ERROR_PREFIX"},
    "spark_jobs/mlopsctl_jobs/tracking.py": {"DEFAULT_REGISTERED_MODEL"},
    "dags/common/compute.py": {"EXIT_NO_RETRY", "ERROR_PREFIX"},
    "dags/common/databricks_backend.py": {"ERROR_PREFIX"},
}


def _module_constants(path: Path) -> dict[str, object]:
    out = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        for target in targets:
            if isinstance(target, ast.Name) and target.id in PINNED and node.value is not None:
                out[target.id] = ast.literal_eval(node.value)
    return out


def _copies() -> dict[str, dict[str, object]]:
    """constant -> {file: value} over every Python file of dags/ and spark_jobs/."""
    found: dict[str, dict[str, object]] = {name: {} for name in PINNED}
    for folder in ("dags", "spark_jobs"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for name, value in _module_constants(path).items():
                found[name][path.relative_to(REPO).as_posix()] = value
    return found


def test_the_known_copies_exist() -> None:
    found = _copies()
    for file, names in KNOWN.items():
        for name in names:
            assert file in found[name], (name, file)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("EXIT_NO_RETRY", 3), ("ERROR_PREFIX", "mlopsctl-error:"), ("DEFAULT_REGISTERED_MODEL", None)],
)
def test_every_copy_has_the_same_value(name: str, expected: object) -> None:
    # the registered model's default name is the register_model Param's default in dags/common/params.json
    expected = default_registered_model() if expected is None else expected
    copies = _copies()[name]
    assert copies == dict.fromkeys(copies, expected)


def _setdefaults_in(path: Path, function: str) -> dict[str, str]:
    """The ``os.environ.setdefault(KEY, VALUE)`` calls of one function, as {KEY: VALUE}."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    func = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == function)
    return {
        ast.literal_eval(call.args[0]): ast.literal_eval(call.args[1])
        for call in ast.walk(func)
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "setdefault"
    }


def test_the_launcher_imports_mlflow_as_quietly_as_a_job_would() -> None:
    # the launcher imports MLflow before any job runs (its forks inherit that import), so it sets what a job's
    # `mlopsctl_jobs.tracking.quiet_mlflow_env` sets before its own import: above all, no telemetry thread
    from mlopsctl.devenv.launcher import PRELOAD_ENV

    job = _setdefaults_in(REPO / "spark_jobs/mlopsctl_jobs/tracking.py", "quiet_mlflow_env")
    assert "MLFLOW_DISABLE_TELEMETRY" in PRELOAD_ENV
    assert {key: job.get(key) for key in PRELOAD_ENV} == PRELOAD_ENV
