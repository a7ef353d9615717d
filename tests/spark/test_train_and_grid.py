"""train_model, grid_search (joblib) and grid_search_spark (executors): outputs, equality, failures, MLflow shape."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import train_model
from mlopsctl_jobs import data, grid, model, search, tracking
from mlopsctl_jobs import session as job_session

JOBS_DIR = Path(train_model.__file__).resolve().parent

SMALL = {"max_depths": [3, 8], "n_estimators": [5, 15], "cv": 2, "test_size": 0.2, "random_state": 7}


def test_train_model_metrics_are_sane_on_diabetes(diabetes_xy) -> None:
    X, y = diabetes_xy
    result = train_model.run(X, y, max_depth=80, n_estimators=100, test_size=0.2, random_state=42)
    assert set(result.metrics) == {"rmse", "mae", "r2"}
    assert result.metrics["r2"] > 0.2
    assert 30 < result.metrics["rmse"] < 80
    assert 0 < result.metrics["mae"] < result.metrics["rmse"]
    assert (result.n_train, result.n_test) == (353, 89)
    forest = result.model.named_steps[model.FOREST_STEP].get_params()
    assert forest["max_depth"] == 80 and forest["n_estimators"] == 100


def test_on_diabetes_the_pipeline_is_the_forest_it_replaced(spark, tmp_path: Path, diabetes_xy) -> None:
    """Diabetes is all numeric with no gap: the Pipeline's first step passes the rows through unchanged, so
    build-model's defaults give the held-out metrics of the bare forest fitted on scikit-learn's own frame."""
    import preprocess_data
    from sklearn.ensemble import RandomForestRegressor

    out = data.training_path(str(tmp_path), "build_model", "manual__diabetes")
    preprocess_data.run(spark, None, "target", out)
    X, y = data.load_training(out)
    result = train_model.run(X, y, max_depth=80, n_estimators=100, test_size=0.2, random_state=42)
    np.testing.assert_array_equal(result.model.named_steps[model.PREPARE_STEP].transform(X), X.to_numpy())

    Xd, yd = diabetes_xy
    X_train, X_test, y_train, y_test = model.holdout_split(Xd, yd, 0.2, 42)
    bare = RandomForestRegressor(max_depth=80, n_estimators=100, random_state=42, n_jobs=-1).fit(X_train, y_train)
    assert result.metrics == pytest.approx(model.regression_metrics(y_test, bare.predict(X_test)), rel=1e-12)


def _raw_rows(diabetes_xy):
    """Diabetes with gaps in a numeric column and a text column holding both kinds of missing value."""
    X, y = diabetes_xy
    X = X.copy()
    X.loc[::7, "bmi"] = np.nan
    site = np.array(["north", "south", "east", None, "west", np.nan], dtype=object)
    X.insert(2, "site name", site[np.arange(len(X)) % len(site)])
    return X, y


def test_grid_searches_agree_on_raw_rows_with_text_and_gaps(spark, diabetes_xy) -> None:
    """The Spark grid sends the raw rows to its workers through Arrow (text as strings, gaps as nulls): each
    fold's Pipeline sees what joblib's sees, and scores the same."""
    X, y = _raw_rows(diabetes_xy)
    X, y = data.split_xy(X.assign(**{data.TARGET_COL: y}))
    # split_xy makes both kinds of missing value one, as the readers of the training table do
    assert [v for v in X["site name"] if not isinstance(v, str)] == [
        pytest.approx(math.nan, nan_ok=True)] * sum(i % 6 in (3, 5) for i in range(len(X)))
    grid_small = {**SMALL, "max_depths": [3], "n_estimators": [5, 15]}
    local, *_ = search.search(X, y, **grid_small, search_fn=_joblib)
    remote, *_ = search.search(
        X, y, **grid_small, search_fn=lambda X_, y_, pts, cv, rs: grid.run_grid_spark(spark, X_, y_, pts, cv, rs)
    )
    for a, b in zip(local, remote, strict=True):
        assert a.ok and b.ok, (a.error, b.error)
        assert a.cv_rmse_mean == pytest.approx(b.cv_rmse_mean, rel=1e-12)
        assert a.cv_r2_mean == pytest.approx(b.cv_r2_mean, rel=1e-12)


def test_train_model_is_reproducible(diabetes_xy) -> None:
    X, y = diabetes_xy
    a = train_model.run(X, y, max_depth=6, n_estimators=10, test_size=0.25, random_state=3).metrics
    b = train_model.run(X, y, max_depth=6, n_estimators=10, test_size=0.25, random_state=3).metrics
    c = train_model.run(X, y, max_depth=6, n_estimators=10, test_size=0.25, random_state=4).metrics
    # multi-threaded prediction sums tree outputs in any order: equal up to float rounding
    assert a == pytest.approx(b, rel=1e-12)
    assert a["rmse"] != pytest.approx(c["rmse"], rel=1e-6)


def _joblib(X, y, pts, cv, rs):
    return grid.run_grid_joblib(X, y, pts, cv, rs, n_jobs=2)


def test_grid_searches_agree(spark, diabetes_xy) -> None:
    X, y = diabetes_xy
    local, *_ = search.search(X, y, **SMALL, search_fn=_joblib)
    remote, *_ = search.search(
        X, y, **SMALL, search_fn=lambda X_, y_, pts, cv, rs: grid.run_grid_spark(spark, X_, y_, pts, cv, rs)
    )
    assert [(r.max_depth, r.n_estimators) for r in local] == [(3, 5), (3, 15), (8, 5), (8, 15)]
    assert [(r.max_depth, r.n_estimators) for r in remote] == [(3, 5), (3, 15), (8, 5), (8, 15)]
    for a, b in zip(local, remote):
        assert a.ok and b.ok
        assert a.cv_rmse_mean == pytest.approx(b.cv_rmse_mean, rel=1e-12)
        assert a.cv_rmse_std == pytest.approx(b.cv_rmse_std, rel=1e-12)
        assert a.cv_r2_mean == pytest.approx(b.cv_r2_mean, rel=1e-12)
        assert 40 < a.cv_rmse_mean < 90
    best_local, best_remote = grid.choose_best(local), grid.choose_best(remote)
    assert (best_local.max_depth, best_local.n_estimators) == (best_remote.max_depth, best_remote.n_estimators)
    assert best_local.cv_rmse_mean == min(r.cv_rmse_mean for r in local)


def test_failing_point_is_kept_as_failed(spark, diabetes_xy) -> None:
    X, y = diabetes_xy
    points = grid.grid_points([4], [0, 5])  # n_estimators=0 makes scikit-learn raise
    for results in (
        grid.run_grid_joblib(X, y, points, 2, 0, n_jobs=2),
        grid.run_grid_spark(spark, X, y, points, 2, 0),
    ):
        failed, ok = results
        assert not failed.ok and "n_estimators" in failed.error and failed.cv_rmse_mean is None
        assert ok.ok and math.isfinite(ok.cv_rmse_mean)
        assert grid.choose_best(results) is ok


def test_all_points_failing_is_a_grid_error(diabetes_xy) -> None:
    X, y = diabetes_xy
    results = grid.run_grid_joblib(X, y, grid.grid_points([4], [0]), 2, 0, n_jobs=1)
    with pytest.raises(grid.GridError, match="all 1 grid points failed"):
        grid.choose_best(results)


def test_the_joblib_search_fits_in_threads_of_this_process(diabetes_xy, monkeypatch) -> None:
    """No worker process is started (none to start per search, none left to slow the job's exit), and two
    fits run at once: each thread's first fit waits at a barrier for the other's."""
    import threading

    import psutil

    both_fitting = threading.Barrier(2, timeout=30)
    seen: set[str] = set()
    fit = grid.evaluate_fold

    def fit_in_step(*args, **kwargs):
        name = threading.current_thread().name
        if name not in seen:
            seen.add(name)
            both_fitting.wait()  # BrokenBarrierError unless a second thread fits meanwhile
        return fit(*args, **kwargs)

    monkeypatch.setattr(grid, "evaluate_fold", fit_in_step)
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    X, y = diabetes_xy
    results = grid.run_grid_joblib(X, y, [(3, 5), (4, 5), (5, 5), (6, 5)], cv=2, random_state=7, n_jobs=2)
    assert all(r.ok for r in results)
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= before
    assert len(seen) == 2 and threading.main_thread().name not in seen


def test_grid_tasks_come_costliest_first_and_cover_every_fit_once() -> None:
    points = grid.grid_points([4, 16], [10, 30])
    tasks = grid.grid_tasks(points, folds=[None, None])
    assert sorted(tasks) == sorted((d, n, k) for d, n in points for k in (0, 1))
    assert tasks[:2] == [(16, 30, 0), (16, 30, 1)] and tasks[-2:] == [(4, 10, 0), (4, 10, 1)]
    costs = [d * n for d, n, _ in tasks]
    assert costs == sorted(costs, reverse=True)


def test_fold_indices_cover_every_row_once() -> None:
    folds = grid.fold_indices(10, 3, 1)
    tested = sorted(i for _, test in folds for i in test)
    assert tested == list(range(10))
    assert grid.fold_indices(10, 3, 1)[0][1].tolist() == folds[0][1].tolist()


def test_heatmap_figure_marks_failed_points() -> None:
    results = [
        grid.PointResult(3, 5, 60.0, 1.0, 0.3),
        grid.PointResult(3, 15, 58.0, 1.0, 0.35),
        grid.PointResult(8, 5, error="boom"),
        grid.PointResult(8, 15, 57.0, 1.0, 0.4),
    ]
    fig = tracking.heatmap_figure(results)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["60.00", "58.00", "failed", "57.00"]


@pytest.fixture
def mlflow_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_log_grid_shape(mlflow_uri: str, diabetes_xy) -> None:
    import mlflow

    X, y = diabetes_xy
    points = grid.grid_points([3, 6], [0, 8])  # the two n_estimators=0 points fail
    results, X_train, X_test, y_train, y_test = search.search(
        X, y, max_depths=[3, 6], n_estimators=[0, 8], cv=2, test_size=0.2, random_state=1, search_fn=_joblib
    )
    assert len(results) == len(points)

    def refit(best):
        fitted = model.train_model(X_train, y_train, best.max_depth, best.n_estimators, 1)
        return fitted, model.evaluate_model(fitted, X_test, y_test)

    exp_id = tracking.setup_mlflow(mlflow_uri, "/mlopsctl/grid_search")
    outcome = tracking.log_grid(
        experiment_id=exp_id, dag_id="grid_search", dag_run_id="manual__x", try_number=1,
        engine="sklearn-joblib(n_jobs=2)", results=results, cv=2, common_params={"test_size": 0.2},
        refit=refit, X_sample=X_train, holdout_rows=(X_test, y_test), target="progression", register_as="unit-rf",
    )
    client = mlflow.MlflowClient()
    parent = client.get_run(outcome.parent_run_id)
    assert parent.data.tags["mlopsctl.role"] == "parent"
    assert parent.data.tags["airflow.dag_run_id"] == "manual__x"
    assert parent.data.tags["airflow.dag_id"] == "grid_search"
    assert parent.data.tags["mlopsctl.engine"] == "sklearn-joblib(n_jobs=2)"
    assert parent.data.params["best_n_estimators"] == "8"
    assert parent.data.params["cv"] == "2"
    assert set(parent.data.metrics) >= {"best_cv_rmse", "rmse", "mae", "r2"}
    assert parent.data.tags["mlopsctl.registered_model_name"] == "unit-rf"
    version = parent.data.tags["mlopsctl.registered_model_version"]
    mv = client.get_model_version("unit-rf", version)
    assert mv.tags["mlflow_run_id"] == outcome.parent_run_id
    assert mv.tags["n_estimators"] == "8"
    assert mv.tags[tracking.INPUT_TAG] == tracking.INPUT_RAW and mv.tags[tracking.TARGET_TAG] == "progression"
    assert "heatmap.png" in [a.path for a in client.list_artifacts(outcome.parent_run_id)]
    [split] = client.list_artifacts(outcome.parent_run_id, "eval")
    assert split.path == tracking.EVAL_SPLIT_ARTIFACT

    children = client.search_runs([exp_id], filter_string="tags.mlopsctl.role = 'child'")
    assert len(children) == 4
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {outcome.parent_run_id}
    failed = [c for c in children if c.info.status == "FAILED"]
    assert sorted(c.data.params["n_estimators"] for c in failed) == ["0", "0"]
    assert all("mlopsctl.error" in c.data.tags for c in failed)
    ok = [c for c in children if c.info.status == "FINISHED"]
    assert all({"cv_rmse_mean", "cv_rmse_std", "cv_r2_mean"} <= set(c.data.metrics) for c in ok)
    assert parent.data.tags["mlopsctl.best_child_run_id"] in {c.info.run_id for c in ok}

    # the logged model loads back and predicts
    loaded = mlflow.sklearn.load_model(f"models:/unit-rf/{version}")
    assert loaded.predict(X_test.head(3)).shape == (3,)


def test_the_refit_runs_while_the_child_runs_are_logged(mlflow_uri: str, diabetes_xy, monkeypatch) -> None:
    """The best point's refit runs in a thread of its own: the first child run is only logged once the refit
    has started, which waits forever (here: 30 s, then fails) if the two run one after the other."""
    import threading

    X, y = diabetes_xy
    refit_started = threading.Event()
    refit_threads: list[str] = []
    tags = tracking.run_tags

    def child_after_refit_started(dag_id, run_id, role, *args, **kwargs):
        if role == "child":
            assert refit_started.wait(timeout=30), "the first child run was logged before the refit started"
        return tags(dag_id, run_id, role, *args, **kwargs)

    def refit(best):
        refit_threads.append(threading.current_thread().name)
        refit_started.set()
        fitted = model.train_model(X, y, best.max_depth, best.n_estimators, 1)
        return fitted, model.evaluate_model(fitted, X, y)

    monkeypatch.setattr(tracking, "run_tags", child_after_refit_started)
    exp_id = tracking.setup_mlflow(mlflow_uri, "/mlopsctl/grid_search")
    outcome = tracking.log_grid(
        experiment_id=exp_id, dag_id="grid_search", dag_run_id="manual__overlap", try_number=1, engine="e",
        results=[grid.PointResult(3, 5, 60.0, 1.0, 0.3), grid.PointResult(4, 5, 59.0, 1.0, 0.3)], cv=2,
        common_params={}, refit=refit, X_sample=X, holdout_rows=(X, y), target="target", register_as=None,
    )
    assert len(outcome.child_run_ids) == 2 and (outcome.best.max_depth, outcome.best.n_estimators) == (4, 5)
    assert set(outcome.holdout) == {"rmse", "mae", "r2"}
    assert refit_threads and refit_threads != [threading.main_thread().name]


def test_tracking_setup_runs_beside_the_training_table_read(diabetes_xy, monkeypatch) -> None:
    """MLflow's setup starts before the training table is read: the read waits for it to have started (30 s, then
    fails), and the search then uses the experiment it returned."""
    import argparse
    import threading

    X, y = diabetes_xy
    setup_started = threading.Event()
    logged: dict[str, object] = {}

    def prepare_tracking(args, *, figures=False):
        setup_started.set()
        return "exp-7"

    def load():
        assert setup_started.wait(timeout=30), "the table was read before MLflow's setup started"
        return X, y, 3

    def log_grid(**kwargs):
        logged.update(kwargs)
        best = grid.choose_best(kwargs["results"])
        _model, holdout = kwargs["refit"](best)
        return tracking.GridOutcome("parent", best, holdout, [], (None, None))

    monkeypatch.setattr(tracking, "prepare_tracking", prepare_tracking)
    monkeypatch.setattr(tracking, "log_grid", log_grid)
    args = argparse.Namespace(dag_id="grid_search", run_id="manual__t", try_number=1, data=None, target="target",
                              max_depth=[3], n_estimators=[5], cv=2, test_size=0.2, random_state=7,
                              register_model=None)
    outcome = search.search_and_log(args, load, "e", _joblib)
    assert logged["experiment_id"] == "exp-7" and logged["extra_metrics"] == {"n_rows_dropped": 3}
    assert (outcome.best.max_depth, outcome.best.n_estimators) == (3, 5)


def test_a_failed_read_does_not_wait_for_the_tracking_setup(monkeypatch) -> None:
    """Bad data ends the job while MLflow's setup is still running (a tracking server that does not answer
    keeps MLflow's client retrying for minutes): the DataError reaches the caller before that thread ends."""
    import argparse
    import threading

    setup_running, caller_saw_error, setup_ended = threading.Event(), threading.Event(), threading.Event()
    setup_outcome: list[str] = []

    def prepare_tracking(args, *, figures=False):
        setup_running.set()
        setup_outcome.append("released by the caller" if caller_saw_error.wait(timeout=60) else "waited out")
        setup_ended.set()
        return "exp-1"

    def load():
        assert setup_running.wait(timeout=30)
        raise data.DataError("target column 'target' not found")

    monkeypatch.setattr(tracking, "prepare_tracking", prepare_tracking)
    args = argparse.Namespace(dag_id="grid_search", run_id="manual__t", try_number=1, data=None, target="target",
                              max_depth=[3], n_estimators=[5], cv=2, test_size=0.2, random_state=7,
                              register_model=None)
    with pytest.raises(data.DataError, match="target column"):
        search.search_and_log(args, load, "e", _joblib)
    caller_saw_error.set()
    assert setup_ended.wait(timeout=90)
    assert setup_outcome == ["released by the caller"]


