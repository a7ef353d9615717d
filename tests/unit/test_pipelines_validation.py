"""Local validation applies the DAG Params contract; bad input exits USAGE and sends no request."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
import typer

from mlopsctl.appcontext import Environment
from mlopsctl.commands import _common
from mlopsctl.datasources import check_data
from mlopsctl.errors import ExitCode, InputError
from mlopsctl.pipelines import (
    PIPELINES,
    build_conf,
    default_registered_model,
    flag_for,
    get_pipeline,
    new_dag_run_id,
    param_schemas,
    register_value,
)


def test_registry_matches_the_contract() -> None:
    assert {p.name: p.dag_id for p in PIPELINES.values()} == {
        "build-model": "build_model", "grid-search": "grid_search", "grid-search-spark": "grid_search_spark",
        "evaluate-model": "evaluate_model",
        "score": "batch_score",
    }
    assert get_pipeline("grid_search").name == "grid-search"
    with pytest.raises(InputError, match="Unknown pipeline 'nope'") as info:
        get_pipeline("nope")
    assert "build-model" in (info.value.hint or "") and info.value.exit_code == ExitCode.USAGE


def test_the_registry_is_the_one_declaration() -> None:
    """PIPELINES is pipelines.json entry for entry; each entry's Params are its groups of params.json, in order;
    the listings, the status help and completion name every registered pipeline."""
    import json

    from mlopsctl.cli import app
    from mlopsctl.pipelines import PIPELINE_NAMES, complete_pipeline, dags_common_file

    entries = json.loads(dags_common_file("pipelines.json").read_text())["pipelines"]
    groups = json.loads(dags_common_file("params.json").read_text())
    assert [(e["name"], e["dag_id"], e["result"], e["key_metric"], e["help"]) for e in entries] == [
        (p.name, p.dag_id, p.result, p.key_metric, p.help) for p in PIPELINES.values()]
    for e in entries:
        expected = [name for group in e["params"] for name in groups[group]]
        assert list(param_schemas(e["name"])) == expected
    status = typer.main.get_command(app).commands["status"]
    help_text = next(p.help for p in status.params if "--pipeline" in p.opts)
    assert all(name in help_text for name in PIPELINE_NAMES)
    assert complete_pipeline("") == list(PIPELINE_NAMES)


def test_a_registered_pipeline_gets_its_params_as_options_and_the_run_options(monkeypatch) -> None:
    """A run-shaped command built for a pipeline has an option per Param (minus register_model, which is
    --register/--no-register) and the shared run options, each once; the command gets them as a RunRequest."""
    from typer.testing import CliRunner

    seen: list[_common.RunRequest] = []

    @_common.pipeline_command("grid-search")
    def command(ctx: typer.Context, request: _common.RunRequest, extra: int = 1) -> None:
        seen.append(request)
        assert extra == 7

    app = typer.Typer()
    app.command()(command)
    app.command("other")(lambda: None)
    options = [opt for p in typer.main.get_command(app).commands["command"].params for opt in p.opts]
    assert len(options) == len(set(options))
    assert [o for o in options if o.startswith("--") and "/" not in o] == [
        "--extra", "--max-depth", "--n-estimators", "--cv", "--data", "--target", "--na-values", "--test-size",
        "--random-state", "--register", "--no-register", "--no-wait", "--timeout", "--auto-unpause", "--json",
    ]
    result = CliRunner().invoke(app, ["command", "--extra", "7", "--cv", "4", "--no-wait", "--register", "m"])
    assert result.exit_code == 0, result.output
    [request] = seen
    assert request.values["cv"] == 4 and request.values["max_depth"] == "80,90,100,110"
    assert "register_model" not in request.values and request.register == "m" and request.no_wait


def test_default_build_conf_equals_the_dag_defaults() -> None:
    assert build_conf("build-model") == {
        "max_depth": 80, "n_estimators": 100, "data": None, "target": "target", "na_values": None, "test_size": 0.2,
        "random_state": 42, "register_model": "mlopsctl-random-forest",
    }


def test_default_grid_conf_equals_the_dag_defaults() -> None:
    conf = build_conf("grid-search")
    assert conf["max_depth"] == [80, 90, 100, 110] and conf["n_estimators"] == [100, 200, 300] and conf["cv"] == 3


def test_na_values_text_is_a_token_list() -> None:
    assert build_conf("build-model", na_values="NA, ?,-")["na_values"] == ["NA", "?", "-"]
    assert build_conf("build-model")["na_values"] is None
    with pytest.raises(InputError, match="--na-values needs at least one token"):
        build_conf("build-model", na_values=" , ")


@pytest.mark.parametrize(
    "text, expected", [("80,90,100", [80, 90, 100]), (" 3 , 5 ", [3, 5]), ("1", [1]), ("1000", [1000])]
)
def test_grid_list_text_ok(text: str, expected: list[int]) -> None:
    assert build_conf("grid-search", max_depth=text)["max_depth"] == expected


@pytest.mark.parametrize(
    "text, needle",
    [
        ("80,,90", "empty item at position 2"),
        (",80", "empty item at position 1"),
        ("80,", "empty item at position 2"),
        ("", "needs at least one value"),
        ("   ", "needs at least one value"),
        ("80,abc", "'abc' is not an integer"),
        ("8.5", "'8.5' is not an integer"),
        ("80,80", "80 appears more than once"),
        ("0,5", "0 is out of range"),
        ("1001", "1001 is out of range"),
        ("-3", "-3 is out of range"),
    ],
)
def test_grid_list_text_rejects(text: str, needle: str) -> None:
    with pytest.raises(InputError) as info:
        build_conf("grid-search", max_depth=text)
    assert needle in info.value.message and "--max-depth" in info.value.message


@pytest.mark.parametrize(
    "kwargs, flag",
    [
        ({"max_depth": 0}, "--max-depth"),
        ({"max_depth": 1001}, "--max-depth"),
        ({"n_estimators": 0}, "--n-estimators"),
        ({"n_estimators": 5001}, "--n-estimators"),
        ({"test_size": 0.0}, "--test-size"),
        ({"test_size": 1.0}, "--test-size"),
        ({"test_size": float("nan")}, "--test-size"),
        ({"random_state": -1}, "--random-state"),
        ({"random_state": 2**32}, "--random-state"),
        ({"max_depth": True}, "--max-depth"),
        ({"target": " "}, "--target"),
        ({"target": ""}, "--target"),
        ({"data": "/definitely/not/here.csv"}, "--data"),
    ],
)
def test_build_conf_rejects_naming_the_flag(kwargs: dict, flag: str) -> None:
    with pytest.raises(InputError) as info:
        build_conf("build-model", **kwargs)
    assert flag in info.value.message


@pytest.mark.parametrize(
    "kwargs, flag",
    [({"cv": 1}, "--cv"), ({"cv": 21}, "--cv"), ({"n_estimators": "10,5001"}, "--n-estimators"),
     ({"max_depth": [3, 3]}, "--max-depth")],
)
def test_grid_conf_rejects_naming_the_flag(kwargs: dict, flag: str) -> None:
    with pytest.raises(InputError) as info:
        build_conf("grid-search", **kwargs)
    assert flag in info.value.message


def test_messages_name_the_flag_and_the_schema_bounds() -> None:
    cases = [
        ("build-model", {"max_depth": 0}, "--max-depth must be between 1 and 1000, got 0."),
        ("build-model", {"test_size": 1.0}, "--test-size must be strictly between 0 and 1, got 1.0."),
        ("build-model", {"test_size": float("nan")}, "--test-size must be a number, got nan."),
        ("build-model", {"max_depth": "5"}, "--max-depth must be an integer, got '5'."),
        ("build-model", {"target": "  "}, "--target must not be empty or blank."),
        ("grid-search", {"n_estimators": [10, 5001]}, "--n-estimators: 5001 is out of range; values must be between 1 and 5000."),
        ("grid-search", {"max_depth": []}, "--max-depth needs at least one value, e.g. --max-depth 80,90,100,110."),
        ("grid-search", {"max_depth": "3,5,3"}, "--max-depth: 3 appears more than once in '3,5,3'; grid values must be unique."),
        ("grid-search", {"max_depth": [3, 5, 3]}, "--max-depth: 3 appears more than once; grid values must be unique."),
    ]
    for pipeline, kwargs, message in cases:
        with pytest.raises(InputError) as info:
            build_conf(pipeline, **kwargs)
        assert info.value.message == message, kwargs


def test_the_first_bad_param_in_dag_order_is_reported() -> None:
    with pytest.raises(InputError, match=r"^--max-depth must be") as info:
        build_conf("build-model", random_state=-1, test_size=2.0, max_depth=0)
    assert info.value.exit_code == ExitCode.USAGE


def test_flag_names_and_unknown_params() -> None:
    assert [flag_for(p) for p in param_schemas("grid-search")] == [
        "--max-depth", "--n-estimators", "--cv", "--data", "--target", "--na-values", "--test-size", "--random-state",
        "--register",
    ]
    with pytest.raises(TypeError, match="unknown build-model Params: cv"):
        build_conf("build-model", cv=3)


@pytest.mark.parametrize(("command", "pipeline"), [(("run", "build-model"), "build-model"),
                                                   (("grid-search",), "grid-search")])
def test_flag_defaults_and_advertised_ranges_are_the_schemas(command: tuple[str, ...], pipeline: str) -> None:
    """What --help promises (defaults, "(lo..hi)" ranges, the default model name) is the DAG's schema."""
    import re

    from mlopsctl.cli import app

    cmd = typer.main.get_command(app)
    for name in command:
        cmd = cmd.commands[name]
    options = {opt: p for p in cmd.params for opt in p.opts}
    for param, schema in param_schemas(pipeline).items():
        option = options[flag_for(param)]
        if param == "register_model":
            assert option.default is None and f"[default: {schema['default']}]" in option.help
            continue
        default = schema["default"]
        assert option.default == (",".join(map(str, default)) if isinstance(default, list) else default), param
        bounds = schema.get("items", schema)
        if "minimum" in bounds:
            advertised = re.search(r"\((?:each )?(\d+)\.\.(\d+)\)", option.help)
            assert advertised, (param, option.help)
            assert tuple(map(int, advertised.groups())) == (bounds["minimum"], bounds["maximum"]), param


