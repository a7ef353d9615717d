"""The embedded Spark server's Python daemon ends once it has had no worker for its idle time, and not before."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time

import psutil

from mlopsctl.devenv.sparkdaemon import IDLE_ENV, IdleClock


def test_idle_time_counts_from_the_last_check_that_saw_a_worker() -> None:
    now = [100.0]
    busy = [False]
    idle = IdleClock(10, busy=lambda: busy[0], clock=lambda: now[0])
    now[0] = 109.0
    assert not idle.expired()
    busy[0] = True
    now[0] = 115.0
    assert not idle.expired()  # a worker: the clock starts again
    busy[0] = False
    now[0] = 124.0
    assert not idle.expired()
    now[0] = 125.0
    assert idle.expired()


def _wait_exit(proc: subprocess.Popen, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return proc.returncode
        time.sleep(0.1)
    return None


def test_the_daemon_as_spark_runs_it_ends_once_its_last_worker_is_gone() -> None:
    """Started the way Spark starts a daemon (``python -m <module> pyspark.worker``, its port on stdout, stdin
    held open), with a 5 s idle time: a worker it forked keeps it running past that; once the worker is gone,
    the daemon exits by itself."""
    env = {**os.environ, IDLE_ENV: "5", "PYTHON_WORKER_FACTORY_SECRET": "not-used"}
    daemon = subprocess.Popen([sys.executable, "-m", "mlopsctl.devenv.sparkdaemon", "pyspark.worker"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    try:
        (port,) = struct.unpack("!i", daemon.stdout.read(4))
        conn = socket.create_connection(("127.0.0.1", port), timeout=30)
        (worker_pid,) = struct.unpack("!i", conn.makefile("rb").read(4))  # the forked worker's pid
        assert worker_pid in {p.pid for p in psutil.Process(daemon.pid).children()}
        time.sleep(6)  # past the idle time, with a worker waiting on its connection
        assert daemon.poll() is None
        conn.close()  # the worker reads end-of-file and exits
        assert _wait_exit(daemon, timeout=30) is not None, "the daemon outlived its idle time without workers"
        assert not psutil.pid_exists(worker_pid) or psutil.Process(worker_pid).status() == psutil.STATUS_ZOMBIE
    finally:
        if daemon.poll() is None:
            daemon.kill()
        daemon.wait(timeout=10)