def test_log_grid_all_failed_logs_nothing(mlflow_uri: str) -> None:
    import mlflow

    exp_id = tracking.setup_mlflow(mlflow_uri, "/mlopsctl/grid_search")
    with pytest.raises(grid.GridError):
        tracking.log_grid(
            experiment_id=exp_id, dag_id="grid_search", dag_run_id="r", try_number=None, engine="e",
            results=[grid.PointResult(1, 1, error="x")], cv=2, common_params={},
            refit=lambda best: pytest.fail("no refit when every point failed"), X_sample=None, holdout_rows=None,
            target="target", register_as=None,
        )
    assert mlflow.MlflowClient().search_runs([exp_id]) == []


def test_stale_running_runs_of_a_retried_task_are_closed(mlflow_uri: str) -> None:
    import mlflow

    exp_id = tracking.setup_mlflow(mlflow_uri, "/mlopsctl/build_model")
    client = mlflow.MlflowClient()
    crashed = client.create_run(exp_id, tags={"airflow.dag_run_id": "manual__r1"})  # left RUNNING by a killed try
    other = client.create_run(exp_id, tags={"airflow.dag_run_id": "manual__r2"})
    assert tracking.close_stale_runs(exp_id, "manual__r1") == [crashed.info.run_id]
    closed = client.get_run(crashed.info.run_id)
    assert closed.info.status == "FAILED"
    assert closed.data.tags["mlopsctl.error"] == "superseded by a retry of the Airflow task"
    assert client.get_run(other.info.run_id).info.status == "RUNNING"


