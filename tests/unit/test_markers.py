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


def test_stack(local_stack):
    pass


def test_databricks(dbx):
    pass


def test_spark(spark):
    pass


def test_plain(tmp_path):
    pass
"""


def test_the_session_runs_one_stack_at_a_time_and_the_load_test_last(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmarkers =\n    integration: starts a JVM or the local stack\n    load: load\n")
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_order=ORDER_FILE)
    result = pytester.runpytest("--collect-only", "-q")
    order = [line.split("::")[1] for line in result.outlines if "::" in line]
    assert order == ["test_spark", "test_plain", "test_databricks", "test_stack", "test_load"]


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
