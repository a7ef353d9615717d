"""Property tests (hypothesis): CLI input validation, and the conf -> job-argument round trip.

Round trip: what the user types on the command line goes through typer, mlopsctl's local validation,
Airflow's JSON conf, the DAG's Jinja-templated job arguments (rendered with the DAG's own template
environment, exactly as Airflow renders them), `job_argv()` (the argv list handed to spark-submit), and
finally the Spark job's own argparse parser. The namespace the job trains with must equal what was typed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import string
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mlopsctl.errors import ExitCode, InputError
from mlopsctl.pipelines import build_conf, param_schemas


def _range(pipeline: str, name: str) -> tuple[int, int]:
    """A Param's integer bounds from the DAG schema (a grid Param's per-point bounds)."""
    schema = param_schemas(pipeline)[name]
    schema = schema.get("items", schema)
    return schema["minimum"], schema["maximum"]


MAX_DEPTH_RANGE = _range("build-model", "max_depth")
N_ESTIMATORS_RANGE = _range("build-model", "n_estimators")
CV_RANGE = _range("grid-search", "cv")
assert (MAX_DEPTH_RANGE, N_ESTIMATORS_RANGE, CV_RANGE) == ((1, 1000), (1, 5000), (2, 20))
assert _range("grid-search", "max_depth") == MAX_DEPTH_RANGE and _range("grid-search", "n_estimators") == N_ESTIMATORS_RANGE

REPO = Path(__file__).resolve().parents[2]
SPARK_JOBS = REPO / "spark_jobs"
PURE = settings(deadline=None)  # the first example imports jsonschema
SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# --- strategies ----------------------------------------------------------------------------------------
# A user string that can travel as one argv item: no NUL (argv cannot hold it), no lone surrogates.
argv_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=40
).filter(lambda s: s.strip() != "")
nasty_text = st.one_of(
    argv_text,
    st.sampled_from(
        ["a b", "it's", 'say "hi"', "x;rm -rf /", "$(touch /tmp/pwned)", "`id`", "-x", "--target", "-1e5"]
    ),
)
file_name = st.text(
    alphabet=string.ascii_letters + string.digits + " '\";$()`&|<>!#-_=+,{}[]~%^", min_size=1, max_size=30
).filter(lambda s: s not in (".", "..") and s.strip() != "")


def _unique_ints(lo: int, hi: int) -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(lo, hi), min_size=1, max_size=6, unique=True)


# --- validation properties -----------------------------------------------------------------------------


@PURE
@given(st.integers(-10**30, 10**30))
def test_max_depth_accepts_exactly_the_range(value: int) -> None:
    lo, hi = MAX_DEPTH_RANGE
    if lo <= value <= hi:
        assert build_conf("build-model", max_depth=value)["max_depth"] == value
    else:
        with pytest.raises(InputError, match=rf"^--max-depth must be between 1 and 1000, got {value}\.$"):
            build_conf("build-model", max_depth=value)


@PURE
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_test_size_accepts_exactly_the_open_unit_interval(value: float) -> None:
    if value == value and 0 < value < 1:  # noqa: PLR0124 - NaN check
        assert build_conf("build-model", test_size=value)["test_size"] == value
    else:
        with pytest.raises(InputError, match=r"--test-size must be"):
            build_conf("build-model", test_size=value)


@PURE
@given(_unique_ints(*N_ESTIMATORS_RANGE), st.sampled_from([",", ", ", " ,", " , "]))
def test_grid_list_round_trips(values: list[int], sep: str) -> None:
    assert build_conf("grid-search", n_estimators=sep.join(map(str, values)))["n_estimators"] == values


@PURE
@given(_unique_ints(*MAX_DEPTH_RANGE), st.data())
def test_grid_list_with_a_duplicate_is_rejected_naming_the_value(values: list[int], data: st.DataObject) -> None:
    dup = data.draw(st.sampled_from(values))
    pos = data.draw(st.integers(0, len(values)))
    items = values[:pos] + [dup] + values[pos:]
    with pytest.raises(InputError, match=rf"--max-depth: {dup} appears more than once"):
        build_conf("grid-search", max_depth=",".join(map(str, items)))


@PURE
@given(st.lists(st.text(max_size=6), min_size=1, max_size=5))
def test_grid_list_of_arbitrary_text_is_either_valid_or_an_input_error(items: list[str]) -> None:
    text = ",".join(items)
    try:
        values = build_conf("grid-search", max_depth=text)["max_depth"]
    except InputError as exc:
        assert exc.exit_code == ExitCode.USAGE
        assert exc.message.startswith("--max-depth")
        return
    assert len(values) == len(set(values)) == len(items)
    assert all(MAX_DEPTH_RANGE[0] <= v <= MAX_DEPTH_RANGE[1] for v in values)
    assert values == [int(i.strip()) for i in items]


# --- the CLI: typed text -> conf (no request: launch is captured) ----------------------------------------


@pytest.fixture
def captured_launch(monkeypatch: pytest.MonkeyPatch, project: Path) -> list[dict[str, Any]]:
    """Replace the trigger/follow flow by a recorder of the (pipeline, conf) the command built."""
    import mlopsctl.commands._common as commands_common

    seen: list[dict[str, Any]] = []

    def launch(actx, pipeline, conf, **kwargs):
        seen.append({"dag_id": pipeline.dag_id, "conf": conf})

    monkeypatch.setattr(commands_common, "launch", launch)  # what `run build-model` and `grid-search` call
    return seen


DEAD = ("--airflow-url", "http://127.0.0.1:9")  # no request is sent: launch is captured


@SETTINGS
@given(text=st.text(max_size=12))
def test_any_max_depth_text_is_accepted_in_range_or_rejected_as_usage(
    text: str, captured_launch: list, cli
) -> None:
    captured_launch.clear()
    code, _, err = cli(*DEAD, "run", "build-model", f"--max-depth={text}")
    assert "Traceback" not in err
    if code == 0:
        assert captured_launch[-1]["conf"]["max_depth"] == int(text)
        assert 1 <= int(text) <= 1000
    else:
        assert code == ExitCode.USAGE, err
        assert captured_launch == []
        assert "max-depth" in err


@SETTINGS
@given(text=st.text(max_size=20))
def test_any_grid_text_is_accepted_as_a_unique_in_range_list_or_rejected_as_usage(
    text: str, captured_launch: list, cli
) -> None:
    captured_launch.clear()
    code, _, err = cli(*DEAD, "grid-search", f"--n-estimators={text}")
    assert "Traceback" not in err
    if code == 0:
        values = captured_launch[-1]["conf"]["n_estimators"]
        assert values and len(values) == len(set(values))
        assert all(1 <= v <= 5000 for v in values)
        assert values == [int(x) for x in text.split(",")]
    else:
        assert code == ExitCode.USAGE, err
        assert captured_launch == []


# --- conf -> job argv -> the job's argparse --------------------------------------------------------------


class _Parsed(Exception):
    def __init__(self, ns: argparse.Namespace):
        super().__init__("parsed")
        self.ns = ns


_JOBS: dict[str, Any] = {}


def _load_job(name: str) -> Any:
    """Import spark_jobs/<name>.py (once) under a private module name; its `import mlopsctl_jobs` resolves."""
    if name in _JOBS:
        return _JOBS[name]
    saved_path = list(sys.path)
    saved_mods = {k: sys.modules.pop(k) for k in list(sys.modules) if _is_jobs_package(k)}
    sys.path.insert(0, str(SPARK_JOBS))  # the jobs' package (mlopsctl_jobs) is a spark_jobs/ folder
    try:
        mod_name = f"_reliability_job_{name}"
        spec = importlib.util.spec_from_file_location(mod_name, SPARK_JOBS / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved_path
        for key in [k for k in sys.modules if _is_jobs_package(k)]:
            sys.modules.pop(key, None)
        sys.modules.update(saved_mods)
    _JOBS[name] = module
    return module


def _is_jobs_package(module: str) -> bool:
    return module == "mlopsctl_jobs" or module.startswith("mlopsctl_jobs.")


@pytest.fixture(scope="module")
def dags(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The real DAG objects, parsed from dags/ with Airflow's DagBag (as the dag-processor does)."""
    import os

    os.environ.setdefault("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow-home")))
    saved_path = list(sys.path)
    saved_common = {k: v for k, v in sys.modules.items() if k == "common" or k.startswith("common.")}
    for key in saved_common:
        del sys.modules[key]
    sys.path.insert(0, str(REPO / "dags"))
    try:
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=str(REPO / "dags"))
        assert not bag.import_errors, bag.import_errors
        from common import compute  # the copy the DAGs imported
    finally:
        sys.path[:] = saved_path  # dags/grid_search.py must not shadow spark_jobs/grid_search.py
    try:
        yield {"bag": bag, "compute": compute}
    finally:
        for key in [k for k in sys.modules if k == "common" or k.startswith("common.")]:
            del sys.modules[key]
        sys.modules.update(saved_common)


