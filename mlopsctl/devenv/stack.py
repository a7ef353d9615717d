"""What the local stack is made of: the state-dir layout, the component command lines and their environment.

Seven components: the four Airflow 3 components (started as forks of one process that imports Airflow once:
`mlopsctl.devenv.zygote`), an MLflow tracking server, a Spark Connect server
(pyspark's own `SparkConnectServer`, run in the foreground through `spark-submit` so it is supervised like
the others) and the job launcher (`mlopsctl.devenv.launcher`: a warm Python that forks the local jobs).

Pure functions of Settings (plus a few file reads/writes in the state dir); no processes are started here.
The stack's design: docs/local-stack.md.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mlopsctl.devenv.classarchive import ClassArchive, java_binary
from mlopsctl.devenv.layout import ADMIN_USER, StackLayout
from mlopsctl.errors import ConfigError
from mlopsctl.paths import dags_common_module

if TYPE_CHECKING:
    from mlopsctl.settings import Settings

SPARK_CONNECT_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
#: C1-only JIT and the serial GC: a Spark JVM that serves small jobs then takes about 40% less CPU to start and
#: answers them as fast, for the same memory (docs/local-stack.md)
C1_ONLY_JIT = "-XX:TieredStopAtLevel=1"
SPARK_JVM_OPTIONS = (C1_ONLY_JIT, "-XX:+UseSerialGC")
CONNECT_PORT_CONF = "spark.connect.grpc.binding.port"

STACK_MARKER = "_MLOPSCTL_STACK"
#: the facts about the installed Spark that the stack shares with the DAG tasks (dags/common/localspark.py)
_localspark = dags_common_module("localspark")
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
# Airflow plugin folder of the embedded stack (SQLite write serialisation + busy timeout; see the module)
AIRFLOW_PLUGINS_DIR = Path(__file__).resolve().parent / "airflow_plugins"


@dataclass(frozen=True)
class ComponentSpec:
    """How to run one component: its command line, environment, working dir and port (if it listens)."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(repr=False)
    cwd: Path
    port: int | None = None


def dags_folder(settings: Settings) -> Path:
    """`<project>/dags` if it exists, else the DAGs bundled with mlopsctl."""
    from mlopsctl.paths import bundled_dags_dir

    local = settings.project_dir / "dags"
    return local if local.is_dir() else bundled_dags_dir()


def spark_jobs_dir(settings: Settings) -> Path:
    """`<project>/spark_jobs` if it exists, else the bundled Spark jobs."""
    from mlopsctl.paths import bundled_spark_jobs_dir

    local = settings.project_dir / "spark_jobs"
    return local if local.is_dir() else bundled_spark_jobs_dir()


def _venv_bin() -> Path:
    return Path(sys.executable).parent


def airflow_module() -> list[str]:
    """Command prefix of the Airflow CLI run as a module of this environment's Python (`python -m airflow`), the
    form `mlopsctl.devenv.zygote` forks."""
    if importlib.util.find_spec("airflow") is None:
        raise ConfigError(
            f"`airflow` is not installed in this environment ({sys.executable}).",
            hint="The local stack needs the `local` extra: pip install 'mlopsctl[local]'.",
        )
    return [sys.executable, "-m", "airflow"]


def tool(name: str) -> list[str]:
    """Command prefix for a console script of this environment (`mlflow`)."""
    script = _venv_bin() / name
    if script.is_file():
        return [sys.executable, str(script)]
    found = shutil.which(name)
    if found:
        return [found]
    raise ConfigError(
        f"`{name}` is not installed in this environment ({sys.executable}).",
        hint="The local stack needs the `local` extra: pip install 'mlopsctl[local]'.",
    )


def base_env(settings: Settings, layout: StackLayout) -> dict[str, str]:
    """Environment shared by every component: the caller's env + PATH with this venv's bin first."""
    env = dict(os.environ)
    venv_bin = str(_venv_bin())
    path = env.get("PATH", "")
    if venv_bin not in path.split(os.pathsep):
        env["PATH"] = venv_bin + (os.pathsep + path if path else "")
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("PYTHONSTARTUP", None)
    for key in [k for k in env if k.startswith("PYTEST_")]:  # a stack started from a test session
        del env[key]
    # marks every process of this stack (inherited by workers, tasks, spark-submit): `stop` sweeps by it
    env[STACK_MARKER] = str(layout.state)
    return env


