"""The real job files run the way the local backend runs them (dags/common/compute.py LocalJobOperator):
as Spark Connect clients of a live server, and, once, under classic spark-submit. Their outputs are checked:
the training table, the MLflow runs, the exit code 3 path."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.dags.conftest import DAGS_DIR

if str(DAGS_DIR) not in sys.path:
    sys.path.append(str(DAGS_DIR))

from common import compute

JOBS = Path(__file__).resolve().parents[2] / "spark_jobs"


def _common(tmp_path: Path, dag_id: str, run_id: str, *extra: str) -> list[str]:
    return ["--dag-id", dag_id, "--run-id", run_id, "--try-number", "1", "--work-dir", str(tmp_path / "work"),
            "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--registry-uri", "",
            "--experiment-prefix", "/mlopsctl", "--data", "", "--target", "target", *extra]


@pytest.fixture
def task_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLOPSCTL_SPARK_JOBS_DIR", str(JOBS))
    monkeypatch.setenv("MLOPSCTL_COMPUTE", "local")
    monkeypatch.setenv("MLOPSCTL_SPARK_MASTER", "local[1]")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_preprocess_and_spark_grid_run_as_connect_clients(connect_server, task_env: Path, monkeypatch) -> None:
    import mlflow

    monkeypatch.setenv("MLOPSCTL_SPARK_REMOTE", connect_server.url)
    run_id = "manual__connect"
    pre = compute.LocalJobOperator(task_id="preprocess_data", job="preprocess_data.py",
                                   arguments=_common(task_env, "grid_search_spark", run_id))
    assert pre.execute({})["engine"] == f"spark-connect({connect_server.url})"
    training = Path(training_path(task_env, "grid_search_spark", run_id))
    assert any(p.suffix == ".parquet" for p in training.iterdir())

    grid = compute.LocalJobOperator(
        task_id="grid", job="grid_search_spark.py",
        arguments=_common(task_env, "grid_search_spark", run_id, "--max-depth", "3,6", "--n-estimators", "0,8",
                          "--cv", "2", "--test-size", "0.2", "--random-state", "1", "--register-model", ""),
    )
    grid.execute({})
    mlflow.set_tracking_uri(f"sqlite:///{task_env / 'mlflow.db'}")
    exp = mlflow.get_experiment_by_name("/mlopsctl/grid_search_spark")
    runs = mlflow.search_runs([exp.experiment_id], output_format="list")
    parent = next(r for r in runs if r.data.tags["mlopsctl.role"] == "parent")
    assert parent.data.tags["mlopsctl.engine"] == f"spark-connect({connect_server.url})"
    assert parent.data.params["best_n_estimators"] == "8"
    children = [r for r in runs if r.data.tags["mlopsctl.role"] == "child"]
    assert sorted((r.data.params["max_depth"], r.data.params["n_estimators"], r.info.status) for r in children) == [
        ("3", "0", "FAILED"), ("3", "8", "FINISHED"), ("6", "0", "FAILED"), ("6", "8", "FINISHED")]


def test_bad_data_as_a_connect_client_fails_without_retry(connect_server, task_env: Path, monkeypatch) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    monkeypatch.setenv("MLOPSCTL_SPARK_REMOTE", connect_server.url)
    csv = task_env / "d.csv"
    csv.write_text("a,b\n1,2\n")
    args = _common(task_env, "build_model", "manual__bad")
    args[args.index("--data") + 1] = str(csv)
    op = compute.LocalJobOperator(task_id="preprocess_data", job="preprocess_data.py", arguments=args)
    with pytest.raises(AirflowFailException, match="target column 'target' not found; columns are: a, b"):
        op.execute({})


@pytest.mark.integration  # runs spark-submit in its body, not through a fixture
def test_preprocess_under_classic_spark_submit(task_env: Path, monkeypatch) -> None:
    monkeypatch.delenv("MLOPSCTL_SPARK_REMOTE", raising=False)
    op = compute.LocalJobOperator(task_id="preprocess_data", job="preprocess_data.py",
                                  arguments=_common(task_env, "build_model", "manual__classic"))
    assert op.execute({})["engine"] == "spark(local[1])"
    import pandas as pd

    pdf = pd.read_parquet(training_path(task_env, "build_model", "manual__classic"))
    assert len(pdf) == 442 and "bmi" in pdf.columns


def training_path(tmp_path: Path, dag_id: str, run_id: str) -> str:
    from mlopsctl_jobs import data

    return data.training_path(str(tmp_path / "work"), dag_id, run_id)