def job_namespace(dags: dict[str, Any], dag_id: str, task_id: str, conf: dict[str, Any]) -> argparse.Namespace:
    """Render the task's arguments for `conf` like Airflow does, build the argv, parse it with the job."""
    dag = dags["bag"].dags[dag_id]
    task = dag.get_task(task_id)
    params = {name: p.value for name, p in dag.params.items()}  # defaults ...
    params.update(json.loads(json.dumps(conf)))  # ... overridden by the conf, as stored by Airflow (JSON)
    context = {
        "params": params,
        "dag": dag,
        "run_id": "manual__2026-11-24T03:04:05+00:00",
        "ti": SimpleNamespace(try_number=1),
    }
    rendered = task.render_template(task.arguments, context, dag.get_template_env())
    assert all(isinstance(a, str) for a in rendered)
    argv = dags["compute"].job_argv(task.job, rendered, spark=task.spark, master="local[1]", jobs_dir=SPARK_JOBS)
    script_at = argv.index(str(SPARK_JOBS / task.job))
    job_args = argv[script_at + 1 :]
    module = _load_job(Path(task.job).stem)
    original = argparse.ArgumentParser.parse_args

    def spy(self, args=None, namespace=None):
        raise _Parsed(original(self, args, namespace))

    argparse.ArgumentParser.parse_args = spy  # type: ignore[method-assign]
    try:
        module.main(job_args)
    except _Parsed as parsed:
        return parsed.ns
    except SystemExit as exc:  # argparse refused the argv
        pytest.fail(f"{task.job} could not parse its argv (exit {exc.code}): {job_args!r}")
    finally:
        argparse.ArgumentParser.parse_args = original  # type: ignore[method-assign]
    pytest.fail(f"{task.job}.main() returned without parsing its arguments")


