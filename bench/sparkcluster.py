"""A Spark standalone cluster on 127.0.0.1 with pyspark's own `spark-class` (master + N one-core workers), and
the embedded stack's Spark Connect server component in front of it.

Everything binds to loopback (`SPARK_LOCAL_IP`, `--host 127.0.0.1`); web UIs are on free loopback ports.
Each daemon runs in its own process group and is stopped by group (SIGTERM, then SIGKILL).

A worker started with `--cores N` only offers N task slots: its executor JVM and Python workers still see and
use every CPU of the machine (the JVM sizes its GC and compiler threads by them). So each worker is pinned to
N CPUs of its own, where the OS allows it (`os.sched_setaffinity`, inherited by its executors and their
Python workers), as it would be on an N-core machine. The master and the Connect server (the driver) are not.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import VENV_BIN, NotMeasured, bench_env, free_port, http, kill_group, log, wait_until


def spark_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    import pyspark

    env = bench_env(
        {
            "SPARK_HOME": str(Path(pyspark.__file__).parent),
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_LOCAL_HOSTNAME": "127.0.0.1",
            "PYSPARK_PYTHON": str(VENV_BIN / "python"),
            "PYSPARK_DRIVER_PYTHON": str(VENV_BIN / "python"),
            "SPARK_NO_DAEMONIZE": "1",
        }
    )
    if extra:
        env.update(extra)
    return env


def cpu_text(cpus: set[int] | None) -> str:
    """How a worker's CPUs read in the bench's log and tables."""
    return "not pinned" if cpus is None else f"pinned to CPU {','.join(map(str, sorted(cpus)))}"


@dataclass
class StandaloneCluster:
    workdir: Path
    port: int = 0
    ui_port: int = 0
    master: subprocess.Popen | None = None
    workers: list[subprocess.Popen] = field(default_factory=list)
    #: the CPUs each worker is pinned to (None: not pinned)
    pinned: list[set[int] | None] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    def _spawn(self, name: str, argv: list[str], extra_env: dict[str, str] | None = None,
               cpus: set[int] | None = None) -> subprocess.Popen:
        self.workdir.mkdir(parents=True, exist_ok=True)
        logf = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            proc = subprocess.Popen([str(VENV_BIN / "spark-class"), *argv], env=spark_env(extra_env), stdout=logf,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            logf.close()
        if cpus is not None:  # spark-class execs the JVM in this process; its executors start much later
            os.sched_setaffinity(proc.pid, cpus)
        return proc

    def worker_cpus(self, cores: int) -> set[int] | None:
        """The next `cores` CPUs of the machine for the next worker (round robin), or None where the OS cannot
        pin a process to CPUs."""
        if not hasattr(os, "sched_setaffinity"):
            return None
        available = sorted(os.sched_getaffinity(0))
        first = sum(len(cpus) for cpus in self.pinned if cpus)
        return {available[(first + i) % len(available)] for i in range(cores)}

    def start_master(self, preferred_port: int | None = 7077) -> None:
        self.port = free_port(preferred_port)
        self.ui_port = free_port()
        log(f"spark: master on {self.url} (UI 127.0.0.1:{self.ui_port})")
        self.master = self._spawn("master", ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                                             "--port", str(self.port), "--webui-port", str(self.ui_port)],
                                  # no REST submission server (it would take the fixed port 6066)
                                  {"SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false"})
        wait_until(lambda: self._state() is not None, timeout=120, interval=0.5, what="Spark master up")

    def add_worker(self, cores: int = 1, memory: str = "2g") -> None:
        i = len(self.workers) + 1
        wdir = self.workdir / f"worker{i}"
        wdir.mkdir(parents=True, exist_ok=True)
        cpus = self.worker_cpus(cores)
        self.workers.append(
            self._spawn(f"worker{i}", ["org.apache.spark.deploy.worker.Worker", self.url, "--host", "127.0.0.1",
                                        "--cores", str(cores), "--memory", memory, "--webui-port",
                                        str(free_port()), "--work-dir", str(wdir)], cpus=cpus)
        )
        self.pinned.append(cpus)
        log(f"spark: worker {i} ({cores} core{'s' if cores > 1 else ''}, {cpu_text(cpus)})")
        want = len(self.workers)
        wait_until(lambda: self.alive_workers() >= want, timeout=120, interval=0.5,
                   what=f"{want} Spark worker(s) registered")

    def _state(self) -> dict | None:
        if self.master is not None and self.master.poll() is not None:
            raise NotMeasured(f"Spark master exited {self.master.returncode} (log: {self.workdir}/master.log)")
        r = http().get(f"http://127.0.0.1:{self.ui_port}/json/")
        return r.json() if r.status_code == 200 else None

    def alive_workers(self) -> int:
        state = self._state() or {}
        return sum(1 for w in state.get("workers", []) if w.get("state") == "ALIVE")

    def stop(self) -> None:
        for p in [*reversed(self.workers), self.master]:
            if p is not None:
                kill_group(p, timeout=20)
        self.workers.clear()
        self.pinned.clear()
        self.master = None


class ConnectServer:
    """The stack's Spark Connect server (`mlopsctl.devenv.stack.spark_argv`, the argv `dev start` runs) with
    `master` as its master and `cores_max` executor cores, on a free 127.0.0.1 port, in its own process group."""

    def __init__(self, workdir: Path, master: str, cores_max: int) -> None:
        from mlopsctl.devenv.layout import StackLayout
        from mlopsctl.settings import Settings

        self.settings = Settings(_env_file=None, project_dir=workdir, state_dir=workdir / ".mlopsctl",
                                 spark_connect_port=free_port(), spark_master=master, spark_driver_memory="1g")
        self.layout = StackLayout.from_settings(self.settings)
        self.cores_max = cores_max
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return self.settings.local_spark_remote

    def start(self) -> None:
        from mlopsctl.devenv.health import grpc_serving
        from mlopsctl.devenv.stack import spark_argv
        from mlopsctl.devenv.stack import spark_env as server_env

        self.layout.ensure()
        argv = [*spark_argv(self.settings, self.layout), "--conf", f"spark.cores.max={self.cores_max}",
                "--conf", "spark.executor.cores=1", "--conf", "spark.executor.memory=1g"]
        log_path = self.layout.log_file("spark")
        with open(log_path, "ab") as logf:
            self.proc = subprocess.Popen(argv, env=server_env(self.settings, self.layout), cwd=self.layout.spark_dir,
                                         stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        log(f"spark: Connect server {self.url} in front of {self.settings.spark_master}")

        def serving() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise NotMeasured(f"Spark Connect server exited {self.proc.returncode} (log: {log_path})")
            return grpc_serving("127.0.0.1", self.settings.spark_connect_port)

        wait_until(serving, timeout=180, interval=0.5, what="Spark Connect server serving")
        self.warm()

    def warm(self, timeout: float = 120) -> None:
        """Every executor up and warm (its JVM has run a `mapInPandas`, and scikit-learn's files are in the page
        cache), as on a long-lived server. The job's Python workers still start fresh: a Connect server gives
        each session Python workers of its own, so no session can use another's.

        Executors register with the driver one after the other, and a job started before the last one is up
        runs on the others; so the warm-up job repeats until it has run on each executor (told apart by
        their Python daemons, the parents of the Python workers)."""
        from pyspark.sql import SparkSession

        def load(batches):
            import os

            import pandas as pd
            import sklearn.ensemble  # noqa: F401 - its files in the page cache for the job's own workers

            for _ in batches:
                pass
            yield pd.DataFrame({"daemon": [os.getppid()]})

        spark = SparkSession.builder.remote(self.url).create()
        try:
            n = self.cores_max * 2
            seen: set[int] = set()

            def all_warm() -> bool:
                seen.update(r.daemon for r in spark.range(0, n, 1, n).mapInPandas(load, "daemon long").collect())
                return len(seen) >= self.cores_max

            wait_until(all_warm, timeout=timeout, interval=1, what=f"{self.cores_max} executor(s) warmed")
        finally:
            spark.stop()

    def stop(self) -> None:
        if self.proc is not None:
            kill_group(self.proc, timeout=30)
            self.proc = None
