"""`mlopsctl promote`: gate parsing and reserved aliases (exit 2 before any call), judging, the Unity Catalog
legality of the record's tag keys, and the whole flow against a real MLflow registry (a sqlite store) with a
fake Airflow whose trigger runs the real evaluate_model job in-process (no Spark: the default evaluation data is
the candidate's logged split). Live runs: tests/integration/test_cli_e2e.py."""

from __future__ import annotations

import ast
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlopsctl import promotion
from mlopsctl.appcontext import Environment
from mlopsctl.errors import ExitCode, GateFailedError, RejectedError
from mlopsctl.promotion import BeatChampion, Evaluation, Gate, judge, parse_beat, parse_gate, record_keys
from mlopsctl.tracking import ModelVersion, Tracking
from tests.fixtures.fakes import FakeAirflow
from tests.fixtures.raw_model import register_raw_version

REPO = Path(__file__).resolve().parents[2]
JOBS = REPO / "spark_jobs"


def _constants(path: Path) -> dict[str, Any]:
    out = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                out[getattr(target, "id", None)] = node.value.value
    return out


# --- pure parts --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "gate"), [("rmse<=55", Gate("rmse", "<=", 55.0)), (" r2 >= 0.4 ", Gate("r2", ">=", 0.4)),
                                            ("MAE<=1e2", Gate("mae", "<=", 100.0))])
def test_gates_parse(text: str, gate: Gate) -> None:
    assert parse_gate(text) == gate


@pytest.mark.parametrize("text", ["rmse<55", "rmse==55", "rmse=>55", "rmse<=", "<=55", "rmse<=abc", "auc>=0.5"])
def test_bad_gates_are_usage_errors(text: str) -> None:
    with pytest.raises(promotion.InputError):
        parse_gate(text)


def test_beat_champion_parses_and_bounds_each_direction() -> None:
    assert parse_beat("rmse:2%") == BeatChampion("rmse", 2.0)
    assert BeatChampion("rmse", 2.0).bound(50.0) == ("<=", 49.0)
    assert BeatChampion("r2", 10.0).bound(0.5) == (">=", pytest.approx(0.55))
    for bad in ("rmse:2", "rmse", "auc:2%", "rmse:-2%"):
        with pytest.raises(promotion.InputError):
            parse_beat(bad)


def test_judging_inclusive_bounds_missing_metrics_and_no_holder() -> None:
    ev = Evaluation("r", "2", None, {"rmse": 55.0, "r2": 0.4}, None)
    results = judge(ev, [Gate("rmse", "<=", 55.0), Gate("r2", ">=", 0.41), Gate("mae", "<=", 9.0)],
                    [BeatChampion("rmse", 5.0)])
    assert [r.passed for r in results] == [True, False, False, True]
    assert results[2].note == "not evaluated" and results[3].note == "no current holder"
    ev = Evaluation("r", "2", "1", {"rmse": 49.0}, {"rmse": 50.0})
    assert [r.passed for r in judge(ev, [], [BeatChampion("rmse", 2.0), BeatChampion("rmse", 3.0)])] == [True, False]


@pytest.mark.parametrize("alias", ["champion", "Champion-2", "prod_a"])
def test_record_keys_are_legal_unity_catalog_tag_keys(alias: str) -> None:
    from tests.fixtures.databricks.rules import uc_tag_key_problem

    keys = record_keys(alias)
    assert all(uc_tag_key_problem(k) is None for k in keys.values()), keys
    assert keys["prev"] == promotion.uc_tag_key(f"mlopsctl_prev_{alias}")
    assert record_keys("champion")["prev"] == "mlopsctl_prev_champion"


