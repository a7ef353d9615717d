"""The Python daemon of the embedded Spark server: pyspark's own (`pyspark.daemon`), which also exits once it
has had no worker for a while.

A Spark Connect server isolates each session's artifacts, so each session's Python UDFs (``mapInPandas``) run
under a worker factory and a daemon of that session's own, and pyspark 4.3 never stops them: on the stack's
long-lived server every job would leave an idle daemon behind (docs/local-stack.md measures them). Spark kills a session's idle
workers after a minute, and starts a daemon again when a session still needs one ("daemon unexpectedly quit,
attempting to restart"), so a daemon without workers for longer than that can go.

The server runs it as ``python -m mlopsctl.devenv.sparkdaemon pyspark.worker`` (``spark.python.daemon.module``,
set by `mlopsctl.devenv.stack.spark_argv` for a local master, whose Python workers run on this machine). The
check runs from a timer signal in the daemon's main thread: the daemon forks its workers, so it must not start
a thread first. ``MLOPSCTL_SPARK_DAEMON_IDLE_SECONDS`` sets the idle time (default 120 s).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

IDLE_ENV = "MLOPSCTL_SPARK_DAEMON_IDLE_SECONDS"
IDLE_SECONDS = 120.0  # twice Spark's own idle-worker timeout


def has_workers() -> bool:
    """Whether this daemon has a live worker (its workers are its forked children)."""
    import psutil

    return bool(psutil.Process().children())


class IdleClock:
    """Tells when the daemon has had no worker for `idle` seconds, from periodic checks."""

    def __init__(self, idle: float, busy: Callable[[], bool] = has_workers,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.idle = idle
        self.busy = busy
        self.clock = clock
        self.last_busy = clock()

    def expired(self) -> bool:
        now = self.clock()
        if self.busy():
            self.last_busy = now
            return False
        return now - self.last_busy >= self.idle


def idle_seconds() -> float:
    try:
        return max(0.1, float(os.environ.get(IDLE_ENV, IDLE_SECONDS)))
    except ValueError:
        return IDLE_SECONDS


def main() -> None:
    from pyspark import daemon

    idle = IdleClock(idle_seconds())
    pid = os.getpid()

    def check(*_: object) -> None:
        if os.getpid() == pid and idle.expired():  # a worker inherits the handler, never the timer
            os.kill(os.getpid(), signal.SIGTERM)  # pyspark's own shutdown

    signal.signal(signal.SIGALRM, check)
    every = min(15.0, idle.idle / 4)
    signal.setitimer(signal.ITIMER_REAL, every, every)  # not inherited by the forked workers
    daemon.manager()


if __name__ == "__main__":
    main()
