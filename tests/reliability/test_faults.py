"""Faults: each ends with nothing lost -- the run finishes or fails clearly, Airflow holds
exactly the runs it should (no duplicate), MLflow exactly the runs it should.

Faults are injected at the transport (an httpx transport that forwards to the real Airflow and then drops
the response; an invalidated token) or by stopping/killing a real process of the session stack. Every test
that stops a component restores the whole stack to healthy afterwards (`stack_healthy`, the code of
`mlopsctl dev start`), so the tests after it find a working stack.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlopsctl.errors import ExitCode, MlopsctlError, UnreachableError
from tests.reliability._helpers import (
    CLI_TIMEOUT,
    airflow_runs,
    assert_clean_error,
    cli,
    cli_env,
    json_out,
    metrics,
    mlflow_runs,
    params,
    tags,
)

SMALL = ["--n-estimators", "5", "--max-depth", "4", "--no-register"]
WAIT = 600  # upper bound of any wait below, short of pytest's timeout so a hang names what it waited for


def _wait_for(predicate, what: str, timeout: float = WAIT, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def _task_state(stack, dag_id: str, run_id: str, task_id: str) -> str | None:
    with stack.client() as client:
        for ti in client.task_instances(dag_id, run_id):
            if ti.task_id == task_id:
                return ti.state
    return None


def _task_started(stack, dag_id: str, run_id: str, task_id: str) -> str:
    """Wait until the task runs or has run. A task may pass through "running" between two polls, so
    "success" counts too; a task that failed ends the wait at once."""

    def started() -> str | None:
        state = _task_state(stack, dag_id, run_id, task_id)
        if state in ("failed", "upstream_failed"):
            raise AssertionError(f"{task_id} of {dag_id} run {run_id} ended {state}")
        return state if state in ("running", "success") else None

    return _wait_for(started, f"{task_id} to start")


def _component_record(stack, name: str):
    from mlopsctl.devenv.layout import StackLayout
    from mlopsctl.devenv.process import read_pid_file

    return read_pid_file(StackLayout.from_settings(stack.settings).pid_file(name))


def _stop_component(stack, name: str) -> None:
    """Stop one component of the stack the way `dev stop` does (its whole process group)."""
    from mlopsctl.devenv.process import terminate

    record = _component_record(stack, name)
    assert record is not None, f"{name} has no PID file"
    assert terminate([record], grace=20.0) == []


def _start_cli(stack, *argv: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mlopsctl", *argv], env=env or cli_env(stack), cwd=str(stack.project_dir),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )


def _new_run(stack, dag_id: str, before: set[str]) -> str:
    def find() -> str | None:
        fresh = [r.dag_run_id for r in airflow_runs(stack, dag_id) if r.dag_run_id not in before]
        return fresh[0] if fresh else None

    return _wait_for(find, "the CLI's run to appear in Airflow")


# --- follow keeps going through an outage (unit level: the polling loop itself) ----------------------


class _Flaky:
    """A RunSource whose first calls fail as an api-server restart does, then answers."""

    def __init__(self, failures: int):
        from mlopsctl.airflow.models import DagRun

        self.failures = failures
        self.calls = 0
        self.run = DagRun.model_validate({"dag_run_id": "r1", "dag_id": "d", "state": "success", "conf": {}})

    def get_run(self, dag_id, dag_run_id):
        self.calls += 1
        if self.calls <= self.failures:
            raise UnreachableError("Airflow is not reachable at http://127.0.0.1:1 (connection refused).")
        return self.run

    def task_instances(self, dag_id, dag_run_id):
        return []


def test_follow_survives_an_outage_and_gives_up_after_the_grace() -> None:
    from mlopsctl.runs import follow_run

    clock = [0.0]
    source = _Flaky(failures=5)
    result = follow_run(source, "d", "r1", clock=lambda: clock[0],
                        sleep=lambda s: clock.__setitem__(0, clock[0] + s), outage_grace=60)
    assert result.succeeded and source.calls == 6
    source = _Flaky(failures=10**6)
    clock[0] = 0.0
    with pytest.raises(UnreachableError):
        follow_run(source, "d", "r1", clock=lambda: clock[0], sleep=lambda s: clock.__setitem__(0, clock[0] + s),
                   outage_grace=60)
    assert 10 < source.calls < 100  # it kept trying for the grace period, then stopped


# --- live ------------------------------------------------------------------------------------------------


class LoseFirstTriggerResponse(httpx.BaseTransport):
    """Forwards every request to the real Airflow; the first POST .../dagRuns is sent and processed by
    Airflow, but its response is dropped and the client sees a ReadError (a connection reset)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.trigger_posts = 0
        self.token_posts = 0
        self.unauthorized = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.url.path == "/auth/token":
            self.token_posts += 1
        if response.status_code in (401, 403):
            self.unauthorized += 1
        if request.method == "POST" and request.url.path.endswith("/dagRuns"):
            self.trigger_posts += 1
            if self.trigger_posts == 1:
                response.read()
                response.close()
                raise httpx.ReadError("connection reset by peer (injected after Airflow got the request)",
                                      request=request)
        return response

    def close(self) -> None:
        self.inner.close()


