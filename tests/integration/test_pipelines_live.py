"""The three pipelines end to end on the real local stack (Airflow 3 + MLflow + Spark local mode):
trigger over the REST API with AirflowClient, then assert the MLflow side (the runs, tags and metrics the CLI reads).

All runs are triggered together once per module (the stack runs them side by side) and awaited;
each test then checks one of them. The waits are hang guards, never timing assertions.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

DAGS = ("build_model", "grid_search", "grid_search_spark")
SMALL_GRID = {"max_depth": [3, 8], "n_estimators": [5, 15], "cv": 2}
HANG_GUARD = 1800.0  # seconds; a run that takes longer is stuck


def _wait_for_dags(client: Any) -> None:
    deadline = time.monotonic() + 300
    while True:
        found = {d.dag_id for d in client.list_dags(tags=["mlopsctl"])}
        if set(DAGS) <= found:
            return
        errors = client.import_errors()
        assert not errors, [f"{e.filename}: {e.stack_trace}" for e in errors]
        assert time.monotonic() < deadline, f"DAGs never appeared; found {sorted(found)}"
        time.sleep(2)


def _wait(client: Any, dag_id: str, run_id: str) -> Any:
    deadline = time.monotonic() + HANG_GUARD
    while True:
        run = client.get_run(dag_id, run_id)
        if run.state in ("success", "failed"):
            return run
        assert time.monotonic() < deadline, f"{dag_id} {run_id} still {run.state}"
        time.sleep(3)


@pytest.fixture(scope="module")
def stack_client(local_stack: Any) -> Any:
    client = local_stack.client()
    _wait_for_dags(client)
    for dag_id in DAGS:
        client.set_paused(dag_id, False)
    yield client
    client.close()


@pytest.fixture(scope="module")
def user_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sklearn.datasets import load_diabetes

    directory = tmp_path_factory.mktemp("user data")
    path = directory / "my data; $(touch pwned) it's.csv"
    frame = load_diabetes(as_frame=True).frame.rename(columns={"target": "progression"})
    frame["site"] = ["north" if i % 3 else "south" for i in range(len(frame))]
    frame.loc[::7, "bmi"] = None
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def r_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CSV as R's write.csv leaves it: missing values written as NA, in the target and in features."""
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True).frame.rename(columns={"target": "progression"})
    frame = frame.astype(object)
    frame.loc[::9, "progression"] = "NA"  # 50 rows: dropped
    frame.loc[1::5, "bmi"] = "NA"
    frame.loc[2::11, "s1"] = "null"
    frame["clinic"] = ["A" if i % 2 else "NA" for i in range(len(frame))]  # text with NA in it
    path = tmp_path_factory.mktemp("r export") / "diabetes_r.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def runs(stack_client: Any, user_csv: Path, r_csv: Path) -> dict[str, tuple[str, str, Any]]:
    """name -> (dag_id, dag_run_id, final DagRun); everything triggered first, then awaited."""
    stamp = time.strftime("%H%M%S")
    wanted = {
        "build": ("build_model", {"max_depth": 80, "n_estimators": 100}),
        "grid": ("grid_search", SMALL_GRID),
        "grid_spark": ("grid_search_spark", SMALL_GRID),
        "bad_target": ("build_model", {"target": "nope"}),
        "user_csv": ("build_model", {"data": str(user_csv), "target": "progression", "n_estimators": 5,
                                     "register_model": None}),
        "r_csv": ("build_model", {"data": str(r_csv), "target": "progression", "n_estimators": 5,
                                  "register_model": None}),
        "r_csv_grid": ("grid_search", {**SMALL_GRID, "data": str(r_csv), "target": "progression",
                                       "na_values": ["NA", "null"], "register_model": None}),
    }
    triggered = {}
    for name, (dag_id, conf) in wanted.items():
        run = stack_client.trigger(dag_id, conf, dag_run_id=f"test_{name}_{stamp}")
        assert run.state in ("queued", "running")
        triggered[name] = (dag_id, run.dag_run_id)
    return {name: (dag_id, rid, _wait(stack_client, dag_id, rid)) for name, (dag_id, rid) in triggered.items()}


@pytest.fixture(scope="module")
def mlflow_client(local_stack: Any) -> Any:
    import mlflow

    return mlflow.MlflowClient(tracking_uri=local_stack.mlflow_url, registry_uri=local_stack.mlflow_url)


def _runs_of(mlflow_client: Any, dag_id: str, run_id: str) -> list[Any]:
    exp = mlflow_client.get_experiment_by_name(f"/mlopsctl/{dag_id}")
    assert exp is not None, f"no MLflow experiment /mlopsctl/{dag_id}"
    return mlflow_client.search_runs([exp.experiment_id], filter_string=f"tags.`airflow.dag_run_id` = '{run_id}'")