def test_spark_fixture_is_a_connect_client_without_a_spark_context(spark) -> None:
    from pyspark.errors import PySparkAttributeError

    assert job_session.is_connect(spark)
    with pytest.raises(PySparkAttributeError):
        spark.sparkContext  # noqa: B018 - Databricks serverless and standard access mode refuse it too


def test_session_honours_spark_remote_and_names_the_engine(connect_server, monkeypatch, capsys) -> None:
    monkeypatch.setenv("SPARK_REMOTE", f"{connect_server.url}/;user_id=tests")
    session = job_session.spark_session("mlopsctl-engine-test")
    assert session.range(5).count() == 5
    engine = job_session.engine_name(session)
    assert engine == f"spark-connect({connect_server.url}/)"
    assert f"spark: {engine}" in capsys.readouterr().out


def test_the_package_is_shipped_to_connect_workers_only_from_a_folder(spark, monkeypatch) -> None:
    import sysconfig
    import zipfile

    archive = job_session.ship_package_to_workers(spark)  # run from spark_jobs/: added as a session artifact
    assert archive is not None and archive.name.startswith("mlopsctl_jobs-") and archive.suffix == ".zip"
    names = zipfile.ZipFile(archive).namelist()
    assert {"mlopsctl_jobs/__init__.py", "mlopsctl_jobs/grid.py"} <= set(names)
    assert not [n for n in names if "__pycache__" in n]
    assert job_session.ship_package_to_workers(spark) == archive  # cached by content: the same zip again
    monkeypatch.setattr(sysconfig, "get_paths", lambda: {"purelib": str(JOBS_DIR), "platlib": str(JOBS_DIR)})
    assert job_session.ship_package_to_workers(spark) is None  # installed (the Databricks wheel): nothing to ship


