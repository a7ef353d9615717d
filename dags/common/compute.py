"""The ONE place the compute backend of the mlopsctl DAGs is chosen, from ``MLOPSCTL_COMPUTE``.

* ``local`` (default): the task runs the job from the worker, its output streamed into the task log: as a
  Spark Connect client of ``MLOPSCTL_SPARK_REMOTE`` (forked by the stack's job launcher when
  ``MLOPSCTL_JOB_LAUNCHER`` names one), or, where that is unset, with ``spark-submit --master
  $MLOPSCTL_SPARK_MASTER``.
* a Spark master URL (``spark://host:7077``, ``yarn``, ``k8s://...``): ``spark-submit`` against that master.
* ``databricks``: the task is whatever ``common.databricks_backend.make_databricks_task(task_id, script,
  arguments)`` returns (imported lazily, only for this backend). ``script`` is a file name from spark_jobs/,
  ``arguments`` the job's argv, whose items may be Jinja templates (``{{ params.max_depth }}``); the operator
  must fail the task when the job fails.

Exit code 3 of a job means "bad data / nothing to retry". The backend kind decides which operator a DAG file
builds, so it is read when the DAG is parsed; everything else (Connect URL, master URL, tracking URI, work
dir, jobs dir) is read at task run time. How the tasks and their compute fit together:
docs/architecture.md.
"""

from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from airflow.sdk import BaseOperator

from common.launcher_client import LaunchRefused, ProtocolError, launch
from common.localspark import is_loopback_master, spark_home

# Keep in sync with spark_jobs/mlopsctl_jobs/cli.py (the jobs import nothing from here, nor we from them).
EXIT_NO_RETRY = 3
ERROR_PREFIX = "mlopsctl-error:"

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "mlopsctl",
    "retries": 1,
    "retry_delay": timedelta(seconds=20),
    "execution_timeout": timedelta(hours=3),
}


# ----------------------------------------------------------------------------------------------
# runtime environment (read when a task runs / renders its templates, never at import)
# ----------------------------------------------------------------------------------------------
def compute_backend() -> str:
    """``local``, ``databricks``, or a Spark master URL."""
    return (os.environ.get("MLOPSCTL_COMPUTE") or "local").strip()


def compute_tag() -> str:
    """The DAG tag that publishes where the tasks run, read over REST by the CLI before it triggers
    (``GET /api/v2/dags/{dag_id}`` lists the tags): ``compute:databricks``, ``compute:local`` (the worker's own
    Spark or the Connect server it names), or ``compute:spark`` (a Spark master URL). Read at parse time, like
    the operator choice in `job_task`."""
    backend = compute_backend()
    kind = backend if backend in ("local", "databricks") else "spark"
    return f"compute:{kind}"


def spark_master() -> str:
    backend = compute_backend()
    if backend == "local":
        return os.environ.get("MLOPSCTL_SPARK_MASTER") or "local[*]"
    return backend


def spark_remote() -> str | None:
    """The Spark Connect server the local backend's jobs are clients of (``sc://host:port``), if any."""
    if compute_backend() != "local":
        return None
    return (os.environ.get("MLOPSCTL_SPARK_REMOTE") or "").strip() or None


def work_dir() -> str:
    explicit = os.environ.get("MLOPSCTL_WORK_DIR")
    if explicit:
        return explicit
    airflow_home = os.environ.get("AIRFLOW_HOME")
    if airflow_home:  # the embedded stack: <state>/airflow -> <state>/work
        return str(Path(airflow_home).parent / "work")
    return str(Path.home() / ".mlopsctl" / "work")


def tracking_uri() -> str:
    return os.environ.get("MLOPSCTL_MLFLOW_TRACKING_URI") or "http://127.0.0.1:5000"


def experiment_prefix() -> str:
    return os.environ.get("MLOPSCTL_MLFLOW_EXPERIMENT_PREFIX") or "/mlopsctl"


def registry_uri() -> str:
    return os.environ.get("MLOPSCTL_REGISTRY_URI") or ""


def grid_worker_memory() -> str:
    """The Spark grid's per-worker memory bound (``1g``, ``768m``; empty: the job's default, 1g)."""
    return (os.environ.get("MLOPSCTL_GRID_WORKER_MEMORY") or "").strip()


def spark_jobs_dir() -> Path:
    """MLOPSCTL_SPARK_JOBS_DIR (the embedded stack sets it), else spark_jobs/ next to the dags folder."""
    explicit = os.environ.get("MLOPSCTL_SPARK_JOBS_DIR")
    if explicit:
        return Path(explicit)
    return Path(__file__).resolve().parents[2] / "spark_jobs"