def _task_states(client: Any, dag_id: str, run_id: str) -> dict[str, Any]:
    return {t.task_id: t for t in client.task_instances(dag_id, run_id)}


def _log_text(client: Any, dag_id: str, run_id: str, task_id: str, try_number: int) -> str:
    return "\n".join(client.task_log(dag_id, run_id, task_id, try_number).lines())


def _explain(client: Any, dag_id: str, run_id: str) -> str:
    out = []
    for ti in client.task_instances(dag_id, run_id):
        out.append(f"{ti.task_id}: {ti.state}")
        if ti.state == "failed" and ti.try_number:
            out.append(_log_text(client, dag_id, run_id, ti.task_id, ti.try_number)[-3000:])
    return "\n".join(out)


def test_build_model_seed_conf(runs, stack_client, mlflow_client, local_stack) -> None:
    dag_id, run_id, run = runs["build"]
    assert run.state == "success", _explain(stack_client, dag_id, run_id)
    assert {t: ti.state for t, ti in _task_states(stack_client, dag_id, run_id).items()} == {
        "preprocess_data": "success", "train_model": "success"}
    found = _runs_of(mlflow_client, dag_id, run_id)
    assert len(found) == 1
    mrun = found[0]
    assert mrun.info.status == "FINISHED"
    tags = mrun.data.tags
    assert tags["airflow.dag_id"] == "build_model" and tags["mlopsctl.pipeline"] == "build_model"
    assert tags["mlopsctl.role"] == "single"
    assert tags["mlopsctl.engine"] == f"spark-connect({local_stack.settings.spark_remote})"  # the stack's server
    params = mrun.data.params
    assert (params["max_depth"], params["n_estimators"]) == ("80", "100")
    assert (params["test_size"], params["random_state"], params["target"]) == ("0.2", "42", "target")
    for metric in ("rmse", "mae", "r2"):
        assert math.isfinite(mrun.data.metrics[metric]), metric
    assert mrun.data.metrics["r2"] > 0.2
    name, version = tags["mlopsctl.registered_model_name"], tags["mlopsctl.registered_model_version"]
    assert name == "mlopsctl-random-forest"
    mv = mlflow_client.get_model_version(name, version)
    assert mv.run_id == mrun.info.run_id
    assert (mv.tags["max_depth"], mv.tags["n_estimators"], mv.tags["airflow_dag_run_id"]) == ("80", "100", run_id)


@pytest.mark.parametrize("name", ["grid", "grid_spark"])
def test_grid_search_shape(name, runs, stack_client, mlflow_client) -> None:
    dag_id, run_id, run = runs[name]
    assert run.state == "success", _explain(stack_client, dag_id, run_id)
    found = _runs_of(mlflow_client, dag_id, run_id)
    parents = [r for r in found if r.data.tags["mlopsctl.role"] == "parent"]
    children = [r for r in found if r.data.tags["mlopsctl.role"] == "child"]
    assert len(parents) == 1 and len(children) == 4 and len(found) == 5
    parent = parents[0]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert sorted((int(c.data.params["max_depth"]), int(c.data.params["n_estimators"])) for c in children) == [
        (3, 5), (3, 15), (8, 5), (8, 15)]
    for child in children:
        assert child.info.status == "FINISHED"
        assert {"cv_rmse_mean", "cv_rmse_std", "cv_r2_mean"} <= set(child.data.metrics)
    best_id = parent.data.tags["mlopsctl.best_child_run_id"]
    best = next(c for c in children if c.info.run_id == best_id)
    assert best.data.metrics["cv_rmse_mean"] == min(c.data.metrics["cv_rmse_mean"] for c in children)
    assert parent.data.params["best_max_depth"] == best.data.params["max_depth"]
    assert parent.data.params["best_n_estimators"] == best.data.params["n_estimators"]
    assert parent.data.params["cv"] == "2"
    assert parent.data.metrics["best_cv_rmse"] == pytest.approx(best.data.metrics["cv_rmse_mean"])
    assert all(math.isfinite(parent.data.metrics[m]) for m in ("rmse", "mae", "r2"))
    engine = parent.data.tags["mlopsctl.engine"]
    assert engine.startswith("spark-connect(sc://127.0.0.1:") if name == "grid_spark" else engine.startswith(
        "sklearn-joblib-threads(n_jobs=")
    assert "heatmap.png" in [a.path for a in mlflow_client.list_artifacts(parent.info.run_id)]
    assert parent.data.tags["mlopsctl.registered_model_version"]


