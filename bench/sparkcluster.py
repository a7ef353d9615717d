"""A Spark standalone cluster on 127.0.0.1 with pyspark's own `spark-class` (master + N one-core workers).

Everything binds to loopback (`SPARK_LOCAL_IP`, `--host 127.0.0.1`); web UIs are on free loopback ports.
Each daemon runs in its own process group and is stopped by group (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import VENV_BIN, NotMeasured, bench_env, free_port, kill_group, log, wait_until


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


@dataclass
class StandaloneCluster:
    workdir: Path
    port: int = 0
    ui_port: int = 0
    master: subprocess.Popen | None = None
    workers: list[subprocess.Popen] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    def _spawn(self, name: str, argv: list[str], extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        self.workdir.mkdir(parents=True, exist_ok=True)
        logf = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            return subprocess.Popen([str(VENV_BIN / "spark-class"), *argv], env=spark_env(extra_env), stdout=logf,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            logf.close()

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
        self.workers.append(
            self._spawn(f"worker{i}", ["org.apache.spark.deploy.worker.Worker", self.url, "--host", "127.0.0.1",
                                        "--cores", str(cores), "--memory", memory, "--webui-port",
                                        str(free_port()), "--work-dir", str(wdir)])
        )
        want = len(self.workers)
        wait_until(lambda: self.alive_workers() >= want, timeout=120, interval=0.5,
                   what=f"{want} Spark worker(s) registered")

    def _state(self) -> dict | None:
        import httpx

        if self.master is not None and self.master.poll() is not None:
            raise NotMeasured(f"Spark master exited {self.master.returncode} (log: {self.workdir}/master.log)")
        r = httpx.get(f"http://127.0.0.1:{self.ui_port}/json/", timeout=2)
        return r.json() if r.status_code == 200 else None

    def alive_workers(self) -> int:
        state = self._state() or {}
        return sum(1 for w in state.get("workers", []) if w.get("state") == "ALIVE")

    def submit_conf(self, cores_max: int) -> list[str]:
        """spark-submit options for this cluster: driver on loopback, no driver UI, 1-core executors."""
        return ["--master", self.url,
                "--conf", "spark.driver.host=127.0.0.1", "--conf", "spark.driver.bindAddress=127.0.0.1",
                "--conf", "spark.ui.enabled=false", "--conf", "spark.executor.cores=1",
                "--conf", f"spark.cores.max={cores_max}", "--executor-memory", "1g", "--driver-memory", "1g"]

    def stop(self) -> None:
        for p in [*reversed(self.workers), self.master]:
            if p is not None:
                kill_group(p, timeout=20)
        self.workers.clear()
        self.master = None
