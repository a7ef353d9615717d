"""Load: 20 `run build-model` CLI calls at once (one thread each, each following its own
run), plus `status` polled meanwhile, on the embedded stack.

Asserts that all 20 complete, Airflow holds exactly 20 new runs (no duplicate), MLflow exactly 20 runs,
each with the params its CLI call asked for. Reports (never asserts) the wall time and the stack's peak
RSS (psutil, summed over every process of the stack: components, executor workers, tasks, Spark JVMs).

On Airflow with SQLite this load made the components crash with "database is locked" until the embedded
stack loaded its SQLite plugin (mlopsctl/devenv/airflow_plugins/mlopsctl_sqlite.py); the failure, the fix
and the load's measured cost are in docs/local-stack.md ("Airflow on SQLite").
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Self

import pytest

from tests.reliability._helpers import airflow_runs, cli, json_out, mlflow_runs, params, stack_processes, tags

pytestmark = pytest.mark.slow

N_RUNS = 20


def _db_locked_count(stack) -> int:
    """How often "database is locked" appears in the stack's component logs (SQLite write-lock timeouts)."""
    logs = Path(stack.state_dir) / "logs"
    return sum(f.read_text(errors="replace").count("database is locked") for f in logs.glob("*.log"))


class PeakRss:
    """Samples the summed RSS of every process of the stack, once a second, in a thread."""

    def __init__(self, stack) -> None:
        self.stack = stack
        self.peak = 0
        self.peak_procs = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        import psutil

        while not self._stop.is_set():
            total, n = 0, 0
            for proc in stack_processes(self.stack):
                try:
                    total += proc.memory_info().rss
                    n += 1
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
            if total > self.peak:
                self.peak, self.peak_procs = total, n
            self.samples += 1
            self._stop.wait(1.0)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


@pytest.mark.load
@pytest.mark.timeout(2400)
def test_twenty_concurrent_build_model_runs(local_stack, stack_healthy, capsys, tmp_path: Path) -> None:
    before_airflow = {r.dag_run_id for r in airflow_runs(local_stack, "build_model")}
    before_mlflow = len(mlflow_runs(local_stack, "build_model"))
    before_locked = _db_locked_count(local_stack)
    depths = list(range(2, 2 + N_RUNS))  # a distinct max_depth per call, to check each run got its own params
    stop_status = threading.Event()
    status_results: list[int] = []

    def one(depth: int):
        return depth, cli("run", "build-model", "--max-depth", str(depth), "--n-estimators", "4", "--no-register",
                          "--random-state", str(depth), "--timeout", "900", "--json", stack=local_stack)

    def poll_status() -> None:
        while not stop_status.is_set():
            res = cli("status", "--json", "-n", "50", stack=local_stack)
            status_results.append(res.returncode)
            if res.returncode == 0:
                json.loads(res.stdout)  # one valid document even under load
            stop_status.wait(3.0)

    t0 = time.monotonic()
    with PeakRss(local_stack) as rss:
        poller = threading.Thread(target=poll_status, daemon=True)
        poller.start()
        with ThreadPoolExecutor(max_workers=N_RUNS) as pool:
            results = list(pool.map(one, depths))
        wall = time.monotonic() - t0
        stop_status.set()
        poller.join(timeout=600)

    failures = [(d, r.returncode, r.stderr[-2000:]) for d, r in results if r.returncode != 0]
    assert failures == []
    docs = {d: json_out(r) for d, r in results}
    run_ids = [doc["dag_run_id"] for doc in docs.values()]
    assert len(set(run_ids)) == N_RUNS
    assert all(doc["state"] == "success" for doc in docs.values())

    new_airflow = [r for r in airflow_runs(local_stack, "build_model") if r.dag_run_id not in before_airflow]
    assert sorted(r.dag_run_id for r in new_airflow) == sorted(run_ids)  # exactly these 20, no duplicate
    extra = {d: [tags(r).get("airflow.try_number") for r in mlflow_runs(local_stack, "build_model", doc["dag_run_id"])]
             for d, doc in docs.items()}
    extra = {d: tries for d, tries in extra.items() if len(tries) != 1}  # max_depth -> try numbers of its runs
    assert len(mlflow_runs(local_stack, "build_model")) == before_mlflow + N_RUNS, extra
    for depth, doc in docs.items():
        runs = mlflow_runs(local_stack, "build_model", doc["dag_run_id"])
        assert len(runs) == 1, (depth, len(runs))
        p = params(runs[0])
        assert (p["max_depth"], p["n_estimators"], p["random_state"]) == (str(depth), "4", str(depth))
        assert doc["mlflow"]["run"]["run_id"] == runs[0]["info"]["run_id"]
    assert status_results and all(code == 0 for code in status_results), status_results
    assert _db_locked_count(local_stack) == before_locked  # no component hit SQLite's lock timeout

    report = {
        "runs": N_RUNS,
        "wall_s": round(wall, 1),
        "stack_peak_rss_mb": round(rss.peak / 2**20),
        "stack_processes_at_peak": rss.peak_procs,
        "rss_samples": rss.samples,
        "status_polls": len(status_results),
        "parallelism": local_stack.settings.parallelism,
        "run_durations_s": sorted(round(doc["duration_s"] or 0, 1) for doc in docs.values()),
    }
    (tmp_path / "load.json").write_text(json.dumps(report, indent=2))
    with capsys.disabled():
        print(f"\n[reliability load] {json.dumps(report)}")