def test_lost_trigger_response_then_expired_token_lose_nothing(local_stack) -> None:
    """The trigger's response is lost -> the client's retry finds the run it created (409 -> same run):
    exactly one Airflow run with that id. Mid-follow the cached token goes bad -> refreshed silently. The
    run succeeds and MLflow holds exactly one run for it, with the conf's params."""
    from mlopsctl.airflow.client import AirflowClient
    from mlopsctl.pipelines import build_conf, new_dag_run_id
    from mlopsctl.runs import follow_run

    transport = LoseFirstTriggerResponse()
    client = AirflowClient(local_stack.airflow_url, username="admin", password=local_stack.password,
                           transport=transport, backoff=0.2)
    conf = build_conf("build-model", max_depth=4, n_estimators=6, register=None)
    run_id = new_dag_run_id()
    with client:
        client.set_paused("build_model", False)
        before = len(airflow_runs(local_stack, "build_model"))
        run = client.trigger("build_model", conf, dag_run_id=run_id)
        assert run.dag_run_id == run_id and run.conf == conf
        assert transport.trigger_posts == 2  # the original (response lost) + the retry (409 -> existing run)
        assert len(airflow_runs(local_stack, "build_model", run_id)) == 1
        assert len(airflow_runs(local_stack, "build_model")) == before + 1

        tokens_before = transport.token_posts
        polls = [0]

        def sleep(seconds: float) -> None:
            polls[0] += 1
            if polls[0] == 2:
                client._auth.token = "an.expired.token"  # what a token past its 24 h looks like to Airflow
            time.sleep(seconds)

        result = follow_run(client, "build_model", run_id, sleep=sleep)
    assert result.succeeded, [(t.task_id, t.state) for t in result.tasks]
    assert transport.unauthorized >= 1 and transport.token_posts == tokens_before + 1  # refreshed once, silently
    assert len(airflow_runs(local_stack, "build_model", run_id)) == 1
    runs = mlflow_runs(local_stack, "build_model", run_id)
    assert len(runs) == 1
    assert params(runs[0])["max_depth"] == "4" and params(runs[0])["n_estimators"] == "6"
    assert {"rmse", "mae", "r2"} <= set(metrics(runs[0]))


def test_airflow_down_before_trigger_is_a_clear_error_and_creates_nothing(local_stack) -> None:
    from tests.fixtures.stack import free_port

    before = len(airflow_runs(local_stack, "build_model"))
    dead = f"http://127.0.0.1:{free_port()}"
    env = cli_env(local_stack, MLOPSCTL_AIRFLOW_URL=dead, MLOPSCTL_AIRFLOW_PASSWORD=local_stack.password)
    res = cli("run", "build-model", *SMALL, stack=local_stack, env=env)
    assert res.returncode == ExitCode.UNREACHABLE, res.stderr
    assert_clean_error(res)
    assert f"Error: Airflow is not reachable at {dead}" in res.stderr
    assert len(airflow_runs(local_stack, "build_model")) == before


