"""The run/grid-search/status/logs/dags commands against a scripted fake Airflow (httpx.MockTransport).

The real stack is exercised in tests/integration/test_cli_e2e.py; these pin the flow and the output
contract (exit codes, one JSON document, log tail on failure, MLflow trouble = warning) quickly.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from mlopsctl.errors import ExitCode
from mlopsctl.tracking import Tracking
from tests.unit.test_tracking import BUILD, GRID, RID, FakeMlflow

API = "/api/v2"


class FakeAirflow:
    """Just enough of Airflow 3's REST API v2: dags, trigger, run state machine, task instances, logs."""

    def __init__(self, *, final: str = "success", paused: bool = True, steps: int = 3, loaded=("build_model", "grid_search")):
        self.final = final
        self.paused = {d: paused for d in loaded}
        self.steps = steps
        self.runs: dict[str, dict] = {}
        self.requests: list[httpx.Request] = []
        self.import_errors: list[dict] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        parts = request.url.path.removeprefix(API + "/").split("/")
        if request.url.path == "/auth/token":
            return httpx.Response(201, json={"access_token": "t"})
        if parts[0] == "importErrors":
            return httpx.Response(200, json={"import_errors": self.import_errors, "total_entries": len(self.import_errors)})
        if parts[0] != "dags" or len(parts) < 2:
            return httpx.Response(404, json={"detail": "nope"})
        dag_id = parts[1]
        if dag_id not in self.paused:
            return httpx.Response(404, json={"detail": f"The Dag with ID: `{dag_id}` was not found"})
        if len(parts) == 2:
            if request.method == "PATCH":
                self.paused[dag_id] = json.loads(request.content)["is_paused"]
            return httpx.Response(200, json={"dag_id": dag_id, "is_paused": self.paused[dag_id]})
        if len(parts) == 3 and parts[2] == "details":
            return httpx.Response(200, json={"dag_id": dag_id, "is_paused": self.paused[dag_id], "params": {},
                                             "fileloc": f"/p/dags/{dag_id}.py", "relative_fileloc": f"{dag_id}.py"})
        if len(parts) == 3 and parts[2] == "dagRuns":
            if request.method == "POST":
                body = json.loads(request.content)
                run = {"dag_run_id": body["dag_run_id"], "dag_id": dag_id, "state": "queued", "conf": body["conf"],
                       "logical_date": None, "polls": 0}
                self.runs[body["dag_run_id"]] = run
                return httpx.Response(200, json=self._public(run))
            runs = [self._public(r) for r in self.runs.values() if r["dag_id"] == dag_id]
            return httpx.Response(200, json={"dag_runs": runs, "total_entries": len(runs)})
        run = self.runs.get(parts[3])
        if run is None or run["dag_id"] != dag_id:
            return httpx.Response(404, json={"detail": "DagRun not found"})
        if len(parts) == 4:
            run["polls"] += 1
            return httpx.Response(200, json=self._public(run))
        if parts[4] == "taskInstances" and len(parts) == 5:
            return httpx.Response(200, json={"task_instances": self._tasks(run), "total_entries": 2})
        if parts[4] == "taskInstances" and parts[6] == "logs":
            return httpx.Response(200, json={
                "content": [{"event": f"line {i}", "level": "info", "logger": "task.stdout"} for i in range(40)]
                + [{"event": "KeyError: 'target'", "level": "error", "logger": "task"}],
                "continuation_token": None,
            })
        return httpx.Response(404, json={"detail": "?"})

    def _state(self, run: dict) -> str:
        return run["state"] if run["polls"] == 0 else ("running" if run["polls"] < self.steps else self.final)

    def _public(self, run: dict) -> dict:
        state = self._state(run)
        return {k: v for k, v in run.items() if k != "polls"} | {
            "state": state, "start_date": "2026-11-24T03:00:00Z",
            "end_date": "2026-11-24T03:00:12Z" if state in ("success", "failed") else None,
        }

    def _tasks(self, run: dict) -> list[dict]:
        state = self._state(run)
        if state == "success":
            states = ["success", "success"]
        elif state == "failed":
            states = ["success", "failed"]
        else:
            states = ["running", None]
        return [{"task_id": t, "state": s, "try_number": 1 if s else 0, "map_index": -1, "duration": 5.0 if s else None}
                for t, s in zip(["preprocess_data", "train_model"], states)]


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch, project: Path):
    from mlopsctl.airflow.client import AirflowClient
    from mlopsctl.context import AppContext

    airflow = FakeAirflow()
    mlflow = FakeMlflow([BUILD, *GRID])
    state = {"mlflow_down": False}

    def from_settings(cls, settings):
        return cls(settings.airflow_url, auth="password", username="admin", password="pw",
                   transport=httpx.MockTransport(airflow), retries=0)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    def tracking(actx):
        return Tracking(actx.settings.mlflow_tracking_uri,
                        transport=httpx.MockTransport(refuse if state["mlflow_down"] else mlflow))

    monkeypatch.setattr(AirflowClient, "from_settings", classmethod(from_settings))
    monkeypatch.setattr(AppContext, "tracking", tracking)
    monkeypatch.setattr("time.sleep", lambda s: None)
    monkeypatch.setattr("mlopsctl.pipelines.new_dag_run_id", lambda: RID)
    return airflow, mlflow, state


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    from mlopsctl.cli import main

    with pytest.raises(SystemExit) as info:
        main(list(argv))
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def test_run_json_unpauses_triggers_follows_and_prints_mlflow_metrics(fakes, capsys) -> None:
    airflow, _, _ = fakes
    code, out, err = cli(capsys, "run", "build-model", "--max-depth", "80", "--n-estimators", "100", "--json")
    assert code == 0, err
    doc = json.loads(out)  # exactly one JSON document on stdout
    assert doc["state"] == "success" and doc["dag_run_id"] == RID
    assert doc["mlflow"]["run"]["metrics"] == {"rmse": 53.1, "mae": 43.2, "r2": 0.45}
    assert doc["mlflow"]["run"]["registered_model"] == {"name": "mlopsctl-random-forest", "version": "3"}
    assert doc["links"]["airflow"].endswith(f"/dags/build_model/runs/{RID}")
    assert doc["links"]["mlflow"] == "http://127.0.0.1:5000/#/experiments/1/runs/ef61"
    assert [t["state"] for t in doc["tasks"]] == ["success", "success"]
    assert airflow.paused["build_model"] is False
    posts = [r for r in airflow.requests if r.method == "POST" and r.url.path.endswith("/dagRuns")]
    assert len(posts) == 1
    sent = json.loads(posts[0].content)
    assert sent["dag_run_id"] == RID and sent["logical_date"] is None
    assert sent["conf"]["max_depth"] == 80 and sent["conf"]["n_estimators"] == 100


