"""`mlopsctl score` against a scripted Airflow (httpx.MockTransport) and a real MLflow registry (a sqlite store):
the alias resolved to a version before the trigger, the conf it sends, the summary it prints, and one exit code,
before anything is triggered, for each kind of bad input. The job's side: tests/spark/test_score.py."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlopsctl import tracking as cli_tracking
from mlopsctl.appcontext import Environment
from mlopsctl.errors import ExitCode
from mlopsctl.tracking import Tracking
from tests.fixtures.fakes import RID, FakeAirflow

REPO = Path(__file__).resolve().parents[2]
SUMMARY = {"rows_scored": 40.0, "prediction_count": 40.0, "prediction_min": 101.5, "prediction_mean": 340.25,
           "prediction_max": 690.0}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Model `rf`: version 1 takes cleaned features (no raw-input tag), version 2 raw rows (alias champion), and
    the MLflow run batch_score logs for run RID."""
    from mlflow import MlflowClient

    home = tmp_path_factory.mktemp("score-registry")
    uri = f"sqlite:///{home / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    train = client.create_experiment("/mlopsctl/build_model", artifact_location=(home / "a").as_uri())
    client.create_registered_model("rf")
    for _ in range(2):
        run = client.create_run(train)
        client.create_model_version("rf", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    client.set_model_version_tag("rf", "2", cli_tracking.INPUT_TAG, cli_tracking.INPUT_RAW)
    client.set_registered_model_alias("rf", "champion", "2")
    scoring = client.create_experiment("/mlopsctl/batch_score", artifact_location=(home / "b").as_uri())
    run = client.create_run(scoring, tags={"airflow.dag_id": "batch_score", "airflow.dag_run_id": RID,
                                           "mlopsctl.role": "scoring"})
    for key, value in {"model_name": "rf", "model_version": "2", "output": "/data/scored"}.items():
        client.log_param(run.info.run_id, key, value)
    for key, value in SUMMARY.items():
        client.log_metric(run.info.run_id, key, value)
    client.set_terminated(run.info.run_id)
    return uri


@pytest.fixture
def airflow(monkeypatch: pytest.MonkeyPatch) -> FakeAirflow:
    monkeypatch.setattr("time.sleep", lambda s: None)
    monkeypatch.setattr("mlopsctl.pipelines.new_dag_run_id", lambda: RID)
    return FakeAirflow(loaded=("batch_score",))


@pytest.fixture
def environment(registry: str, airflow: FakeAirflow, project: Path) -> Environment:
    return Environment(settings={"airflow_password": "pw", "retries": 0},
                       airflow_transport=httpx.MockTransport(airflow), tracking=lambda settings: Tracking(registry))


@pytest.fixture
def data(project: Path) -> Path:
    path = project / "new.csv"
    path.write_text("area m2,rooms,city\n50,2,north\n")
    return path


def _sent(airflow: FakeAirflow) -> list[dict[str, Any]]:
    return [json.loads(r.content)["conf"] for r in airflow.requests
            if r.method == "POST" and r.url.path.endswith("/dagRuns")]


def test_resolves_the_alias_triggers_with_the_version_and_prints_the_summary(cli, airflow, data, project) -> None:
    code, out, err = cli("score", "rf@champion", "--data", "new.csv", "--output", "scored", "--json")
    assert code == 0, err
    assert _sent(airflow) == [{"model_name": "rf", "model_version": 2, "data": str(data),
                               "output": str(project / "scored"), "mode": "error"}]
    doc = json.loads(out)
    assert doc["pipeline"] == "score" and doc["dag_id"] == "batch_score" and doc["state"] == "success"
    assert doc["mlflow"]["run"]["metrics"] == SUMMARY
    assert doc["mlflow"]["run"]["params"]["model_version"] == "2"
    assert "Scoring with rf version 2 (champion)" in err

    code, out, err = cli("score", "rf/2", "--data", str(data), "--output", "scored", "--mode", "overwrite")
    assert code == 0, err
    for needle in ("rows_scored", "40", "prediction_mean", "340.25", "model_version", "/data/scored"):
        assert needle in out, needle
    assert _sent(airflow)[-1]["mode"] == "overwrite"


@pytest.mark.parametrize(("ref", "says"), [
    ("nope@champion", "No registered model 'nope'"),
    ("rf@staging", "has no alias 'staging'"),
    ("rf/9", "No version 9 of registered model 'rf'"),
])
def test_an_unknown_model_version_or_alias_exits_6_before_the_trigger(cli, airflow, data, ref, says) -> None:
    code, _, err = cli("score", ref, "--data", str(data), "--output", "scored")
    assert code == ExitCode.NOT_FOUND, err
    assert says in err
    assert airflow.requests == []


def test_a_version_that_takes_cleaned_features_is_refused(cli, airflow, data) -> None:
    code, _, err = cli("score", "rf/1", "--data", str(data), "--output", "scored")
    assert code == ExitCode.USAGE
    assert "takes cleaned features" in err and "mlopsctl_input=raw" in err
    assert airflow.requests == []


def test_an_existing_output_is_refused_with_the_default_mode_before_any_request(cli, airflow, data, project) -> None:
    (project / "scored").mkdir()
    code, _, err = cli("score", "rf@champion", "--data", str(data), "--output", "scored")
    assert code == ExitCode.REJECTED
    assert "--output scored exists" in err and "--mode overwrite" in err
    assert airflow.requests == []
    code, _, err = cli("score", "rf@champion", "--data", str(data), "--output", "scored", "--mode", "append")
    assert code == 0, err
    assert _sent(airflow)[-1]["mode"] == "append"


@pytest.mark.parametrize(("args", "says"), [
    (("rf", "--data", "new.csv", "--output", "o"), "names no version or alias"),
    (("rf/0", "--data", "new.csv", "--output", "o"), "positive integer"),
    (("rf@champion", "--data", "missing.csv", "--output", "o"), "--data: missing.csv does not exist"),
    (("rf@champion", "--data", "new.csv", "--output", " "), "--output must not be empty"),
    (("rf@champion", "--data", "new.csv", "--output", "o", "--mode", "replace"), "--mode"),
    (("rf@champion", "--data", "new.csv", "--output", "o", "--timeout", "0"), "--timeout"),
])
def test_usage_errors_exit_2_before_any_request(cli, airflow, data, args, says) -> None:
    code, _, err = cli("score", *args)
    assert code == ExitCode.USAGE, err
    assert says in err
    assert airflow.requests == []


def test_the_cli_and_the_jobs_name_the_raw_input_tag_alike() -> None:
    tree = ast.parse((REPO / "spark_jobs" / "mlopsctl_jobs" / "tracking.py").read_text(encoding="utf-8"))
    jobs = {t.id: ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
            for t in node.targets if isinstance(t, ast.Name) and t.id in ("INPUT_TAG", "INPUT_RAW")}
    assert (jobs["INPUT_TAG"], jobs["INPUT_RAW"]) == (cli_tracking.INPUT_TAG, cli_tracking.INPUT_RAW)