def test_the_gate_summary_fits_a_unity_catalog_tag_value() -> None:
    from tests.fixtures.databricks.rules import UC_TAG_VALUE_MAX

    results = [promotion.GateResult(f"rmse<={i}", "rmse", 1.0, "<=", float(i), i >= 1) for i in range(300)]
    text = promotion.gates_summary(results)
    assert len(text) == UC_TAG_VALUE_MAX and text.startswith("rmse<=0 fail (1); rmse<=1 pass (1)")
    assert text.endswith("...")
    assert promotion.gates_summary(results[:3]) == "rmse<=0 fail (1); rmse<=1 pass (1); rmse<=2 pass (1)"


def test_the_cli_copies_of_the_jobs_constants_agree() -> None:
    jobs_tracking = _constants(JOBS / "mlopsctl_jobs" / "tracking.py")
    jobs_eval = _constants(JOBS / "mlopsctl_jobs" / "evaluate.py")
    assert promotion.UC_TAG_KEY_MAX == jobs_tracking["UC_TAG_KEY_MAX"]
    assert (promotion.CANDIDATE_TAG, promotion.CHAMPION_TAG) == (jobs_eval["CANDIDATE_TAG"], jobs_eval["CHAMPION_TAG"])
    assert jobs_eval["ROLE"] == next(p.result for p in __import__("mlopsctl.pipelines").pipelines.PIPELINES.values()
                                     if p.dag_id == "evaluate_model")
    sys.path.insert(0, str(JOBS))
    try:
        from mlopsctl_jobs.evaluate import METRICS
        from mlopsctl_jobs.tracking import uc_tag_key
    finally:
        sys.path.remove(str(JOBS))
    assert sorted(METRICS.values()) == sorted(promotion.GATE_METRICS)
    for key in ("a.b-c=d/e:f,g", " x ", "mlopsctl_prev_champion-2", "y" * 300):
        assert promotion.uc_tag_key(key) == uc_tag_key(key)


class _Registry:
    """The registry reads `Promoter.plan` makes, for one candidate version holding `tags` and no alias yet."""

    def __init__(self, in_unity_catalog: bool, tags: dict[str, str]) -> None:
        self.in_unity_catalog = in_unity_catalog
        self.tags = tags

    def raw_input_version(self, ref: str, *, action: str) -> ModelVersion:
        name, _, version = ref.rpartition("/")
        return ModelVersion(name, version, tags=dict(self.tags))

    def model_aliases(self, name: str) -> dict[str, str]:
        return {}


def _tags(n: int, **extra: str) -> dict[str, str]:
    return {**{f"team_tag_{i}": "x" for i in range(n - len(extra))}, **extra}


def test_promote_refuses_before_evaluating_when_unity_catalog_would_refuse_the_record() -> None:
    """rules.UC_TAG_COUNT: a version holds at most 50 tags in Unity Catalog, and a promotion's record adds 4."""
    from tests.fixtures.databricks.rules import UC_TAG_MAX_PER_OBJECT

    assert promotion.UC_TAGS_PER_VERSION == UC_TAG_MAX_PER_OBJECT
    uc = True
    with pytest.raises(RejectedError) as exc:
        promotion.Promoter(_Registry(uc, _tags(47))).plan("main.ml.m", "3", "champion", default_data=True)
    assert exc.value.exit_code == ExitCode.REJECTED
    assert "holds 47 tags" in str(exc.value) and "adds 4" in str(exc.value) and "at most 50" in str(exc.value)
    assert "mlopsctl_prev_<alias>" in (exc.value.hint or "")
    assert promotion.Promoter(_Registry(uc, _tags(46))).plan("main.ml.m", "3", "champion", default_data=True).holder is None
    # a record of the same alias is replaced, not added to
    held = _tags(50, **{key: "old" for key in record_keys("champion").values()})
    assert promotion.Promoter(_Registry(uc, held)).plan("main.ml.m", "3", "champion", default_data=True)
    with pytest.raises(RejectedError):
        promotion.Promoter(_Registry(uc, held)).plan("main.ml.m", "3", "challenger", default_data=True)
    # an MLflow server's registry keeps any number of tags
    assert promotion.Promoter(_Registry(False, _tags(60))).plan(
        "m", "3", "champion", default_data=True)