def test_run_tables_output(fakes, capsys) -> None:
    code, out, err = cli(capsys, "run", "build-model")
    assert code == 0, err
    for needle in ("build-model", RID, "rmse", "53.1000", "mlopsctl-random-forest version 3", "Airflow: http", "MLflow: http"):
        assert needle in out, needle
    assert "Unpaused DAG build_model" in err


def test_no_auto_unpause_warns_and_no_wait_returns_the_run_id(fakes, capsys) -> None:
    airflow, _, _ = fakes
    code, out, err = cli(capsys, "run", "build-model", "--no-auto-unpause", "--no-wait")
    assert code == 0
    assert out.strip() == RID
    assert "paused" in err and airflow.paused["build_model"] is True
    assert not any(r.url.path.endswith(RID) for r in airflow.requests)  # returned at once: no polling


def test_failed_run_exits_run_failed_with_the_task_and_log_tail(fakes, capsys) -> None:
    airflow, _, _ = fakes
    airflow.final = "failed"
    code, out, err = cli(capsys, "run", "build-model", "--json")
    assert code == ExitCode.RUN_FAILED
    doc = json.loads(out)
    assert doc["state"] == "failed" and doc["failed_task"] == "train_model"
    assert len(doc["log_tail"]) == 30 and doc["log_tail"][-1] == "[error] KeyError: 'target'"
    assert "task 'train_model' failed" in err and f"mlopsctl logs {RID} --task train_model" in err

    code, out, err = cli(capsys, "status", RID)
    assert code == 0 and "KeyError: 'target'" in out and "train_model" in out