def test_the_workers_import_the_shipped_package_not_the_jobs_folder(spark) -> None:
    """The session's Python workers import mlopsctl_jobs from the zip the session added, not from the
    checkout (which a remote worker would not have)."""

    def where(batches):
        import mlopsctl_jobs
        import pandas as pd

        for _ in batches:
            pass
        yield pd.DataFrame({"origin": [mlopsctl_jobs.__file__]})

    (row,) = spark.range(0, 1, 1, 1).mapInPandas(where, "origin string").collect()
    assert ".zip" in row.origin and str(JOBS_DIR) not in row.origin


def test_grid_workers_with_another_jobs_wheel_fit_nothing_and_the_job_stops(spark, diabetes_xy) -> None:
    """Finding 3 on the workers: given the jobs' version the task was deployed with, a worker that has
    another one (here: none, the package came as a zip) fits nothing, and the driver raises StaleJobsError,
    which the job turns into exit 3. (Without an expected version, as in the tests above, nothing is checked.)"""
    from mlopsctl_jobs import installed

    X, y = diabetes_xy
    points = grid.grid_points([3], [5])
    with pytest.raises(installed.StaleJobsError, match="a Spark worker of the grid: this compute has no "
                                                       "mlopsctl-jobs installed.*0.1.0\\+stale.*restart"):
        grid.run_grid_spark(spark, X, y, points, 2, 0, expected_version="0.1.0+stale")