def _assert_common(ns: argparse.Namespace, conf: dict[str, Any]) -> None:
    assert ns.data == conf["data"]
    assert ns.target == conf["target"]
    assert ns.test_size == conf["test_size"]
    assert ns.random_state == conf["random_state"]
    assert ns.register_model == (conf["register_model"] or None)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data files")


def _build_round_trip(dags, data_dir: Path, captured: list, cli, *, max_depth: int = 80,
                      n_estimators: int = 100, test_size: float = 0.2, random_state: int = 42, target: str = "target",
                      register: str | None = None, name: str | None = None) -> None:
    argv = ["run", "build-model", f"--max-depth={max_depth}", f"--n-estimators={n_estimators}",
            f"--test-size={test_size!r}", f"--random-state={random_state}", f"--target={target}"]
    argv += ["--no-register"] if register is None else [f"--register={register}"]
    path = None
    if name is not None:
        path = data_dir / f"{name}.csv"
        path.write_text("x,target\n1,2\n")
        argv.append(f"--data={path}")
    captured.clear()
    code, _, err = cli(*DEAD, *argv)
    assert code == 0, err
    conf = captured[-1]["conf"]
    assert conf["max_depth"] == max_depth and conf["n_estimators"] == n_estimators
    assert conf["target"] == target and conf["test_size"] == test_size and conf["random_state"] == random_state
    assert conf["data"] == (str(path.resolve()) if path is not None else None)
    assert conf["register_model"] == (register.strip() if register is not None else None)

    train = job_namespace(dags, "build_model", "train_model", conf)
    assert (train.max_depth, train.n_estimators) == (max_depth, n_estimators)
    _assert_common(train, conf)
    prep = job_namespace(dags, "build_model", "preprocess_data", conf)
    assert (prep.data, prep.target) == (conf["data"], target)