def test_mlflow_unreachable_still_prints_the_airflow_result_with_a_warning(fakes, capsys) -> None:
    _, _, state = fakes
    state["mlflow_down"] = True
    code, out, err = cli(capsys, "run", "build-model", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["state"] == "success" and doc["mlflow"] is None
    assert "MLflow result unavailable" in doc["warnings"][0] and "Warning" in err


def test_dag_not_loaded_shows_the_import_error(fakes, capsys) -> None:
    airflow, _, _ = fakes
    airflow.import_errors = [{"filename": "/p/dags/grid_search_spark.py", "stack_trace": "Traceback...\nSyntaxError: bad"}]
    code, _, err = cli(capsys, "grid-search", "--spark")
    assert code == ExitCode.DAG_ERROR and "SyntaxError: bad" in err
    airflow.import_errors = []
    code, _, err = cli(capsys, "grid-search", "--spark")
    assert code == ExitCode.NOT_FOUND and "not loaded" in err


def test_grid_search_prints_a_leaderboard_and_heatmap(fakes, capsys, monkeypatch) -> None:
    monkeypatch.setattr("mlopsctl.pipelines.new_dag_run_id", lambda: "g1")
    code, out, err = cli(capsys, "grid-search", "--max-depth", "3,5", "--n-estimators", "10,20", "--cv", "2")
    assert code == 0, err
    assert "leaderboard" in out and "max_depth × n_estimators" in out and "best" in out and "fail" in out
    code, out, _ = cli(capsys, "grid-search", "--max-depth", "3,5", "--n-estimators", "10,20", "--json")
    assert len(json.loads(out)["mlflow"]["points"]) == 3


def test_status_lists_runs_with_key_metric_and_unknown_run_is_not_found(fakes, capsys) -> None:
    assert cli(capsys, "run", "build-model", "--no-wait")[0] == 0
    code, out, err = cli(capsys, "status", "--json")
    assert code == 0, err
    rows = json.loads(out)["runs"]
    assert [r["dag_run_id"] for r in rows] == [RID] and rows[0]["metric_value"] == 53.1
    assert any("grid_search_spark is not loaded" in w for w in json.loads(out)["warnings"])
    code, _, err = cli(capsys, "status", "no-such-run")
    assert code == ExitCode.NOT_FOUND and "mlopsctl status" in err


def test_status_wait_reattaches_and_logs_prints_the_log(fakes, capsys) -> None:
    assert cli(capsys, "run", "build-model", "--no-wait")[0] == 0
    code, out, err = cli(capsys, "status", RID, "--wait", "--json")
    assert code == 0 and json.loads(out)["state"] == "success"
    code, out, err = cli(capsys, "logs", RID, "--task", "train_model")
    assert code == 0 and "line 0" in out and "KeyError" in out
    code, _, err = cli(capsys, "logs", RID, "--task", "nope")
    assert code == ExitCode.NOT_FOUND and "preprocess_data" in err


def test_timeout_exits_timeout_and_says_how_to_reattach(fakes, capsys) -> None:
    airflow, _, _ = fakes
    airflow.steps = 10**9  # never finishes
    code, _, err = cli(capsys, "run", "build-model", "--timeout", "1e-9")
    assert code == ExitCode.TIMEOUT and f"mlopsctl status {RID} --wait" in err and "keeps going" in err
    assert airflow.runs[RID]["polls"] >= 1


def test_import_errors_are_matched_to_the_dags_own_file_exactly() -> None:
    from mlopsctl.airflow.models import Dag, ImportError_, import_errors_of

    errors = [ImportError_(filename=f, bundle_name="dags-folder")
              for f in ("grid_search_spark.py", "grid_search.py", "old/grid_search.py", "my_grid_search.py")]
    loaded = Dag(dag_id="grid_search", relative_fileloc="grid_search.py", fileloc="/p/dags/grid_search.py",
                 bundle_name="dags-folder")
    assert [e.filename for e in import_errors_of(errors, "grid_search", loaded)] == ["grid_search.py"]
    # not loaded: its file is <dag_id>.py, in any folder of the bundle, and nothing that merely contains the id
    assert [e.filename for e in import_errors_of(errors, "grid_search")] == ["grid_search.py", "old/grid_search.py"]
    assert import_errors_of(errors, "build_model") == []
    other_bundle = loaded.model_copy(update={"bundle_name": "other"})
    assert import_errors_of(errors, "grid_search", other_bundle) == []


def test_a_broken_dag_file_is_not_blamed_on_a_dag_whose_id_is_its_prefix(fakes, capsys) -> None:
    airflow, _, _ = fakes
    del airflow.paused["grid_search"]  # grid_search is not loaded, and only grid_search_spark.py is broken
    airflow.import_errors = [{"filename": "grid_search_spark.py", "stack_trace": "SyntaxError: bad"}]
    code, _, err = cli(capsys, "grid-search")
    assert code == ExitCode.NOT_FOUND and "not loaded" in err and "grid_search_spark.py" not in err
    code, out, err = cli(capsys, "dags", "--json")
    assert code == 0, err
    rows = {r["dag_id"]: r for r in json.loads(out)["pipelines"]}
    assert rows["grid_search"]["import_errors"] == [] and rows["build_model"]["import_errors"] == []
    assert [e["filename"] for e in rows["grid_search_spark"]["import_errors"]] == ["grid_search_spark.py"]