def test_api_server_restart_while_following(local_stack, stack_healthy) -> None:
    """The api-server goes away while `run build-model` follows its run, and comes back: the CLI keeps
    following (one warning), then prints the result; one Airflow run, one MLflow run."""
    from mlopsctl.devenv.start import start_stack

    before = {r.dag_run_id for r in airflow_runs(local_stack, "build_model")}
    proc = _start_cli(local_stack, "run", "build-model", *SMALL, "--json")
    try:
        run_id = _new_run(local_stack, "build_model", before)
        _task_started(local_stack, "build_model", run_id, "preprocess_data")
        _stop_component(local_stack, "api-server")
        time.sleep(8)  # the CLI polls a dead api-server meanwhile
        start_stack(local_stack.settings)
        out, err = proc.communicate(timeout=CLI_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, (out, err)
    assert "Traceback" not in err
    assert "Airflow is not reachable" in err and "Still following run" in err
    doc = json.loads(out)
    assert doc["dag_run_id"] == run_id and doc["state"] == "success"
    assert len(airflow_runs(local_stack, "build_model", run_id)) == 1
    assert len(mlflow_runs(local_stack, "build_model", run_id)) == 1


@pytest.mark.slow
def test_scheduler_kill_9_mid_run_then_restart(local_stack, stack_healthy) -> None:
    """kill -9 the scheduler while a task runs, restart the stack: the run ends (success, or failed with
    a clear message), nothing is duplicated, and `status --wait` reports it."""
    from mlopsctl.devenv.start import start_stack

    res = cli("run", "build-model", *SMALL, "--no-wait", "--json", stack=local_stack)
    assert res.returncode == 0, res.stderr
    run_id = json_out(res)["dag_run_id"]
    _task_started(local_stack, "build_model", run_id, "preprocess_data")
    record = _component_record(local_stack, "scheduler")
    os.kill(record.pid, signal.SIGKILL)
    time.sleep(3)
    start_stack(local_stack.settings)
    res = cli("status", run_id, "--wait", "--json", stack=local_stack)
    assert_clean_error(res)
    doc = json_out(res)
    assert doc["state"] in ("success", "failed"), doc
    if doc["state"] == "success":
        assert res.returncode == 0
        assert len(mlflow_runs(local_stack, "build_model", run_id)) == 1
    else:
        assert res.returncode == ExitCode.RUN_FAILED
        assert f"Run {run_id} of build_model ended failed" in res.stderr
        assert len(mlflow_runs(local_stack, "build_model", run_id)) <= 1
    assert len(airflow_runs(local_stack, "build_model", run_id)) == 1


def test_mlflow_down_during_a_pipeline(local_stack, stack_healthy) -> None:
    """MLflow is stopped before train_model logs: the job's MLflow client retries (the warnings are in the
    task log), MLflow comes back, the run succeeds with exactly one MLflow run. Then a read with MLflow
    unreachable still prints the Airflow result, with a warning."""
    from mlopsctl.devenv.start import start_stack

    res = cli("run", "build-model", *SMALL, "--no-wait", "--json", stack=local_stack)
    run_id = json_out(res)["dag_run_id"]
    _task_started(local_stack, "build_model", run_id, "preprocess_data")
    _stop_component(local_stack, "mlflow")

    outage_line = f"mlopsctl: MLflow tracking server {local_stack.mlflow_url} is not reachable"

    def train_hit_the_outage() -> bool:
        state = _task_state(local_stack, "build_model", run_id, "train_model")
        if state in ("success", "failed", "upstream_failed", "up_for_retry"):
            return True
        if state != "running":
            return False
        try:
            with local_stack.client() as client:
                text = "\n".join(client.read_log("build_model", run_id, "train_model", 1))
        except MlopsctlError:  # the log may not be served yet
            return False
        return outage_line in text

    _wait_for(train_hit_the_outage, "train_model to meet the MLflow outage", interval=2)
    start_stack(local_stack.settings)
    res = cli("status", run_id, "--wait", "--json", stack=local_stack)
    doc = json_out(res)
    assert_clean_error(res)
    with local_stack.client() as client:
        tis = {t.task_id: t for t in client.task_instances("build_model", run_id)}
        log = "\n".join(client.read_log("build_model", run_id, "train_model", 1))
    assert outage_line in log, log[-3000:]  # one clear line while MLflow's client retries silently
    assert len(airflow_runs(local_stack, "build_model", run_id)) == 1
    runs = [r for r in mlflow_runs(local_stack, "build_model", run_id)]
    if doc["state"] == "success":
        assert res.returncode == 0
        assert len(runs) == 1 and runs[0]["info"]["status"] == "FINISHED"
    else:  # the outage outlasted the retries: a clear failure, nothing half-written
        assert res.returncode == ExitCode.RUN_FAILED
        assert tis["train_model"].state == "failed"
        assert all(r["info"]["status"] != "FINISHED" for r in runs)

    # reads with MLflow unreachable: the Airflow result is printed, with a warning, and exit OK
    from tests.fixtures.stack import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    res = cli("status", run_id, "--json", stack=local_stack,
              env=cli_env(local_stack, MLOPSCTL_MLFLOW_TRACKING_URI=dead))
    assert_clean_error(res)
    doc = json_out(res)
    assert doc["dag_run_id"] == run_id and doc["state"] in ("success", "failed")
    if doc["state"] == "success":
        assert res.returncode == 0
        assert any("MLflow result unavailable" in w for w in doc["warnings"]), doc["warnings"]
        assert "MLflow result unavailable" in res.stderr


def test_spark_job_crash_shows_the_jobs_error_in_the_log_tail(local_stack, tmp_path: Path) -> None:
    """A .parquet file that is really CSV text makes Spark raise inside preprocess_data: the task fails
    (after its retry), the CLI exits RUN_FAILED and prints the job's error in the log tail."""
    bad = tmp_path / "not really.parquet"
    bad.write_text("a,target\n1,2\n")
    res = cli("run", "build-model", "--data", str(bad), *SMALL, "--json", stack=local_stack)
    assert res.returncode == ExitCode.RUN_FAILED, res.stderr
    assert_clean_error(res)
    doc = json_out(res)
    assert doc["failed_task"] == "preprocess_data"
    tail = "\n".join(doc["log_tail"])
    assert re.search(r"preprocess_data\.py failed \(exit \d+\)", tail), tail
    assert re.search(r"(?i)parquet", tail), tail
    assert "Task preprocess_data failed" not in res.stdout  # --json: one document on stdout
    assert f"Run {doc['dag_run_id']} of build_model ended failed: task 'preprocess_data' failed." in res.stderr
    assert mlflow_runs(local_stack, "build_model", doc["dag_run_id"]) == []
    # the table view prints the same tail for a human
    res = cli("status", doc["dag_run_id"], stack=local_stack)
    assert "Task preprocess_data failed; last" in res.stdout and re.search(r"(?i)parquet", res.stdout)


# --- one grid point raising (the job's own code against the real MLflow server) --------------------------


def test_one_failing_grid_point_is_recorded_and_the_best_is_chosen_among_the_others(local_stack, monkeypatch) -> None:
    """Run the grid_search job's search+log body against the stack's MLflow with a fault injected into one
    grid point's fits (max_depth=3): that child run is FAILED with the error tag; the other points are
    kept and the parent's best is the lowest cv rmse among them; mlopsctl's tracking view shows all."""
    import argparse
    import uuid

    from tests.reliability.test_properties import _load_job

    job = _load_job("grid_search")
    job_grid, job_search = job.grid, job.search  # the package modules the job imported
    real_train = job_grid.model.train_model

    def train(X, y, max_depth, n_estimators, random_state, n_jobs=1):
        if max_depth == 3:
            raise MemoryError("injected: grid point max_depth=3 blew up")
        return real_train(X, y, max_depth, n_estimators, random_state, n_jobs=1)

    monkeypatch.setattr(job_grid.model, "train_model", train)
    run_id = f"reliability__{uuid.uuid4().hex[:10]}"
    args = argparse.Namespace(
        dag_id="grid_search", run_id=run_id, try_number=1, work_dir="", data=None, target="target",
        tracking_uri=local_stack.mlflow_url, registry_uri=None, experiment_prefix="/mlopsctl",
        max_depth=[2, 3, 5], n_estimators=[5, 10], cv=2, test_size=0.2, random_state=42, register_model=None,
    )
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True)
    outcome = job_search.search_and_log(args, lambda: (frame.data, frame.target, None), "test-injected",
                                        lambda X, y, pts, cv, rs: job_grid.run_grid_joblib(X, y, pts, cv, rs, n_jobs=1))
    runs = mlflow_runs(local_stack, "grid_search", run_id)
    parent = [r for r in runs if tags(r)["mlopsctl.role"] == "parent"]
    children = [r for r in runs if tags(r)["mlopsctl.role"] == "child"]
    assert len(parent) == 1 and len(children) == 6
    failed = [c for c in children if c["info"]["status"] == "FAILED"]
    assert sorted(params(c)["n_estimators"] for c in failed) == ["10", "5"]
    assert all(params(c)["max_depth"] == "3" for c in failed)
    assert all("injected: grid point max_depth=3 blew up" in tags(c)["mlopsctl.error"] for c in failed)
    ok = [c for c in children if c["info"]["status"] == "FINISHED"]
    assert len(ok) == 4
    best = min(ok, key=lambda c: metrics(c)["cv_rmse_mean"])
    p = params(parent[0])
    assert (p["best_max_depth"], p["best_n_estimators"]) == (params(best)["max_depth"], params(best)["n_estimators"])
    assert tags(parent[0])["mlopsctl.best_child_run_id"] == best["info"]["run_id"]
    assert outcome.best.max_depth != 3

    from mlopsctl.tracking import Tracking

    tracking = Tracking(local_stack.mlflow_url)
    try:
        points = tracking.outcome("parent", "grid_search", run_id).points
    finally:
        tracking.close()
    assert len(points) == 6
    bad = [pt for pt in points if pt["status"] == "failed"]
    assert len(bad) == 2 and all(pt["max_depth"] == 3 and pt["rank"] is None for pt in bad)
    assert all("injected" in (pt["error"] or "") for pt in bad)
    top = [pt for pt in points if pt["best"]]
    assert len(top) == 1 and top[0]["rank"] == 1 and top[0]["run_id"] == best["info"]["run_id"]