class _Runtime:
    """Exposed to templates as ``{{ mlopsctl.<name> }}``; every attribute is read at render (run) time."""

    @property
    def work_dir(self) -> str:
        return work_dir()

    @property
    def tracking_uri(self) -> str:
        return tracking_uri()

    @property
    def experiment_prefix(self) -> str:
        return experiment_prefix()

    @property
    def registry_uri(self) -> str:
        return registry_uri()

    @property
    def grid_worker_memory(self) -> str:
        return grid_worker_memory()


MACROS: dict[str, Any] = {"mlopsctl": _Runtime()}


def run_arguments() -> list[str]:
    """argv items every job takes: the run's identity and where it tracks (templated; rendered at run time)."""
    return [
        "--dag-id", "{{ dag.dag_id }}",
        "--run-id", "{{ run_id }}",
        "--try-number", "{{ ti.try_number }}",
        "--work-dir", "{{ mlopsctl.work_dir }}",
        "--tracking-uri", "{{ mlopsctl.tracking_uri }}",
        "--registry-uri", "{{ mlopsctl.registry_uri }}",
        "--experiment-prefix", "{{ mlopsctl.experiment_prefix }}",
    ]


def common_arguments() -> list[str]:
    """argv items every training job takes: `run_arguments` and the source data's Params."""
    return [
        *run_arguments(),
        "--data", "{{ params.data if params.data is not none else '' }}",
        "--target", "{{ params.target }}",
        "--na-values", "{{ params.na_values | join(',') if params.na_values else '' }}",
    ]


def model_arguments() -> list[str]:
    return [
        "--test-size", "{{ params.test_size }}",
        "--random-state", "{{ params.random_state }}",
        "--register-model", "{{ params.register_model if params.register_model is not none else '' }}",
    ]


# ----------------------------------------------------------------------------------------------
# local backend: a Spark Connect client, spark-submit, or plain python, as a child process of the task
# ----------------------------------------------------------------------------------------------
def job_argv(job: str, arguments: Sequence[str], *, spark: bool, master: str | None = None,
             remote: str | None = None, jobs_dir: Path | None = None) -> list[str]:
    """The argv (a list, never a shell string) that runs one job.

    A job that needs no Spark, or one that is a Spark Connect client of ``remote`` (see `job_env`), is a
    plain Python process; otherwise it is spark-submitted to ``master``."""
    jobs_dir = jobs_dir or spark_jobs_dir()
    script = jobs_dir / job
    if not spark or remote:
        return [sys.executable, str(script), *arguments]
    master = master or spark_master()
    home = spark_home()
    if home is None:
        raise RuntimeError("spark-submit needs a Spark distribution in the Airflow environment: the pyspark package "
                           "with its bin/ and jars/ (pip install pyspark; pyspark-client alone is not enough)")
    argv = [str(home / "bin" / "spark-submit"), "--master", master,
            "--conf", "spark.ui.enabled=false", "--conf", "spark.log.level=WARN"]
    if is_loopback_master(master):
        argv += ["--conf", "spark.driver.host=127.0.0.1", "--conf", "spark.driver.bindAddress=127.0.0.1"]
    # the driver imports mlopsctl_jobs from the script's folder; the job's session ships it to the executors
    return [*argv, str(script), *arguments]


def job_env(master: str | None = None, remote: str | None = None) -> dict[str, str]:
    """The job's environment: ``SPARK_REMOTE`` makes the job's session (``mlopsctl_jobs.session``) a Connect
    client of ``remote``; without it the job gets the classic session spark-submit built."""
    env = dict(os.environ)
    # what pyspark sets in a process that has made a Connect session: a classic job must not inherit it
    for key in ("SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED", "SPARK_LOCAL_REMOTE"):
        env.pop(key, None)
    if remote:
        env["SPARK_REMOTE"] = remote
    home = spark_home()
    if home is not None:  # a Connect client needs none
        env["SPARK_HOME"] = str(home)
    env["PYSPARK_PYTHON"] = sys.executable
    env["PYSPARK_DRIVER_PYTHON"] = sys.executable
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    env.setdefault("TQDM_DISABLE", "1")
    if is_loopback_master(master or spark_master()):
        env["SPARK_LOCAL_IP"] = "127.0.0.1"
    return env


def connect_server_down(remote: str, timeout: float = 3.0) -> str | None:
    """Why the Spark Connect server at ``remote`` cannot serve the job (its port does not accept a connection);
    None when it answers. A stack that runs the server names its log and the command that brings it back in
    ``MLOPSCTL_SPARK_SERVER_LOG`` and ``MLOPSCTL_SPARK_SERVER_RESTART``."""
    parsed = urlparse(remote.split(";", 1)[0].replace("sc://", "http://", 1))
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 15002
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return None
    except OSError as exc:
        reason = f"the Spark Connect server {host}:{port} is not reachable ({exc.strerror or exc})"
    log = (os.environ.get("MLOPSCTL_SPARK_SERVER_LOG") or "").strip()
    restart = (os.environ.get("MLOPSCTL_SPARK_SERVER_RESTART") or "").strip()
    if log:
        reason += f". Its log is {log}"
    if restart:
        return f"{reason}; `{restart}` brings it back, and Airflow's retry then runs this task again"
    return f"{reason}; once it serves again (MLOPSCTL_SPARK_REMOTE names it), Airflow's retry runs this task again"


