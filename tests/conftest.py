"""Test isolation (every test gets its own MLOPSCTL state, no colour, a fixed terminal width), the in-process
`cli` runner, and the `integration` mark that follows from the fixtures a test uses."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import pytest

if TYPE_CHECKING:
    from mlopsctl.appcontext import Environment

# The user's own contexts (~/.config/mlopsctl/contexts.toml, `mlopsctl context use`) must not leak into
# the tests, session fixtures included (they are set up before the per-test isolation below).
os.environ.pop("XDG_CONFIG_HOME", None)
os.environ["MLOPSCTL_CONFIG_DIR"] = _CONFIG_DIR = tempfile.mkdtemp(prefix="mlopsctl-test-config-")
atexit.register(shutil.rmtree, _CONFIG_DIR, ignore_errors=True)


#: MLflow's set_tracking_uri/set_registry_uri write these to os.environ too (and set_registry_uri(None) leaves its
#: value there), while a stack started later hands os.environ to its jobs: no test leaves them set (`_isolate`)
_MLFLOW_URI_VARS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
for _var in _MLFLOW_URI_VARS:
    os.environ.pop(_var, None)


@pytest.fixture(autouse=True)
def _isolate(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in list(os.environ):
        if key.startswith(("MLOPSCTL_", "DATABRICKS_")):
            monkeypatch.delenv(key, raising=False)
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "120")
    monkeypatch.setenv("TERM", "dumb")
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)  # contexts: ~/.config under the temp HOME
    yield
    for var in _MLFLOW_URI_VARS:
        os.environ.pop(var, None)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project dir as cwd, with MLOPSCTL_PROJECT_DIR pointing at it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLOPSCTL_PROJECT_DIR", str(tmp_path))
    return tmp_path


class CliResult(NamedTuple):
    """What one `mlopsctl` invocation left: its exit code and what it printed (unpacks as a 3-tuple)."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@pytest.fixture
def environment() -> Environment | None:
    """What `cli` runs mlopsctl against: None for the real settings, console, Airflow and MLflow. A test module
    overrides this fixture to hand mlopsctl its fakes (an `mlopsctl.appcontext.Environment`)."""
    return None


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], environment: Environment | None) -> Callable[..., CliResult]:
    """Run `mlopsctl ARGS...` in-process through main() (the real error -> exit code mapping), output captured,
    against the `environment` fixture's Environment (or the one passed as `environment=`)."""

    def run(*args: str, environment: Environment | None = environment) -> CliResult:
        from mlopsctl.cli import main

        capsys.readouterr()  # only this invocation's output
        with pytest.raises(SystemExit) as exc:
            main(list(args), environment)
        out, err = capsys.readouterr()
        return CliResult(int(exc.value.code or 0), out, err)

    return run


# The real local stack (Airflow 3 + MLflow), started once per test session: see tests/fixtures/stack.py.
# A real local Spark Connect server, also once per session: see tests/fixtures/spark_connect.py.
# pytester runs pytest inside a test (the test of the marking hook below).
pytest_plugins = ["tests.fixtures.stack", "tests.fixtures.spark_connect", "pytester"]

#: The fixtures that start a JVM, the local stack or one of its servers. A test that uses one of them, itself or
#: through the fixtures it uses, is marked `integration` by the hook below, so `-m "not integration"` starts none.
PROCESS_FIXTURES = frozenset({
    "local_stack",  # tests/fixtures/stack.py: Airflow, MLflow and Spark Connect
    "connect_server",  # tests/fixtures/spark_connect.py: a Spark Connect server (JVM), `spark` is built on it
    "databricks_server",  # tests/fixtures/databricks/server.py: its jobs run spark-submit or a Connect server
    "standin",  # tests/integration/test_databricks_standin.py: a Databricks stand-in of its own
    "dbx",  # tests/integration/test_databricks_live.py: a Databricks stand-in and a local stack
    "mlflow_server",  # tests/integration/test_databricks_mlflow.py: a real `mlflow server`
    "small_heap_server",  # tests/spark/test_memory_limit.py: a Spark Connect server with the smallest heap
})


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by mark
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests that use a PROCESS_FIXTURES fixture `integration`, and order the session so that one
    stack runs at a time (an idle stack still takes CPU from the tests beside it): first the tests that start no
    stack or start their own, then the Databricks module's stack (`dbx`), then the session stack's tests, the
    load test last, since it stresses the session stack, which is then restarted."""
    for item in items:
        if PROCESS_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
    items.sort(key=_stack_phase)


def _stack_phase(item: pytest.Item) -> int:
    fixtures = getattr(item, "fixturenames", ())
    if item.get_closest_marker("load") is not None:
        return 3
    if "local_stack" in fixtures:
        return 2
    return 1 if "dbx" in fixtures else 0
