"""DAG integrity: the DAGs import cleanly, carry tags/retries/params per the contract, touch no
connection/variable/subprocess at parse time, and render exactly the argv the user asked for."""

from __future__ import annotations

import copy
import itertools
import json
import subprocess
from typing import Any

import pytest

from tests.dags.conftest import DAGS_DIR, parse_dags

PIPELINES = {"build_model": ["preprocess_data", "train_model"],
             "grid_search": ["preprocess_data", "grid_search"],
             "grid_search_spark": ["preprocess_data", "grid_search_spark"],
             "evaluate_model": ["evaluate_model"],
             "batch_score": ["batch_score"]}

# The DAG Params the CLI and the DAGs agree on, written out here independently of dags/common/params.py.
COMMON = {
    "data": ({"type": ["null", "string"]}, None),
    "target": ({"type": "string"}, "target"),
    "na_values": ({"type": ["null", "array"], "items": {"type": "string", "minLength": 1, "pattern": "^[^,]*[^,\\s][^,]*$"},
                   "minItems": 1}, None),
    "test_size": ({"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}, 0.2),
    "random_state": ({"type": "integer", "minimum": 0, "maximum": 2**32 - 1}, 42),
    "register_model": ({"type": ["null", "string"]}, "mlopsctl-random-forest"),
}
CONTRACT = {
    "build_model": {
        "max_depth": ({"type": "integer", "minimum": 1, "maximum": 1000}, 80),
        "n_estimators": ({"type": "integer", "minimum": 1, "maximum": 5000}, 100),
        **COMMON,
    },
    "grid": {
        "max_depth": ({"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 1000},
                       "minItems": 1, "uniqueItems": True}, [80, 90, 100, 110]),
        "n_estimators": ({"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 5000},
                          "minItems": 1, "uniqueItems": True}, [100, 200, 300]),
        "cv": ({"type": "integer", "minimum": 2, "maximum": 20}, 3),
        **COMMON,
    },
    "evaluate_model": {
        "model_name": ({"type": "string", "minLength": 1}, "mlopsctl-random-forest"),
        "model_version": ({"type": ["null", "integer"], "minimum": 1}, None),
        "alias": ({"type": "string", "pattern": "^[A-Za-z0-9_-]+$"}, "champion"),
        "data": ({"type": ["null", "string"]}, None),
    },
    "batch_score": {
        "model_name": ({"type": ["null", "string"], "minLength": 1}, None),
        "model_version": ({"type": ["null", "integer"], "minimum": 1}, None),
        "data": ({"type": ["null", "string"]}, None),
        "output": ({"type": ["null", "string"], "minLength": 1}, None),
        "mode": ({"type": "string", "enum": ["error", "overwrite", "append"]}, "error"),
    },
}


def test_every_dag_file_imports_without_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert sorted(dagbag.dag_ids) == sorted(PIPELINES)


@pytest.mark.parametrize("dag_id", sorted(PIPELINES))
def test_dag_shape(dagbag, dag_id: str) -> None:
    dag = dagbag.dags[dag_id]
    assert "mlopsctl" in dag.tags
    assert "compute:local" in dag.tags  # where the tasks run, for the CLI to read over REST (MLOPSCTL_COMPUTE unset)
    assert dag.schedule is None or str(dag.timetable.summary) in ("None", "Never, external triggers only")
    assert dag.catchup is False
    assert dag.start_date.tzinfo is not None
    assert dag.doc_md and dag_id in dag.doc_md
    assert [t.task_id for t in dag.topological_sort()] == PIPELINES[dag_id]
    chain = [dag.get_task(t) for t in PIPELINES[dag_id]]
    for before, task in itertools.pairwise(chain):
        assert task.upstream_task_ids == {before.task_id}
    for task in dag.tasks:
        assert task.retries >= 1, task.task_id
        assert task.retry_delay.total_seconds() <= 120
        assert task.execution_timeout is not None


@pytest.mark.parametrize("dag_id", sorted(PIPELINES))
def test_params_match_the_contract(dagbag, dag_id: str) -> None:
    dag = dagbag.dags[dag_id]
    expected = CONTRACT[dag_id if dag_id in CONTRACT else "grid"]
    assert set(dag.params.keys()) == set(expected)
    for name, (schema, default) in expected.items():
        param = dag.params.get_param(name)
        assert param.value == default, name
        for key, value in schema.items():
            assert param.schema.get(key) == value, (name, key)


@pytest.mark.parametrize(
    ("dag_id", "conf"),
    [
        ("build_model", {"max_depth": 0}),
        ("build_model", {"max_depth": "abc"}),
        ("build_model", {"n_estimators": 5001}),
        ("build_model", {"test_size": 1}),
        ("build_model", {"test_size": 0}),
        ("build_model", {"random_state": -1}),
        ("build_model", {"random_state": 2**32}),
        ("grid_search", {"random_state": 2**32}),
        ("grid_search", {"max_depth": []}),
        ("grid_search", {"max_depth": [80, 80]}),
        ("grid_search", {"n_estimators": [0, 5]}),
        ("grid_search_spark", {"cv": 1}),
        ("grid_search_spark", {"cv": 21}),
        ("evaluate_model", {"model_version": 0}),
        ("evaluate_model", {"alias": "a.b"}),
        ("evaluate_model", {"model_name": ""}),
    ],
)
def test_bad_conf_is_rejected_by_the_params(dagbag, dag_id: str, conf: dict[str, Any]) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    params = copy.deepcopy(dagbag.dags[dag_id].params)
    with pytest.raises(ParamValidationError):
        for key, value in conf.items():
            params[key] = value
        params.validate()


def _resolved(dag, conf: dict[str, Any]) -> dict[str, Any]:
    params = copy.deepcopy(dag.params)
    for key, value in conf.items():
        params[key] = value
    return params.validate()


def test_no_connection_variable_or_subprocess_at_parse_time(airflow_home, monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_HOME", str(airflow_home))
    calls: list[str] = []

    def forbidden(name: str):
        def _raise(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            raise AssertionError(f"{name} called while parsing DAGs")
        return _raise

    from airflow.sdk import Connection, Variable

    monkeypatch.setattr(Connection, "get", classmethod(forbidden("Connection.get")))
    monkeypatch.setattr(Variable, "get", staticmethod(forbidden("Variable.get")))
    monkeypatch.setattr(Variable, "set", staticmethod(forbidden("Variable.set")))
    monkeypatch.setattr(subprocess, "Popen", forbidden("subprocess.Popen"))
    for mod in [m for m in list(__import__("sys").modules) if m == "common" or m.startswith("common.")]:
        monkeypatch.delitem(__import__("sys").modules, mod)
    bag = parse_dags()
    assert bag.import_errors == {}
    assert calls == []
    assert sorted(bag.dag_ids) == sorted(PIPELINES)


def _render(dag, task_id: str, conf: dict[str, Any], env: dict[str, str], monkeypatch) -> list[str]:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    task = dag.get_task(task_id)

    class _TI:
        try_number = 2

    context = {"dag": dag, "run_id": "manual__2026-11-24T03:00:00+00:00", "ti": _TI(), "params": _resolved(dag, conf)}
    jinja_env = dag.get_template_env()
    return [task.render_template(a, context, jinja_env) for a in task.arguments]


def _opts(argv: list[str]) -> dict[str, str]:
    return dict(zip(argv[::2], argv[1::2]))


def test_build_model_renders_the_seed_conf_exactly(dagbag, monkeypatch) -> None:
    weird = "/data dir/it's \"x\"; $(touch /tmp/pwned) `id` {{ 7*7 }}.csv"
    argv = _render(
        dagbag.dags["build_model"], "train_model",
        {"max_depth": 80, "n_estimators": 100, "data": weird, "target": "y col"},
        {"MLOPSCTL_WORK_DIR": "/w", "MLOPSCTL_MLFLOW_TRACKING_URI": "http://127.0.0.1:5999",
         "MLOPSCTL_MLFLOW_EXPERIMENT_PREFIX": "/team"},
        monkeypatch,
    )
    opts = _opts(argv)
    assert opts["--max-depth"] == "80" and opts["--n-estimators"] == "100"
    assert opts["--data"] == weird  # rendered once: the user's braces are not evaluated
    assert opts["--target"] == "y col"
    assert opts["--run-id"] == "manual__2026-11-24T03:00:00+00:00"
    assert opts["--dag-id"] == "build_model"
    assert opts["--try-number"] == "2"
    assert opts["--work-dir"] == "/w"
    assert opts["--tracking-uri"] == "http://127.0.0.1:5999"
    assert opts["--experiment-prefix"] == "/team"
    assert opts["--test-size"] == "0.2" and opts["--random-state"] == "42"
    assert opts["--register-model"] == "mlopsctl-random-forest"


def test_null_data_and_no_registration_render_empty(dagbag, monkeypatch) -> None:
    argv = _render(dagbag.dags["build_model"], "preprocess_data", {"data": None}, {}, monkeypatch)
    assert _opts(argv)["--data"] == ""
    argv = _render(dagbag.dags["build_model"], "train_model", {"register_model": None}, {}, monkeypatch)
    assert _opts(argv)["--register-model"] == ""


def test_grid_renders_lists(dagbag, monkeypatch) -> None:
    for dag_id in ("grid_search", "grid_search_spark"):
        argv = _render(dagbag.dags[dag_id], dag_id, {"max_depth": [5, 80], "n_estimators": [20], "cv": 2}, {},
                       monkeypatch)
        opts = _opts(argv)
        assert (opts["--max-depth"], opts["--n-estimators"], opts["--cv"]) == ("5,80", "20", "2")


def test_defaults_render_the_default_grid(dagbag, monkeypatch) -> None:
    opts = _opts(_render(dagbag.dags["grid_search"], "grid_search", {}, {}, monkeypatch))
    assert json.loads(f"[{opts['--max-depth']}]") == [80, 90, 100, 110]
    assert json.loads(f"[{opts['--n-estimators']}]") == [100, 200, 300]


def test_evaluate_model_renders_the_conf_exactly(dagbag, monkeypatch) -> None:
    dag = dagbag.dags["evaluate_model"]
    opts = _opts(_render(dag, "evaluate_model", {"model_name": "main.ml.rf", "model_version": 3, "alias": "prod",
                                                 "data": "main.ml.holdout"}, {"MLOPSCTL_WORK_DIR": "/w"}, monkeypatch))
    assert (opts["--model-name"], opts["--model-version"], opts["--alias"]) == ("main.ml.rf", "3", "prod")
    assert (opts["--data"], opts["--dag-id"], opts["--work-dir"]) == ("main.ml.holdout", "evaluate_model", "/w")
    opts = _opts(_render(dag, "evaluate_model", {"model_version": 1}, {}, monkeypatch))
    assert (opts["--data"], opts["--alias"]) == ("", "champion")


def test_dag_files_read_no_clock_or_variable_at_parse_time() -> None:
    """Nothing that belongs to a run is read when Airflow parses the DAG files. (That the DAG package imports
    nothing from mlopsctl, which the Dockerfile's image lacks, is tests/unit/test_import_graph.py's.)"""
    # the DAG files and the modules they always import (the Databricks backend is checked by its own tests)
    common = ("compute.py", "params.py", "launcher_client.py", "localspark.py")
    for path in [*DAGS_DIR.glob("*.py"), *(DAGS_DIR / "common" / name for name in common)]:
        text = path.read_text()
        assert "datetime.now" not in text and "Variable.get" not in text, path


def test_the_dags_publish_databricks_compute_as_a_tag(airflow_home, monkeypatch) -> None:
    """The CLI refuses a local --data path before triggering a DAG tagged compute:databricks."""
    monkeypatch.setenv("AIRFLOW_HOME", str(airflow_home))
    monkeypatch.setenv("MLOPSCTL_COMPUTE", "databricks")
    bag = parse_dags()
    assert bag.import_errors == {}
    assert {dag_id: [t for t in dag.tags if t.startswith("compute:")] for dag_id, dag in bag.dags.items()} == {
        dag_id: ["compute:databricks"] for dag_id in PIPELINES
    }
