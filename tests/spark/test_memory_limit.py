"""A job that runs the Spark server out of memory fails clearly: one ``mlopsctl-error:`` line naming
``MLOPSCTL_SPARK_DRIVER_MEMORY`` and the data's size, exit 3 (no Airflow retry), no JVM stack trace.

The server is the stack's own (`tests.fixtures.spark_connect`) with the smallest heap Spark starts with (512m;
Spark refuses less than 450 MB x 1.5 of system memory), and its own for this module: the out-of-memory error
ends its JVM. The data is a CSV with one 150 MB value, which Spark's CSV reader must hold whole: the cheapest
file that exhausts that heap (rows alone do not: the typing, statistics and write passes stream). The job is
run as the local backend runs it, a Connect client in its own process with the stack's environment."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.spark_connect import SparkConnectServer

JOBS_DIR = Path(__file__).resolve().parents[2] / "spark_jobs"
SMALL_HEAP = "512m"
VALUE_MB = 150


@pytest.fixture(scope="module")
def small_heap_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkConnectServer]:
    server = SparkConnectServer(tmp_path_factory.mktemp("spark-small-heap"), driver_memory=SMALL_HEAP)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _wide_csv(path: Path) -> Path:
    with open(path, "w") as out:
        out.write("a,target\n1,1.5\n")
        out.write("x" * (VALUE_MB * 1_000_000) + ",2.5\n")
        out.write("3,3.5\n")
    return path


def test_preprocess_that_exhausts_the_server_heap_fails_with_one_line_naming_the_setting_and_size(
    small_heap_server: SparkConnectServer, tmp_path: Path
) -> None:
    csv = _wide_csv(tmp_path / "wide.csv")
    env = dict(os.environ, SPARK_REMOTE=small_heap_server.url, MLOPSCTL_SPARK_SERVER_LOG=str(small_heap_server.log),
               PYTHONUNBUFFERED="1")
    env.pop("MLOPSCTL_SPARK_DRIVER_MEMORY", None)
    job = subprocess.run(
        [sys.executable, str(JOBS_DIR / "preprocess_data.py"), "--dag-id", "build_model", "--run-id", "oom_1",
         "--work-dir", str(tmp_path / "work"), "--data", str(csv), "--target", "target"],
        check=False, env=env, capture_output=True, text=True, timeout=600,
    )
    assert job.returncode == 3, job.stderr[-3000:]
    errors = [line for line in job.stderr.splitlines() if line.startswith("mlopsctl-error:")]
    assert len(errors) == 1, job.stderr[-3000:]
    assert "the Spark server ran out of memory (java.lang.OutOfMemoryError: Java heap space)" in errors[0]
    assert "MLOPSCTL_SPARK_DRIVER_MEMORY" in errors[0]
    assert f"{csv} ({VALUE_MB:.1f} MB)" in errors[0]
    # nothing else on stderr: no Python traceback, no JVM stack trace
    assert "Traceback" not in job.stderr and "\tat " not in job.stderr and "JVM stacktrace" not in job.stderr
    # the real cause: the JVM ended on the out-of-memory error (Spark's exit code for it is 52)
    assert small_heap_server.proc is not None and small_heap_server.proc.wait(timeout=60) == 52
