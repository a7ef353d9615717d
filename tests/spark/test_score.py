"""The batch_score job run the way the local backend runs it (a Spark Connect client of a live server, through
dags/common/compute.py's LocalJobOperator), on a model version the test registers in a sqlite MLflow store: the
output equals the model's own in-process predict, the MLflow run carries the summary, and bad input (missing
columns, an existing output, a version that takes cleaned features) stops the job with exit 3 and one line."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.dags.conftest import DAGS_DIR
from tests.fixtures.raw_model import log_raw_model, raw_frame

if str(DAGS_DIR) not in sys.path:
    sys.path.append(str(DAGS_DIR))

from common import compute

JOBS = Path(__file__).resolve().parents[2] / "spark_jobs"
MODEL = "scoring-rf"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A sqlite MLflow store with MODEL version 1 (raw rows) and version 2 (no raw-input tag), and the input
    CSV without its target (one unseen city, one missing value)."""
    import mlflow

    home = tmp_path_factory.mktemp("score")
    uri = f"sqlite:///{home / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    frame = raw_frame()
    raw = log_raw_model(MODEL, frame, artifact_location=(home / "artifacts").as_uri())
    old = log_raw_model(MODEL, frame, raw=False)
    rows = frame.drop(columns=["price"]).head(40).copy()
    rows.loc[3, "city"] = "west"
    rows.loc[5, "area m2"] = None
    data = home / "new rows.csv"
    rows.to_csv(data, index=False)
    return {"home": home, "uri": uri, "raw": raw, "old": old, "data": data}


def _task(store: dict[str, Any], run_id: str, version: str, output: Path | str, *, data: Path | None = None,
          mode: str = "error") -> compute.LocalJobOperator:
    return compute.LocalJobOperator(task_id="batch_score", job="batch_score.py", arguments=[
        "--dag-id", "batch_score", "--run-id", run_id, "--try-number", "1", "--work-dir", str(store["home"] / "work"),
        "--tracking-uri", store["uri"], "--registry-uri", "", "--experiment-prefix", "/mlopsctl",
        "--model-name", MODEL, "--model-version", version, "--data", str(data or store["data"]),
        "--output", str(output), "--mode", mode,
    ])


@pytest.fixture
def task_env(connect_server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("MLOPSCTL_SPARK_JOBS_DIR", str(JOBS))
    monkeypatch.setenv("MLOPSCTL_COMPUTE", "local")
    monkeypatch.setenv("MLOPSCTL_SPARK_REMOTE", connect_server.url)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _scoring_run(store: dict[str, Any], run_id: str) -> Any:
    import mlflow

    mlflow.set_tracking_uri(store["uri"])
    exp = mlflow.get_experiment_by_name("/mlopsctl/batch_score")
    runs = mlflow.search_runs([exp.experiment_id], filter_string=f"tags.`airflow.dag_run_id` = '{run_id}'",
                              output_format="list")
    assert len(runs) == 1
    return runs[0]


def test_scores_like_the_models_own_predict_and_logs_the_summary(store, task_env: Path) -> None:
    import mlflow
    import numpy as np
    import pandas as pd

    output = task_env / "scored"
    _task(store, "manual__score", store["raw"], output).execute({})
    scored = pd.read_parquet(output)
    source = pd.read_csv(store["data"])
    assert list(scored.columns) == [*source.columns, "prediction", "model_name", "model_version", "scored_at"]
    assert len(scored) == len(source)
    assert set(scored["model_name"]) == {MODEL} and set(scored["model_version"]) == {store["raw"]}
    assert scored["scored_at"].nunique() == 1
    mlflow.set_tracking_uri(store["uri"])
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}/{store['raw']}")
    expected = model.predict(scored[list(source.columns)])
    np.testing.assert_allclose(scored["prediction"].to_numpy(), np.asarray(expected, dtype="float64"), rtol=1e-9)

    run = _scoring_run(store, "manual__score")
    assert run.data.tags["mlopsctl.role"] == "scoring"
    assert run.data.params["model_version"] == store["raw"]
    assert run.data.params["output"] == str(output)
    metrics = run.data.metrics
    assert metrics["rows_scored"] == len(source) == metrics["prediction_count"]
    assert metrics["prediction_min"] == pytest.approx(scored["prediction"].min(), rel=1e-12)
    assert metrics["prediction_mean"] == pytest.approx(scored["prediction"].mean(), rel=1e-9)
    assert metrics["prediction_max"] == pytest.approx(scored["prediction"].max(), rel=1e-12)

    # the default mode never overwrites; append adds this run's rows, and the summary counts only them
    with pytest.raises(Exception, match="exists; --mode overwrite replaces it") as refused:
        _task(store, "manual__again", store["raw"], output).execute({})
    assert "exit 3" in str(refused.value)
    _task(store, "manual__append", store["raw"], output, mode="append").execute({})
    assert len(pd.read_parquet(output)) == 2 * len(source)
    assert _scoring_run(store, "manual__append").data.metrics["rows_scored"] == len(source)


def test_refuses_missing_columns_and_versions_that_take_features(store, task_env: Path) -> None:
    import pandas as pd

    partial = task_env / "partial.csv"
    pd.read_csv(store["data"]).drop(columns=["city", "rooms"]).to_csv(partial, index=False)
    with pytest.raises(Exception, match=r"lacks 2 column\(s\) .*: rooms, city") as missing:
        _task(store, "manual__missing", store["raw"], task_env / "out1", data=partial).execute({})
    assert "exit 3" in str(missing.value)
    refusal = (rf"version {store['old']} of registered model {re.escape(repr(MODEL))} takes cleaned features, not "
               r"raw rows: it lacks the version tag mlopsctl_input=raw .*register a new version with this mlopsctl")
    with pytest.raises(Exception, match=refusal) as old:
        _task(store, "manual__old", store["old"], task_env / "out2").execute({})
    assert "exit 3" in str(old.value)
    assert not (task_env / "out1").exists() and not (task_env / "out2").exists()


def test_a_table_output_is_written_refused_when_it_exists_and_overwritten(store, task_env: Path, spark) -> None:
    table = "default.mlopsctl_scored_rows"
    spark.sql(f"DROP TABLE IF EXISTS {table}")
    try:
        _task(store, "manual__table", store["raw"], table).execute({})
        first = spark.table(table).toPandas()
        assert len(first) == 40 and first["model_version"].unique().tolist() == [store["raw"]]
        with pytest.raises(Exception, match=f"output {table} exists"):
            _task(store, "manual__table_again", store["raw"], table).execute({})
        _task(store, "manual__table_over", store["raw"], table, mode="overwrite").execute({})
        spark.catalog.refreshTable(table)  # this session listed the files the overwrite replaced
        second = spark.table(table).toPandas()
        assert len(second) == 40 and second["scored_at"].nunique() == 1
        assert second["scored_at"].iloc[0] > first["scored_at"].iloc[0]
        assert second["prediction"].tolist() == pytest.approx(first["prediction"].tolist(), rel=1e-12)
    finally:
        spark.sql(f"DROP TABLE IF EXISTS {table}")
