"""The suite marks itself: a test that uses a fixture which starts a JVM or the local stack, itself or through other
fixtures, is marked `integration` by tests/conftest.py's collection hook; a test that uses none is not."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import PROCESS_FIXTURES

TESTS = Path(__file__).resolve().parents[1]

# the real session fixtures (`local_stack`, `cli_env` on top of it, `connect_server`) and a `spark` built on the
# Connect server as tests/spark/conftest.py builds it; only collected here, never set up
CONFTEST = """
import pytest

from tests.conftest import pytest_collection_modifyitems  # the hook under test

pytest_plugins = ["tests.fixtures.stack", "tests.fixtures.spark_connect"]


@pytest.fixture(scope="session")
def spark(connect_server):
    raise AssertionError("only collected")
"""

TESTS_FILE = """
def test_spark(spark):
    pass


def test_cli_on_the_stack(cli_env):
    pass


def test_stack(local_stack):
    pass


def test_plain(tmp_path):
    pass
"""


def _collected(pytester: pytest.Pytester, *args: str) -> list[str]:
    result = pytester.runpytest("--collect-only", "-q", *args)
    return sorted(line.split("::")[1] for line in result.outlines if "::" in line)


def test_a_test_using_spark_or_the_stack_is_integration_and_a_plain_one_is_not(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmarkers =\n    integration: starts a JVM or the local stack\n")
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_marks=TESTS_FILE)
    assert _collected(pytester, "-m", "integration") == ["test_cli_on_the_stack", "test_spark", "test_stack"]
    assert _collected(pytester, "-m", "not integration") == ["test_plain"]


ORDER_FILE = """
import pytest


@pytest.fixture(scope="module")
def dbx():
    raise AssertionError("only collected")


@pytest.mark.load
def test_load(local_stack):
    pass


@pytest.mark.slow
def test_slow(tmp_path):
    pass


def test_stack(local_stack):
    pass


def test_databricks(dbx):
    pass


def test_spark(spark):
    pass


def test_plain(tmp_path):
    pass
"""


def _order(pytester: pytest.Pytester, *args: str) -> list[str]:
    pytester.makeini("[pytest]\nmarkers =\n    integration: starts a JVM or the local stack\n    load: load\n"
                     "    slow: slow\n")
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_order=ORDER_FILE)
    result = pytester.runpytest("--collect-only", "-q", *args)
    return [line.split("::")[1] for line in result.outlines if "::" in line]


def test_the_longest_work_runs_first_and_the_load_test_last_of_the_stacks(pytester: pytest.Pytester) -> None:
    assert _order(pytester) == ["test_stack", "test_load", "test_databricks", "test_slow", "test_spark",
                                "test_plain"]


XDIST_CONFTEST = """
import os

import pytest

from tests.conftest import pytest_collection_modifyitems  # the hook under test


@pytest.fixture(scope="session")
def local_stack():
    return os.environ["PYTEST_XDIST_WORKER"]


@pytest.fixture(scope="module")
def dbx():
    return os.environ["PYTEST_XDIST_WORKER"]
"""

XDIST_TESTS = """
import os
import time

import pytest


def _ran(kind):
    time.sleep(0.2)
    with open(os.environ["RAN_LOG"], "a") as log:
        log.write(f"{kind} {os.environ['PYTEST_XDIST_WORKER']}\\n")


@pytest.mark.parametrize("i", range(6))
def test_stack(local_stack, i):
    _ran("stack")


@pytest.mark.parametrize("i", range(3))
def test_databricks(dbx, i):
    _ran("dbx")


@pytest.mark.parametrize("i", range(6))
def test_plain(i):
    _ran("plain")
"""


def test_under_xdist_the_tests_of_a_shared_fixture_run_on_one_worker(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """`make test`'s `-n auto --dist loadgroup`, on two workers: each shared fixture's tests run on one worker,
    so it starts once, and the tests that start nothing shared go to either."""
    monkeypatch.setenv("PYTHONPATH", str(TESTS.parent))  # the workers import the hook from tests.conftest
    ran = pytester.path / "ran.log"
    monkeypatch.setenv("RAN_LOG", str(ran))
    pytester.makeini("[pytest]\nmarkers =\n    integration: starts a JVM or the local stack\n    load: load\n"
                     "    slow: slow\n")
    pytester.makeconftest(XDIST_CONFTEST)
    pytester.makepyfile(test_groups=XDIST_TESTS)
    result = pytester.runpytest_subprocess("-p", "xdist", "-n", "2", "--dist", "loadgroup")
    result.assert_outcomes(passed=15)
    workers: dict[str, set[str]] = {}
    for line in ran.read_text().splitlines():
        kind, worker = line.split()
        workers.setdefault(kind, set()).add(worker)
    assert len(workers["stack"]) == 1 and len(workers["dbx"]) == 1, workers
    assert workers["plain"] == {"gw0", "gw1"}, workers


def _fixture_names(path: Path) -> set[str]:
    """Names of the functions `path` decorates with `pytest.fixture` or `pytest.fixture(...)`."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef):
            for deco in node.decorator_list:
                target = deco.func if isinstance(deco, ast.Call) else deco
                if ast.unparse(target) == "pytest.fixture":
                    names.add(node.name)
    return names


def test_every_declared_process_fixture_exists() -> None:
    """A renamed fixture must not leave its tests unmarked: every name in the list is a fixture of the suite."""
    defined = set().union(*(_fixture_names(p) for p in TESTS.rglob("*.py")))
    assert PROCESS_FIXTURES <= defined, sorted(PROCESS_FIXTURES - defined)
