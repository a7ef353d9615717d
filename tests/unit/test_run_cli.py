"""The run/grid-search/status/logs/dags commands against a scripted fake Airflow (httpx.MockTransport).

The real stack is exercised in tests/integration/test_cli_e2e.py; these pin the flow and the output
contract (exit codes, one JSON document, log tail on failure, MLflow trouble = warning) quickly.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import httpx
import pytest

from mlopsctl.appcontext import AppContext, Environment
from mlopsctl.errors import ExitCode
from mlopsctl.tracking import Tracking
from tests.fixtures.fakes import BUILD, GRID, RID, FakeAirflow, FakeMlflow


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch, project: Path):
    airflow = FakeAirflow()
    mlflow = FakeMlflow([BUILD, *GRID])
    state = {"mlflow_down": False}
    monkeypatch.setattr("time.sleep", lambda s: None)
    monkeypatch.setattr("mlopsctl.pipelines.new_dag_run_id", lambda: RID)
    return airflow, mlflow, state


@pytest.fixture
def environment(fakes) -> Environment:
    """mlopsctl in this module talks to the fakes: Airflow through its transport, MLflow through the reader
    (down while state["mlflow_down"])."""
    airflow, mlflow, state = fakes

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    def tracking(settings) -> Tracking:
        return Tracking(settings.mlflow_tracking_uri,
                        transport=httpx.MockTransport(refuse if state["mlflow_down"] else mlflow))

    return Environment(settings={"airflow_password": "pw", "retries": 0},
                       airflow_transport=httpx.MockTransport(airflow), tracking=tracking)


def test_run_json_unpauses_triggers_follows_and_prints_mlflow_metrics(fakes, cli) -> None:
    airflow, _, _ = fakes
    code, out, err = cli("run", "build-model", "--max-depth", "80", "--n-estimators", "100", "--json")
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


def test_run_tables_output(fakes, cli) -> None:
    code, out, err = cli("run", "build-model")
    assert code == 0, err
    for needle in ("build-model", RID, "rmse", "53.1000", "mlopsctl-random-forest version 3", "Airflow: http", "MLflow: http"):
        assert needle in out, needle
    assert "Unpaused DAG build_model" in err


def test_no_auto_unpause_warns_and_no_wait_returns_the_run_id(fakes, cli) -> None:
    airflow, _, _ = fakes
    code, out, err = cli("run", "build-model", "--no-auto-unpause", "--no-wait")
    assert code == 0
    assert out.strip() == RID
    assert "paused" in err and airflow.paused["build_model"] is True
    assert not any(r.url.path.endswith(RID) for r in airflow.requests)  # returned at once: no polling


def test_failed_run_exits_run_failed_with_the_task_and_log_tail(fakes, cli) -> None:
    airflow, _, _ = fakes
    airflow.final = "failed"
    code, out, err = cli("run", "build-model", "--json")
    assert code == ExitCode.RUN_FAILED
    doc = json.loads(out)
    assert doc["state"] == "failed" and doc["failed_task"] == "train_model"
    assert len(doc["log_tail"]) == 30 and doc["log_tail"][-1] == "[error] KeyError: 'target'"
    assert "task 'train_model' failed" in err and f"mlopsctl logs {RID} --task train_model" in err

    code, out, err = cli("status", RID)
    assert code == 0 and "KeyError: 'target'" in out and "train_model" in out


def test_mlflow_unreachable_still_prints_the_airflow_result_with_a_warning(fakes, cli) -> None:
    _, _, state = fakes
    state["mlflow_down"] = True
    code, out, err = cli("run", "build-model", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["state"] == "success" and doc["mlflow"] is None
    assert "MLflow result unavailable" in doc["warnings"][0] and "Warning" in err


def test_dag_not_loaded_shows_the_import_error(fakes, cli) -> None:
    airflow, _, _ = fakes
    airflow.import_errors = [{"filename": "/p/dags/grid_search_spark.py", "stack_trace": "Traceback...\nSyntaxError: bad"}]
    code, _, err = cli("grid-search", "--spark")
    assert code == ExitCode.DAG_ERROR and "SyntaxError: bad" in err
    airflow.import_errors = []
    code, _, err = cli("grid-search", "--spark")
    assert code == ExitCode.NOT_FOUND and "not loaded" in err


def test_grid_search_prints_a_leaderboard_and_heatmap(fakes, cli, monkeypatch) -> None:
    monkeypatch.setattr("mlopsctl.pipelines.new_dag_run_id", lambda: "g1")
    code, out, err = cli("grid-search", "--max-depth", "3,5", "--n-estimators", "10,20", "--cv", "2")
    assert code == 0, err
    assert "leaderboard" in out and "max_depth × n_estimators" in out and "best" in out and "fail" in out
    code, out, _ = cli("grid-search", "--max-depth", "3,5", "--n-estimators", "10,20", "--json")
    assert len(json.loads(out)["mlflow"]["points"]) == 3


def test_status_lists_runs_with_key_metric_and_unknown_run_is_not_found(fakes, cli) -> None:
    assert cli("run", "build-model", "--no-wait")[0] == 0
    code, out, err = cli("status", "--json")
    assert code == 0, err
    rows = json.loads(out)["runs"]
    assert [r["dag_run_id"] for r in rows] == [RID] and rows[0]["metric_value"] == 53.1
    assert any("grid_search_spark is not loaded" in w for w in json.loads(out)["warnings"])
    code, _, err = cli("status", "no-such-run")
    assert code == ExitCode.NOT_FOUND and "mlopsctl status" in err


def test_status_wait_reattaches_and_logs_prints_the_log(fakes, cli) -> None:
    assert cli("run", "build-model", "--no-wait")[0] == 0
    code, out, err = cli("status", RID, "--wait", "--json")
    assert code == 0 and json.loads(out)["state"] == "success"
    code, out, err = cli("logs", RID, "--task", "train_model")
    assert code == 0 and "line 0" in out and "KeyError" in out
    code, _, err = cli("logs", RID, "--task", "nope")
    assert code == ExitCode.NOT_FOUND and "preprocess_data" in err


def test_timeout_exits_timeout_and_says_how_to_reattach(fakes, cli) -> None:
    airflow, _, _ = fakes
    airflow.steps = 10**9  # never finishes
    code, _, err = cli("run", "build-model", "--timeout", "1e-9")
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


def test_a_broken_dag_file_is_not_blamed_on_a_dag_whose_id_is_its_prefix(fakes, cli) -> None:
    airflow, _, _ = fakes
    del airflow.paused["grid_search"]  # grid_search is not loaded, and only grid_search_spark.py is broken
    airflow.import_errors = [{"filename": "grid_search_spark.py", "stack_trace": "SyntaxError: bad"}]
    code, _, err = cli("grid-search")
    assert code == ExitCode.NOT_FOUND and "not loaded" in err and "grid_search_spark.py" not in err
    code, out, err = cli("dags", "--json")
    assert code == 0, err
    rows = {r["dag_id"]: r for r in json.loads(out)["pipelines"]}
    assert rows["grid_search"]["import_errors"] == [] and rows["build_model"]["import_errors"] == []
    assert [e["filename"] for e in rows["grid_search_spark"]["import_errors"]] == ["grid_search_spark.py"]


def test_a_preflight_check_stops_the_run_before_anything_is_triggered(fakes, environment: Environment) -> None:
    from mlopsctl.errors import StackError
    from mlopsctl.pipelines import get_pipeline

    airflow, _, _ = fakes
    seen: list[str] = []

    def spark_is_down(pipeline) -> None:
        seen.append(pipeline.dag_id)
        raise StackError("The Spark Connect server is down.")

    service = AppContext(environment=environment).runs()
    service.preflight_checks = (spark_is_down,)
    with pytest.raises(StackError):
        service.trigger(get_pipeline("build-model"), {"max_depth": 3})
    assert seen == ["build_model"]
    assert not [r for r in airflow.requests if r.method == "POST" and r.url.path.endswith("/dagRuns")]


# --- data sources against the compute the DAG publishes (its `compute:<kind>` tag) -------------------------
def _triggered_conf(airflow) -> dict | None:
    posts = [r for r in airflow.requests if r.method == "POST" and r.url.path.endswith("/dagRuns")]
    return json.loads(posts[-1].content)["conf"] if posts else None


@pytest.mark.parametrize("argv", [["run", "build-model"], ["grid-search"]])
def test_a_local_data_path_is_refused_before_triggering_when_the_dag_runs_on_databricks(fakes, cli, project, argv):
    airflow, _, _ = fakes
    airflow.tags = ["mlopsctl", "compute:databricks"]
    (project / "houses.csv").write_text("a,target\n1,2\n")
    code, out, err = cli(*argv, "--data", "houses.csv", "--json")
    assert code == ExitCode.USAGE, err
    assert "is a path on this machine" in err and "cannot see this machine's files" in err
    assert "databricks fs cp" in err and "Traceback" not in err and out == ""
    assert _triggered_conf(airflow) is None
    assert not [r for r in airflow.requests if r.method == "PATCH"]  # the DAG was not unpaused either


@pytest.mark.parametrize("data", ["main.sales.houses", "/Volumes/main/sales/raw/houses.csv", "s3://b/houses.csv"])
def test_cluster_data_is_triggered_unchanged_on_databricks(fakes, cli, data):
    airflow, _, _ = fakes
    airflow.tags = ["mlopsctl", "compute:databricks"]
    code, _, err = cli("run", "build-model", "--data", data, "--no-wait")
    assert code == 0, err
    assert _triggered_conf(airflow)["data"] == data


@pytest.mark.parametrize("tags", [["mlopsctl"], ["mlopsctl", "compute:local"]])
def test_a_local_path_goes_absolute_where_the_dag_is_local_or_says_nothing(fakes, cli, project, tags):
    airflow, _, _ = fakes
    airflow.tags = tags
    (project / "houses.csv").write_text("a,target\n1,2\n")
    code, _, err = cli("run", "build-model", "--data", "houses.csv", "--no-wait")
    assert code == 0, err
    assert _triggered_conf(airflow)["data"] == str(project / "houses.csv")
    code, _, err = cli("run", "build-model", "--data", "main.sales.houses", "--no-wait")
    assert code == 0, err
    assert _triggered_conf(airflow)["data"] == "main.sales.houses"


# --- the environment main() is handed ------------------------------------------------------------------------
def test_the_environments_settings_are_under_the_flags(fakes, environment: Environment, cli) -> None:
    airflow, _, _ = fakes
    env = dataclasses.replace(environment, settings={**environment.settings, "airflow_url": "http://env.example:1"})
    assert cli("run", "build-model", "--no-wait", environment=env).exit_code == 0
    assert {r.url.host for r in airflow.requests} == {"env.example"}
    airflow.requests.clear()
    assert cli("--airflow-url", "http://flag.example:1", "run", "build-model", "--no-wait", environment=env)[0] == 0
    assert {r.url.host for r in airflow.requests} == {"flag.example"}


def test_errors_are_written_by_the_environments_console(environment: Environment, cli) -> None:
    from mlopsctl.console import Console

    errors: list[tuple[str, str | None]] = []

    class Recording(Console):
        def error(self, message: str, hint: str | None = None) -> None:
            errors.append((message, hint))

    code, out, err = cli("status", "no-such-run", environment=dataclasses.replace(environment, console=Recording))
    assert code == ExitCode.NOT_FOUND and (out, err) == ("", "")
    [(message, hint)] = errors
    assert "no-such-run" in message and "mlopsctl status" in (hint or "")
