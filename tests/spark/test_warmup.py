"""`python -m mlopsctl.devenv.sparkwarmup`, the job `dev start` runs through a freshly started Spark server, as a
Connect client of the session-scoped server: it runs its steps, reports them, and leaves no table behind; against
a server that does not answer it gives up at its deadline with a one-line error."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from tests.fixtures.spark_connect import SparkConnectServer

STEPS = ("session", "write parquet", "aggregate", "write and collect")


def _warm_up(remote: str, folder: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlopsctl.devenv.sparkwarmup", "--remote", remote, "--folder", str(folder), *extra],
        capture_output=True, text=True, timeout=600, check=False,
    )


def test_warm_up_runs_its_steps_and_removes_its_table(connect_server: SparkConnectServer, tmp_path: Path) -> None:
    folder = tmp_path / "warmup"
    done = _warm_up(connect_server.url, folder)
    assert done.returncode == 0, done.stderr
    report = done.stdout.strip()
    assert report.startswith("spark warm-up: ")
    assert [part.rsplit(" ", 1)[0] for part in report.removeprefix("spark warm-up: ").split(", ")] == list(STEPS)
    assert not folder.exists()


def test_warm_up_gives_up_on_a_server_that_does_not_answer(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a bound port that never accepts: nothing serves gRPC there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        folder = tmp_path / "warmup"
        folder.mkdir()
        (folder / "partial").write_text("left by a killed run")
        done = _warm_up(f"sc://127.0.0.1:{port}", folder, "--deadline", "3")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"spark warm-up failed: no answer from sc://127.0.0.1:{port} within 3 s")
    assert "Traceback" not in done.stderr
    assert not folder.exists()