def test_both_grid_searches_agree(runs, mlflow_client) -> None:
    parents = {}
    for name in ("grid", "grid_spark"):
        dag_id, run_id, run = runs[name]
        assert run.state == "success"
        parents[name] = next(r for r in _runs_of(mlflow_client, dag_id, run_id) if r.data.tags["mlopsctl.role"] == "parent")
    a, b = parents["grid"].data, parents["grid_spark"].data
    assert (a.params["best_max_depth"], a.params["best_n_estimators"]) == (
        b.params["best_max_depth"], b.params["best_n_estimators"])
    for metric in ("best_cv_rmse", "rmse", "mae", "r2"):
        assert a.metrics[metric] == pytest.approx(b.metrics[metric], rel=1e-9), metric


def test_missing_target_fails_the_first_task_clearly(runs, stack_client, mlflow_client) -> None:
    dag_id, run_id, run = runs["bad_target"]
    assert run.state == "failed"
    tis = _task_states(stack_client, dag_id, run_id)
    assert tis["preprocess_data"].state == "failed"
    assert tis["preprocess_data"].try_number == 1  # bad data is not retried
    assert tis["train_model"].state in ("upstream_failed", None)
    log = _log_text(stack_client, dag_id, run_id, "preprocess_data", 1)
    assert "target column 'nope' not found; columns are: age, sex, bmi, bp, s1, s2, s3, s4, s5, s6, target" in log
    assert _runs_of(mlflow_client, dag_id, run_id) == []


def test_user_csv_with_awkward_path(runs, stack_client, mlflow_client, user_csv: Path) -> None:
    dag_id, run_id, run = runs["user_csv"]
    assert run.state == "success", _explain(stack_client, dag_id, run_id)
    (mrun,) = _runs_of(mlflow_client, dag_id, run_id)
    assert mrun.data.params["data"] == str(user_csv)
    assert mrun.data.params["target"] == "progression"
    assert mrun.data.params["n_estimators"] == "5"
    assert "mlopsctl.registered_model_name" not in mrun.data.tags
    assert not (user_csv.parent / "pwned").exists()
    log = _log_text(stack_client, dag_id, run_id, "preprocess_data", 1)
    assert "text columns (1): site" in log
    log = _log_text(stack_client, dag_id, run_id, "train_model", 1)  # the model encodes and imputes
    assert "ordinal-encoded: site (2 categories)" in log
    assert "median-imputed: bmi=" in log


@pytest.mark.parametrize(
    ("dag_id", "conf", "fragment"),
    [
        ("build_model", {"max_depth": 0}, "max_depth"),
        ("build_model", {"max_depth": "abc"}, "max_depth"),
        ("grid_search", {"max_depth": []}, "max_depth"),
        ("grid_search_spark", {"cv": 1}, "cv"),
    ],
)
def test_bad_conf_is_rejected_by_airflow(stack_client, dag_id, conf, fragment) -> None:
    from mlopsctl.errors import RejectedError
    from mlopsctl.pipelines import new_dag_run_id

    with pytest.raises(RejectedError) as err:
        stack_client.trigger(dag_id, conf, dag_run_id=new_dag_run_id())
    assert fragment in str(err.value)


def test_r_style_csv_with_na_tokens_trains(runs, stack_client, mlflow_client, local_stack) -> None:
    dag_id, run_id, run = runs["r_csv"]
    assert run.state == "success", _explain(stack_client, dag_id, run_id)
    (mrun,) = _runs_of(mlflow_client, dag_id, run_id)
    assert mrun.data.metrics["n_rows_dropped"] == 50  # every ninth target was NA
    assert mrun.data.params["n_train"] == str(int((442 - 50) * 0.8))
    assert mrun.data.tags["mlopsctl.engine"] == f"spark-connect({local_stack.settings.spark_remote})"
    log = _log_text(stack_client, dag_id, run_id, "preprocess_data", 1)
    assert "rows read: 442, rows kept: 392 (dropped 50 with a null target)" in log
    log = _log_text(stack_client, dag_id, run_id, "train_model", 1)  # the model encodes and imputes
    assert "median-imputed: bmi=" in log and "s1=" in log
    assert "ordinal-encoded: clinic (1 categories)" in log  # NA is missing, not a category


def test_grid_on_r_style_csv_with_explicit_na_values(runs, stack_client, mlflow_client) -> None:
    dag_id, run_id, run = runs["r_csv_grid"]
    assert run.state == "success", _explain(stack_client, dag_id, run_id)
    parent = next(r for r in _runs_of(mlflow_client, dag_id, run_id) if r.data.tags["mlopsctl.role"] == "parent")
    assert parent.data.metrics["n_rows_dropped"] == 50