@SETTINGS
@given(
    max_depth=st.integers(*MAX_DEPTH_RANGE),
    n_estimators=st.integers(*N_ESTIMATORS_RANGE),
    test_size=st.floats(0, 1, exclude_min=True, exclude_max=True),
    random_state=st.integers(0, 2**32 - 1),
    target=nasty_text,
    register=st.one_of(st.none(), nasty_text),
    name=st.one_of(st.none(), file_name),
)
def test_build_model_cli_to_job_round_trip(
    dags, data_dir: Path, captured_launch: list, cli, max_depth, n_estimators, test_size, random_state, target,
    register, name,
) -> None:
    assume(register is None or register.strip())
    _build_round_trip(dags, data_dir, captured_launch, cli, max_depth=max_depth, n_estimators=n_estimators,
                      test_size=test_size, random_state=random_state, target=target, register=register, name=name)


NASTY = ["a b", "it's", 'say "hi"', "x;rm -rf /", "$(touch /tmp/pwned)", "`id`", "-x", "--target", "-1e5", "- x",
         "None", "{{ params.max_depth }}", "a\nb", "  padded  ", "$HOME", "*", "\\"]
# Not in the list: a value of exactly "--" (Python 3.11's argparse drops it even in --flag=-- form).


@pytest.mark.parametrize("text", NASTY)
def test_nasty_strings_reach_the_job_unchanged(dags, data_dir: Path, captured_launch: list, cli, text: str) -> None:
    """Target, registered-model name and data path with quotes, `;`, `$(...)`, leading dashes: verbatim."""
    name = text.replace("/", "_").replace("\n", "_")
    _build_round_trip(dags, data_dir, captured_launch, cli, target=text, register=text, name=name)


@SETTINGS
@given(
    dag_id=st.sampled_from(["grid_search", "grid_search_spark"]),
    max_depth=_unique_ints(*MAX_DEPTH_RANGE),
    n_estimators=_unique_ints(*N_ESTIMATORS_RANGE),
    cv=st.integers(*CV_RANGE),
    target=nasty_text,
    random_state=st.integers(0, 2**32 - 1),
)
def test_grid_cli_to_job_round_trip(
    dags, captured_launch: list, cli, dag_id, max_depth, n_estimators, cv, target, random_state
) -> None:
    argv = ["grid-search", f"--max-depth={','.join(map(str, max_depth))}",
            f"--n-estimators={','.join(map(str, n_estimators))}", f"--cv={cv}", f"--target={target}",
            f"--random-state={random_state}"]
    if dag_id == "grid_search_spark":
        argv.append("--spark")
    captured_launch.clear()
    code, _, err = cli(*DEAD, *argv)
    assert code == 0, err
    conf = captured_launch[-1]["conf"]
    assert captured_launch[-1]["dag_id"] == dag_id
    ns = job_namespace(dags, dag_id, dag_id, conf)
    assert ns.max_depth == max_depth and ns.n_estimators == n_estimators and ns.cv == cv
    _assert_common(ns, conf)


@pytest.mark.parametrize("value", [0, 1, 2**31 - 1, 2**32 - 1])
def test_random_state_extremes_survive_the_job_parser(dags, value: int) -> None:
    from mlopsctl.pipelines import build_conf

    conf = build_conf("build-model", random_state=value)
    assert job_namespace(dags, "build_model", "train_model", conf).random_state == value