def failure_summary(lines: Sequence[str], limit: int = 12) -> str:
    """The job's own error lines if it printed any, else its last lines (without JVM log noise)."""
    ours = [line.split(ERROR_PREFIX, 1)[1].strip() for line in lines if ERROR_PREFIX in line]
    if ours:
        return "; ".join(dict.fromkeys(ours))
    meaningful = [line for line in lines if line.strip() and " INFO " not in line and " WARN " not in line]
    return "\n".join(meaningful[-limit:])


class LocalJobOperator(BaseOperator):
    """Run one spark_jobs/ file: as a Spark Connect client of ``MLOPSCTL_SPARK_REMOTE`` or with spark-submit
    (``spark=True``), or with the worker's Python (``spark=False``).

    Output is streamed into the task log. Exit 3 (bad data) fails the task without retries; any
    other non-zero exit fails it with the job's last error lines (and Airflow retries it).
    """

    template_fields: Sequence[str] = ("arguments",)
    ui_color = "#fbe7c6"

    def __init__(self, *, job: str, arguments: Sequence[str], spark: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.job = job
        self.arguments = list(arguments)
        self.spark = spark
        self._proc: Any = None  # a subprocess.Popen, or the launcher's LaunchedJob (the same interface)

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowException, AirflowFailException

        if compute_backend() == "databricks":
            raise AirflowFailException(
                "MLOPSCTL_COMPUTE=databricks at run time, but this DAG was parsed for local Spark: "
                "set MLOPSCTL_COMPUTE on the dag-processor too and let it re-parse the DAGs"
            )
        master = spark_master()
        remote = spark_remote() if self.spark else None
        jobs_dir = spark_jobs_dir()
        if not (jobs_dir / self.job).is_file():
            raise AirflowFailException(f"job file {jobs_dir / self.job} not found (MLOPSCTL_SPARK_JOBS_DIR={jobs_dir})")
        if remote and (down := connect_server_down(remote)):
            raise AirflowException(f"{self.job} not started: {down}")
        argv = job_argv(self.job, [str(a) for a in self.arguments], spark=self.spark, master=master, remote=remote,
                        jobs_dir=jobs_dir)
        self.log.info("running %s", " ".join(argv))
        tail: collections.deque[str] = collections.deque(maxlen=400)
        env = job_env(master, remote)
        self._proc = self._launched(argv, env) or subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            start_new_session=True,
        )
        assert self._proc.stdout is not None
        for raw in self._proc.stdout:
            line = raw.rstrip("\n")
            tail.append(line)
            self.log.info("%s", line)
        rc = self._proc.wait()
        engine = (f"spark-connect({remote.split(';', 1)[0]})" if remote else f"spark({master})") if self.spark else "python"
        if rc == 0:
            return {"job": self.job, "engine": engine, "returncode": 0}
        summary = failure_summary(list(tail))
        if remote and rc != EXIT_NO_RETRY and (down := connect_server_down(remote)):
            summary = f"{down}\n{summary}"
        message = f"{self.job} failed (exit {rc}): {summary}"
        if rc == EXIT_NO_RETRY:
            raise AirflowFailException(message)
        raise AirflowException(message)

    def _launched(self, argv: list[str], env: dict[str, str]) -> Any:
        """The job forked by the job launcher at ``MLOPSCTL_JOB_LAUNCHER`` (`launcher_client`; `mlopsctl dev start`
        runs one), which has imported pyspark, pandas, scikit-learn and MLflow once, so the job starts without
        seconds of imports; None (run a fresh process) where there is none, or it cannot run this job."""
        path = os.environ.get("MLOPSCTL_JOB_LAUNCHER")
        if not path or argv[0] != sys.executable:
            return None
        try:
            job = launch(path, argv, env, os.getcwd())
        except (OSError, ValueError, ProtocolError, LaunchRefused) as exc:
            self.log.warning("the job launcher at %s did not start the job (%s); starting a fresh Python", path, exc)
            return None
        self.log.info("started by the job launcher as pid %d", job.pid)
        return job

    def on_kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def job_task(task_id: str, job: str, arguments: list[str], *, spark: bool = True, **kwargs: Any) -> BaseOperator:
    """Build the task that runs ``spark_jobs/<job>`` with ``arguments`` on the configured backend."""
    if compute_backend() == "databricks":
        from common.databricks_backend import make_databricks_task  # owned by the Databricks backend

        return make_databricks_task(task_id=task_id, script=job, arguments=arguments)
    return LocalJobOperator(task_id=task_id, job=job, arguments=arguments, spark=spark, **kwargs)