def test_gate_failed_is_exit_13() -> None:
    assert ExitCode.GATE_FAILED == 13 and GateFailedError("x").exit_code == 13


@pytest.mark.parametrize("argv", [
    ["promote", "rf", "1", "--alias", "latest"], ["promote", "rf", "1", "--alias", "LaTeSt"],
    ["promote", "rf", "1", "--alias", "v2"], ["promote", "rf", "1", "--alias", "V10"],
    ["promote", "rf", "1", "--alias", "a.b"], ["promote", "rf", "1", "--gate", "rmse<55"],
    ["promote", "rf", "1", "--gate", "auc>=0.9"], ["promote", "rf", "1", "--beat-champion", "rmse:2"],
    ["promote", "rf", "x"], ["promote", "rf", "0"], ["promote", "rf"],
    ["promote", "rf", "1", "--rollback"], ["promote", "rf", "--rollback", "--gate", "rmse<=1"],
])
def test_usage_errors_exit_2_before_any_call(cli, argv: list[str]) -> None:
    calls: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(500)

    def tracking(settings) -> Tracking:
        raise AssertionError("no MLflow call for a usage error")

    env = Environment(settings={"airflow_password": "pw", "retries": 0}, airflow_transport=httpx.MockTransport(record),
                      tracking=tracking)
    code, _out, err = cli(*argv, environment=env)
    assert code == ExitCode.USAGE, err
    assert calls == [] and err.strip()