def test_a_stale_worker_returns_every_task_it_was_given_unfitted(diabetes_xy) -> None:
    import pandas as pd

    X, y = diabetes_xy
    tasks = [(3, 5, 0), (3, 5, 1), (6, 5, 0)]
    rows = X.head(10).assign(**{data.TARGET_COL: y.head(10), data.ROW_ID_COL: range(10)})
    batches = [rows.assign(**{grid.TASK_COL: task_id}) for task_id in (2, 0)]
    out = pd.concat(grid.evaluate_task_batches(iter(batches), tasks, 2, 0, expected_version="0.1.0+stale"))
    assert sorted(zip(out.max_depth, out.fold)) == [(3, 0), (6, 0)]
    assert out.rmse.isna().all() and out.error.str.startswith(grid.STALE_PREFIX).all()


def test_jobs_run_mlflow_without_its_telemetry_thread() -> None:
    """MLflow's telemetry thread edits os.environ while requests iterate it (KeyError mid-request): the
    jobs turn it off before importing MLflow. Checked in a process without the CI/pytest variables that
    would turn it off anyway, as a task's job process has."""
    import os
    import subprocess
    import sys

    jobs = JOBS_DIR
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTEST", "CI", "GITHUB", "MLFLOW", "DO_NOT_TRACK", "BUILD", "JENKINS"))}
    code = ("from mlopsctl_jobs import tracking; tracking.quiet_mlflow_env(); "
            "from mlflow.telemetry.utils import is_telemetry_disabled; print(is_telemetry_disabled())")
    out = subprocess.run([sys.executable, "-c", code], cwd=jobs, env=env, capture_output=True, text=True,
                         timeout=300, check=True)
    assert out.stdout.strip().splitlines()[-1] == "True", out.stderr[-2000:]