def test_data_checks(tmp_path: Path) -> None:
    csv = tmp_path / "d.csv"
    csv.write_text("a,target\n1,2\n")
    assert check_data(str(csv)) == str(csv.resolve())
    txt = tmp_path / "d.txt"
    txt.write_text("x")
    with pytest.raises(InputError, match="not a CSV or Parquet"):
        check_data(str(txt))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="holds no .csv or .parquet"):
        check_data(str(empty))
    pq = tmp_path / "table"
    pq.mkdir()
    (pq / "part-0.parquet").write_bytes(b"PAR1")
    assert check_data(str(pq)) == str(pq.resolve())
    assert check_data("dbfs:/FileStore/x.csv") == "dbfs:/FileStore/x.csv"  # remote: passed through
    assert check_data(None) is None


def test_register_flags() -> None:
    assert register_value(None, False) == default_registered_model() == "mlopsctl-random-forest"
    assert register_value("m", False) == "m"
    assert register_value(None, True) is None
    with pytest.raises(InputError, match="mutually exclusive"):
        register_value("m", True)


def test_run_ids_are_unique_and_shaped() -> None:
    ids = {new_dag_run_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(i.startswith("mlopsctl__") and i.endswith(tuple("0123456789abcdef")) for i in ids)
    # Airflow's default [scheduler] allowed_run_id_pattern
    assert all(re.fullmatch(r"^[A-Za-z0-9_.~:+-]+$", i) for i in ids)


# --- through the CLI: exit USAGE and not one request -------------------------------------------------


@pytest.fixture
def recorded(project: Path) -> list[httpx.Request]:
    """Every request the Airflow client of `recording` sends (none should be)."""
    return []


@pytest.fixture
def recording(recorded: list[httpx.Request]) -> Environment:
    """An environment whose Airflow client records its requests in `recorded` and answers them 500."""

    def handler(request: httpx.Request) -> httpx.Response:
        recorded.append(request)
        return httpx.Response(500)

    return Environment(settings={"airflow_auth": "none", "retries": 0}, airflow_transport=httpx.MockTransport(handler))


BAD = [
    ["run", "build-model", "--max-depth", "0"],
    ["run", "build-model", "--max-depth", "abc"],
    ["run", "build-model", "--n-estimators", "5001"],
    ["run", "build-model", "--test-size", "1.5"],
    ["run", "build-model", "--data", "missing.csv"],
    ["run", "build-model", "--register", "x", "--no-register"],
    ["run", "build-model", "--timeout", "0"],
    ["grid-search", "--max-depth", "80,,90"],
    ["grid-search", "--max-depth", "80,80"],
    ["grid-search", "--n-estimators", "ten"],
    ["grid-search", "--n-estimators", ""],
    ["grid-search", "--cv", "1"],
    ["grid-search", "--spark", "--max-depth", "0,5"],
    ["status", "--pipeline", "nope"],
    ["status", "--limit", "0"],
    ["status", "--wait"],
    ["logs", "r1", "--try", "0"],
]


@pytest.mark.parametrize("argv", BAD, ids=[" ".join(a) for a in BAD])
def test_bad_input_exits_usage_without_a_request(argv: list[str], recording: Environment, recorded: list,
                                                 capsys) -> None:
    from mlopsctl.cli import main

    with pytest.raises(SystemExit) as info:
        main(["--airflow-url", "http://127.0.0.1:9", *argv], recording)
    assert info.value.code == ExitCode.USAGE
    assert recorded == []
    err = capsys.readouterr().err
    assert "Traceback" not in err
    flag = next((a for a in argv if a.startswith("--")), None)
    if flag and flag not in ("--spark",):
        assert flag in err or "--wait" in err or "'" in err  # the message names what was wrong


def test_pipeline_completion() -> None:
    from mlopsctl.pipelines import complete_pipeline

    assert complete_pipeline("grid") == ["grid-search", "grid-search-spark"]
    assert complete_pipeline("") == ["build-model", "grid-search", "grid-search-spark", "evaluate-model", "score"]
    assert complete_pipeline("x") == []