def runtime_env(settings: Settings, layout: StackLayout) -> dict[str, str]:
    """The runtime environment the DAG tasks read: the MLOPSCTL_* settings and Spark's python."""
    env = {
        "MLOPSCTL_MLFLOW_TRACKING_URI": settings.local_mlflow_url,
        "MLOPSCTL_COMPUTE": settings.compute,
        "MLOPSCTL_SPARK_REMOTE": settings.spark_remote,
        "MLOPSCTL_SPARK_MASTER": settings.spark_master,
        "MLOPSCTL_JOB_LAUNCHER": str(layout.launcher_socket),
        "MLOPSCTL_SPARK_JOBS_DIR": str(spark_jobs_dir(settings)),
        "MLOPSCTL_WORK_DIR": str(layout.work_dir),
        "MLOPSCTL_PROJECT_DIR": str(settings.project_dir),
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    if settings.spark_remote_is_local:  # the tasks' Spark server is this stack's: its log, and how to restart it
        env["MLOPSCTL_SPARK_SERVER_LOG"] = str(layout.log_file("spark"))
        env["MLOPSCTL_SPARK_SERVER_RESTART"] = "mlopsctl dev start"
    return env


def airflow_env(settings: Settings, layout: StackLayout) -> dict[str, str]:
    """Environment of every Airflow component (and of `airflow db migrate`)."""
    url = settings.local_airflow_url
    env = base_env(settings, layout)
    env.update(runtime_env(settings, layout))
    env.update(
        {
            "AIRFLOW_HOME": str(layout.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder(settings)),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(settings.parallelism),
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": str(settings.scheduler_idle_sleep),
            "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(layout.passwords_file),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{layout.airflow_db}",
            # SQLite under concurrent writers: see airflow_plugins/mlopsctl_sqlite.py
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(AIRFLOW_PLUGINS_DIR),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": "mlopsctl_sqlite.CONNECT_ARGS",
            # a task's calls to the execution API (heartbeats, its final state) may queue behind the one-writer
            # lock for as long as SQLite's busy timeout (60 s in mlopsctl_sqlite.CONNECT_ARGS). Airflow's 5 s
            # default turns that wait into failed heartbeats, and three in a row kill a healthy task.
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(layout.airflow_home / "logs"),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(settings.airflow_port),
            "AIRFLOW__API__BASE_URL": url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        }
    )
    return env


def mlflow_env(settings: Settings, layout: StackLayout) -> dict[str, str]:
    env = base_env(settings, layout)
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    return env


def spark_home() -> Path:
    """The installed pyspark folder, which is a full Spark distribution (bin/, jars/); found without importing
    pyspark."""
    home = _localspark.spark_home()
    if home is None:
        raise ConfigError(
            f"No Spark distribution in this environment ({sys.executable}): the pyspark package with its "
            "bin/ and jars/ is needed for the local Spark Connect server.",
            hint="The local stack needs the `local` extra: pip install 'mlopsctl[local]' (pyspark-client "
            "alone is not enough).",
        )
    return home


#: the Python daemon of a local-master server's workers
SPARK_DAEMON_MODULE = "mlopsctl.devenv.sparkdaemon"


def local_cores(master: str) -> int | None:
    """Task slots of a local master (local, local[N], local[N,F], local[*]); None for a cluster."""
    match = re.fullmatch(r"local(?:\[(\*|\d+)(?:,\s*\d+)?\])?", master.strip())
    if match is None:
        return None
    slots = match.group(1)
    if slots is None:
        return 1
    if slots == "*":
        return os.cpu_count() or 1
    return max(1, int(slots))


def spark_env(settings: Settings, layout: StackLayout) -> dict[str, str]:
    """Environment of the Spark Connect server: Spark's home, and this venv's python for the Python workers
    (mapInPandas/applyInPandas run there)."""
    env = base_env(settings, layout)
    # the server itself is classic Spark; a client-side Connect setting in the caller's env must not leak in
    for key in ("SPARK_REMOTE", "SPARK_LOCAL_REMOTE", "SPARK_CONNECT_MODE_ENABLED", "PYSPARK_SUBMIT_ARGS"):
        env.pop(key, None)
    env["SPARK_CONNECT_MODE"] = "0"
    env["SPARK_HOME"] = str(spark_home())
    env["PYSPARK_PYTHON"] = sys.executable
    env["PYSPARK_DRIVER_PYTHON"] = sys.executable
    if _localspark.is_loopback_master(settings.spark_master):
        env["SPARK_LOCAL_IP"] = "127.0.0.1"
    return env


def spark_argv(
    settings: Settings, layout: StackLayout, java_options: Sequence[str] = (), port: int | None = None,
    python_daemon: str | None = SPARK_DAEMON_MODULE,
) -> list[str]:
    """`spark-submit` of pyspark's SparkConnectServer in the foreground (what sbin/start-connect-server.sh
    runs, minus the daemonizing): gRPC on 127.0.0.1 (on ``port``, by default the setting's), no UI, and for a
    local master every driver port on 127.0.0.1 too (by default the driver RPC and block manager listen on the
    external address). ``java_options`` are added to the driver JVM's (the class-data archive's, whose paths
    are relative to ``layout.spark_dir``, where the server runs). A local master's Python workers run under
    ``python_daemon`` (None: pyspark's own daemon), which their Python must be able to import."""
    if java_binary() is None:
        raise ConfigError(
            "Java is not installed: the local Spark Connect server needs a JDK/JRE 17 or newer.",
            hint="Install one (e.g. apt-get install openjdk-17-jre-headless) or set JAVA_HOME.",
        )
    master = settings.spark_master
    conf = {
        "spark.connect.grpc.binding.address": "127.0.0.1",
        CONNECT_PORT_CONF: str(port or settings.spark_connect_port),
        "spark.ui.enabled": "false",
        # IPv4 sockets: the JVM's listeners show up as 127.0.0.1, not as IPv4-mapped IPv6 addresses. The
        # server starts next to Airflow and MLflow: SPARK_JVM_OPTIONS.
        "spark.driver.extraJavaOptions": " ".join(
            ["-Djava.net.preferIPv4Stack=true", *SPARK_JVM_OPTIONS, *java_options]
        ),
        "spark.local.dir": str(layout.spark_dir / "tmp"),
        "spark.sql.warehouse.dir": str(layout.spark_dir / "warehouse"),
    }
    if _localspark.is_loopback_master(master):
        conf["spark.driver.bindAddress"] = "127.0.0.1"
        conf["spark.driver.host"] = "127.0.0.1"
    cores = local_cores(master)
    if cores is not None:
        conf["spark.sql.shuffle.partitions"] = str(max(2, cores))  # small local data: not 200 partitions
        if python_daemon:
            conf["spark.python.daemon.module"] = python_daemon
    argv = [
        str(spark_home() / "bin" / "spark-submit"),
        "--class",
        SPARK_CONNECT_CLASS,
        "--name",
        "Spark Connect server",
        "--master",
        master,
        "--driver-memory",
        settings.spark_driver_memory,
    ]
    for key, value in conf.items():
        argv += ["--conf", f"{key}={value}"]
    return argv


def spark_class_archive(settings: Settings, layout: StackLayout) -> ClassArchive | None:
    """The embedded Spark server's class-data archive (`mlopsctl.devenv.classarchive`)."""
    return ClassArchive.for_server(layout.spark_dir, spark_home(), settings.spark_driver_memory)


#: the background process that writes the Spark server's class-data archive (not a component: nothing waits
#: for it, and `dev stop` kills it)
ARCHIVE_WRITER = "spark-archive"


def archive_writer_spec(settings: Settings, layout: StackLayout, archive: ClassArchive) -> ComponentSpec:
    """The writer of the Spark server's class-data archive: the server's own command, on a free loopback port
    and with the archive's write options, under `mlopsctl.devenv.classarchive`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return ComponentSpec(
        ARCHIVE_WRITER,
        [sys.executable, "-m", "mlopsctl.devenv.classarchive", "--archive", str(archive.folder / archive.name),
         "--port", str(port), "--", *spark_argv(settings, layout, archive.write_options(), port)],
        spark_env(settings, layout),
        layout.spark_dir,
    )


#: the background job that warms the freshly started Spark server up (`mlopsctl.devenv.sparkwarmup`; not a
#: component either: nothing waits for it, and `dev stop` kills it)
SPARK_WARMUP = "spark-warmup"
#: the one-shot background processes of a start, which `dev stop` kills at once
HELPERS = (ARCHIVE_WRITER, SPARK_WARMUP)


def spark_warmup_spec(settings: Settings, layout: StackLayout) -> ComponentSpec:
    """The warm-up job of the stack's Spark server: a Connect client of it, writing in the Spark dir."""
    return ComponentSpec(
        SPARK_WARMUP,
        [sys.executable, "-m", "mlopsctl.devenv.sparkwarmup", "--remote", settings.local_spark_remote,
         "--folder", str(layout.spark_dir / "warmup")],
        base_env(settings, layout),
        layout.state,
    )