# --- the flow, on a real registry ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Model `rf`: versions 1 and 2 take raw rows (2 is the better fit), 3 takes cleaned features, 4 needs a
    column (floor) the others lack."""
    import mlflow

    home = tmp_path_factory.mktemp("promote")
    uri = f"sqlite:///{home / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = mlflow.MlflowClient(uri, uri)
    exp = "/mlopsctl/build_model"
    client.create_experiment(exp, artifact_location=(home / "artifacts").as_uri())
    assert register_raw_version(exp, "rf", n_estimators=2) == "1"
    assert register_raw_version(exp, "rf", n_estimators=40) == "2"
    assert register_raw_version(exp, "rf", n_estimators=3, raw=False) == "3"
    assert register_raw_version(exp, "rf", n_estimators=5, extra=True) == "4"
    return uri


class EvaluatingAirflow(FakeAirflow):
    """A fake Airflow whose trigger of evaluate_model runs the real job in-process against the registry; the
    run then ends success, or failed when the job stopped on bad data. `after_job` runs once the job is done
    (e.g. to move the alias behind promote's back)."""

    def __init__(self, registry: str) -> None:
        super().__init__(paused=False, steps=1, loaded=("evaluate_model",))
        self.registry = registry
        self.after_job: Any = None
        self.job_exits: list[int] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        response = super().__call__(request)
        if request.method == "POST" and request.url.path.endswith("/evaluate_model/dagRuns"):
            body = json.loads(request.content)
            run = self.runs[body["dag_run_id"]]
            run["final"] = "success" if self._job(body["dag_run_id"], body["conf"]) == 0 else "failed"
            if self.after_job:
                self.after_job()
        return response

    def _job(self, dag_run_id: str, conf: dict[str, Any]) -> int:
        sys.path.insert(0, str(JOBS))
        try:
            import evaluate_model

            argv = ["--dag-id", "evaluate_model", "--run-id", dag_run_id, "--try-number", "1", "--work-dir", "/tmp",
                    "--tracking-uri", self.registry, "--registry-uri", self.registry, "--model-name",
                    conf["model_name"], "--model-version", str(conf["model_version"]), "--alias", conf["alias"],
                    "--data", conf["data"] or ""]
            try:
                with contextlib.redirect_stdout(sys.stderr):  # the job's output is the task log, not the CLI's
                    evaluate_model.main(argv)
                code = 0
            except SystemExit as exc:
                code = int(exc.code or 0)
        finally:
            sys.path.remove(str(JOBS))
        self.job_exits.append(code)
        return code

    def _state(self, run: dict) -> str:
        return run["state"] if run["polls"] == 0 else run.get("final", self.final)

    def _tasks(self, run: dict) -> list[dict]:
        state = self._state(run)
        state = state if state in ("success", "failed") else "running"
        return [{"task_id": "evaluate_model", "state": state, "try_number": 1, "map_index": -1, "duration": 2.0}]


@pytest.fixture
def airflow(registry: str, monkeypatch: pytest.MonkeyPatch) -> EvaluatingAirflow:
    monkeypatch.setattr("time.sleep", lambda s: None)
    return EvaluatingAirflow(registry)


@pytest.fixture
def environment(registry: str, airflow: EvaluatingAirflow, project: Path) -> Environment:
    return Environment(settings={"airflow_password": "pw", "retries": 0},
                       airflow_transport=httpx.MockTransport(airflow), tracking=lambda settings: Tracking(registry))


def _state(registry: str, version: str = "1") -> tuple[dict[str, str], dict[str, str]]:
    """(aliases of rf, the promotion tags of `version`)."""
    from mlflow import MlflowClient

    client = MlflowClient(registry, registry)
    tags = client.get_model_version("rf", version).tags
    aliases = {a: str(v) for a, v in client.get_registered_model("rf").aliases.items()}
    return aliases, {k: v for k, v in tags.items() if k.startswith("mlopsctl_")
                                                             and k not in ("mlopsctl_input", "mlopsctl_target")}


def test_promote_gate_fail_then_pass_then_beat_then_rollback(cli, registry: str, airflow: EvaluatingAirflow) -> None:
    # a failing gate: exit 13, nothing changed, both the table and the gate shown
    code, out, err = cli("promote", "rf", "1", "--gate", "rmse<=0.0001", "--yes")
    assert code == ExitCode.GATE_FAILED, err
    assert "FAIL" in out and "rmse<=0.0001" in out and "candidate v1" in out and "Nothing changed" in err
    assert _state(registry) == ({}, {})
    # a passing gate and no holder: champion -> 1, the record on version 1
    code, out, err = cli("promote", "rf", "1", "--gate", "rmse<=1000", "--beat-champion", "rmse:2%", "--yes", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["promoted"] is True and doc["previous"] is None and doc["evaluation"]["champion"] is None
    assert set(doc["evaluation"]["candidate"]) == {"rmse", "mae", "r2"}
    aliases, tags = _state(registry, "1")
    assert aliases == {"champion": "1"}
    assert tags["mlopsctl_prev_champion"] == "none" and tags["mlopsctl_eval_run_champion"] == doc["evaluation"]["run_id"]
    assert tags["mlopsctl_gates_champion"].startswith("rmse<=1000 pass") and tags["mlopsctl_promoted_at_champion"]
    # a dry run judges version 2 beside version 1, and moves nothing
    code, out, err = cli("promote", "rf", "2", "--dry-run", "--gate", "r2>=-100", "--beat-champion", "mae:1%")
    assert code == 0, err
    assert "candidate v2" in out and "champion v1" in out and "Dry run" in out
    assert _state(registry, "2") == ({"champion": "1"}, {})
    # version 2 beats version 1 (a better fit on the same rows): champion -> 2, version 1 recorded before it
    code, out, err = cli("promote", "rf", "2", "--beat-champion", "rmse:0%", "--yes", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["evaluation"]["champion_version"] == "1" and doc["evaluation"]["candidate"]["rmse"] <= doc[
        "evaluation"]["champion"]["rmse"]
    assert _state(registry, "2")[0] == {"champion": "2"}
    assert _state(registry, "2")[1]["mlopsctl_prev_champion"] == "1"
    # the same version again: nothing to do, no run
    posts = len(airflow.runs)
    code, out, _ = cli("promote", "rf", "2", "--yes")
    assert code == 0 and "already holds" in out and len(airflow.runs) == posts
    # rollback: back to 1; again: version 1 has no previous holder -> 6
    code, out, err = cli("promote", "rf", "--alias", "champion", "--rollback", "--yes")
    assert code == 0, err
    assert "Rolled back" in out and _state(registry)[0] == {"champion": "1"}
    code, out, err = cli("promote", "rf", "--rollback", "--yes")
    assert code == ExitCode.NOT_FOUND and "no record of a previous champion" in err
    code, _, err = cli("promote", "rf", "--alias", "nobody", "--rollback", "--yes")
    assert code == ExitCode.NOT_FOUND and "no alias 'nobody'" in err


def test_the_alias_moving_during_the_evaluation_is_refused(cli, registry: str, airflow: EvaluatingAirflow) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(registry, registry)
    client.set_registered_model_alias("rf", "staging", "1")
    airflow.after_job = lambda: client.set_registered_model_alias("rf", "staging", "4")
    code, _out, err = cli("promote", "rf", "2", "--alias", "staging", "--yes")
    assert code == ExitCode.REJECTED and "moved while version 2 was evaluated" in err, err
    assert str(client.get_registered_model("rf").aliases["staging"]) == "4"
    assert "mlopsctl_prev_staging" not in client.get_model_version("rf", "2").tags


@pytest.mark.parametrize(("argv", "code", "needle"), [
    (["promote", "rf", "3", "--yes"], ExitCode.USAGE, "takes cleaned features"),
    (["promote", "rf", "9", "--yes"], ExitCode.NOT_FOUND, "No version 9"),
    (["promote", "nosuch", "1", "--yes"], ExitCode.NOT_FOUND, "No registered model 'nosuch'"),
])
def test_bad_versions_are_refused_before_any_run(cli, airflow: EvaluatingAirflow, argv, code, needle) -> None:
    got, _, err = cli(*argv)
    assert got == code and needle in err, err
    assert airflow.runs == {}


def test_a_holder_that_needs_columns_the_split_lacks_is_refused(cli, registry: str, airflow: EvaluatingAirflow) -> None:
    from mlflow import MlflowClient

    MlflowClient(registry, registry).set_registered_model_alias("rf", "wide", "4")
    code, _, err = cli("promote", "rf", "1", "--alias", "wide", "--yes")
    assert code == ExitCode.USAGE and "floor" in err and "--eval-data" in err, err
    assert airflow.runs == {}


def test_the_job_refuses_a_holder_that_cannot_score_the_rows(registry: str, airflow: EvaluatingAirflow,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """The job's own checks (the CLI's are above): the run fails with one clear line, exit 3, nothing logged."""
    from mlflow import MlflowClient

    MlflowClient(registry, registry).set_registered_model_alias("rf", "wide2", "4")
    assert airflow._job("manual__wide", {"model_name": "rf", "model_version": 1, "alias": "wide2", "data": None}) == 3
    assert "the champion (version 4) cannot score" in capsys.readouterr().err
    assert airflow._job("manual__old", {"model_name": "rf", "model_version": 3, "alias": "x", "data": None}) == 3
    assert ("version 3 of registered model 'rf' takes cleaned features, not raw rows: it lacks the version tag "
            "mlopsctl_input=raw") in capsys.readouterr().err


def test_a_registry_that_refuses_the_record_leaves_the_alias_where_it_was(
        cli, registry: str, airflow: EvaluatingAirflow, monkeypatch: pytest.MonkeyPatch) -> None:
    """The record is written before the alias moves: a refused tag (a Unity Catalog limit) moves nothing."""
    from mlflow import MlflowClient

    from mlopsctl.tracking import TrackingError

    def refuse(self, name, version, tags) -> None:
        raise TrackingError("MLflow model-versions/set-tag returned HTTP 400: Invalid tag: too many tags.")

    monkeypatch.setattr(Tracking, "set_version_tags", refuse)
    client = MlflowClient(registry, registry)
    client.set_registered_model_alias("rf", "refused", "1")
    code, _, err = cli("promote", "rf", "2", "--alias", "refused", "--yes")
    assert code == TrackingError.exit_code and "too many tags" in err, err
    assert str(client.get_registered_model("rf").aliases["refused"]) == "1"


def test_on_a_terminal_a_no_moves_nothing(cli, registry: str, airflow: EvaluatingAirflow,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --yes on a terminal promote asks before moving; a no leaves the alias and the tags as they were."""
    from mlflow import MlflowClient

    asked: list[str] = []
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("typer.confirm", lambda question, **kw: asked.append(question) or False)
    client = MlflowClient(registry, registry)
    client.set_registered_model_alias("rf", "asked", "1")
    code, _, _ = cli("promote", "rf", "2", "--alias", "asked")
    assert code == ExitCode.INTERRUPTED and asked == ["Move asked of rf from version 1 to version 2?"]
    assert str(client.get_registered_model("rf").aliases["asked"]) == "1"
    assert "mlopsctl_prev_asked" not in client.get_model_version("rf", "2").tags


def test_a_failed_evaluation_run_exits_run_failed_with_its_log_tail(cli, registry: str, airflow: EvaluatingAirflow,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The evaluation is followed as `run` follows: the trigger line, then for a failed run the tasks and the
    failed task's log tail, exit 8 (one JSON document with --json); the alias stays where it was."""
    monkeypatch.setattr(airflow, "_job", lambda dag_run_id, conf: 3)
    code, out, err = cli("promote", "rf", "1", "--alias", "failing", "--yes")
    assert code == ExitCode.RUN_FAILED, err
    assert "Evaluating in evaluate_model run" in err and "ended failed: task 'evaluate_model' failed" in err
    assert "Task evaluate_model failed; last" in out and "KeyError: 'target'" in out
    assert "mlopsctl logs " in err and "--task evaluate_model" in err
    code, out, err = cli("promote", "rf", "1", "--alias", "failing", "--yes", "--json")
    assert code == ExitCode.RUN_FAILED, err
    doc = json.loads(out)
    assert doc["state"] == "failed" and doc["dag_id"] == "evaluate_model" and doc["failed_task"] == "evaluate_model"
    aliases, tags = _state(registry)
    assert "failing" not in aliases and "mlopsctl_prev_failing" not in tags


@pytest.mark.parametrize(("stop", "code", "needle"), [
    ("timeout", ExitCode.TIMEOUT, "still running after"),
    ("ctrl-c", ExitCode.INTERRUPTED, "Stopped following run"),
])
def test_an_evaluation_not_waited_for_says_how_to_reattach(cli, registry: str, airflow: EvaluatingAirflow,
                                                          monkeypatch: pytest.MonkeyPatch, stop, code, needle) -> None:
    """--timeout or Ctrl-C while the evaluation runs: the run keeps going, the message says how to reattach, and
    nothing moved."""
    monkeypatch.setattr(airflow, "_job", lambda dag_run_id, conf: 0)
    monkeypatch.setattr(airflow, "_state", lambda run: "running")
    alias = f"waited_{stop.replace('-', '_')}"
    argv = ["promote", "rf", "1", "--alias", alias, "--yes"]
    if stop == "timeout":
        argv += ["--timeout", "1e-9"]
    else:
        def interrupt(seconds: float) -> None:
            raise KeyboardInterrupt

        monkeypatch.setattr("time.sleep", interrupt)
    got, _, err = cli(*argv)
    (rid,) = airflow.runs  # a fresh fake Airflow per test
    assert got == code and needle in err and f"Reattach with: mlopsctl status {rid} --wait" in err, err
    aliases, tags = _state(registry)
    assert alias not in aliases and f"mlopsctl_prev_{alias}" not in tags
