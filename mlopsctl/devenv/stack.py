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
import json
import os
import re
import secrets
import shutil
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from mlopsctl.devenv.classarchive import ClassArchive, java_binary
from mlopsctl.errors import ConfigError

if TYPE_CHECKING:
    from mlopsctl.settings import Settings

AIRFLOW_COMPONENTS: tuple[str, ...] = ("api-server", "scheduler", "dag-processor", "triggerer")
COMPONENTS: tuple[str, ...] = (*AIRFLOW_COMPONENTS, "mlflow", "spark", "launcher")
#: spawn order: the Spark server's JVM starts slowest and needs nothing else, so it goes first
START_ORDER: tuple[str, ...] = ("spark", "launcher", "mlflow", *AIRFLOW_COMPONENTS)
#: component -> the setting naming its port
PORT_ENV_VARS: dict[str, str] = {
    "api-server": "MLOPSCTL_AIRFLOW_PORT",
    "mlflow": "MLOPSCTL_MLFLOW_PORT",
    "spark": "MLOPSCTL_SPARK_CONNECT_PORT",
}
SPARK_CONNECT_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
CONNECT_PORT_CONF = "spark.connect.grpc.binding.port"

#: component -> key of its entry in Airflow's /api/v2/monitor/health JSON
HEALTH_KEYS: dict[str, str] = {
    "api-server": "metadatabase",
    "scheduler": "scheduler",
    "dag-processor": "dag_processor",
    "triggerer": "triggerer",
}
#: component -> heartbeat field in its health entry (a restarted component must beat after it was spawned);
#: every Airflow component but the api-server beats, in the field named after its health key
HEARTBEAT_KEYS: dict[str, str] = {
    name: f"latest_{HEALTH_KEYS[name]}_heartbeat" for name in AIRFLOW_COMPONENTS if name != "api-server"
}

ADMIN_USER = "admin"
_MAX_SOCKET_PATH = 100  # bytes; sun_path holds 108 on Linux, 104 on macOS
STACK_MARKER = "_MLOPSCTL_STACK"
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
# Airflow plugin folder of the embedded stack (SQLite write serialisation + busy timeout; see the module)
AIRFLOW_PLUGINS_DIR = Path(__file__).resolve().parent / "airflow_plugins"


@dataclass(frozen=True)
class StackLayout:
    """Files and folders of the local stack under the state dir (docs/local-stack.md)."""

    state: Path

    @classmethod
    def from_settings(cls, settings: Settings) -> StackLayout:
        return cls(settings.state)

    @property
    def airflow_home(self) -> Path:
        return self.state / "airflow"

    @property
    def airflow_db(self) -> Path:
        return self.airflow_home / "airflow.db"

    @property
    def airflow_cfg(self) -> Path:
        return self.airflow_home / "airflow.cfg"

    @property
    def passwords_file(self) -> Path:
        return self.airflow_home / "passwords.json"

    @property
    def migrate_stamp(self) -> Path:
        return self.airflow_home / ".mlopsctl-db-migrated"

    @property
    def mlflow_dir(self) -> Path:
        return self.state / "mlflow"

    @property
    def mlflow_db(self) -> Path:
        return self.mlflow_dir / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.mlflow_dir / "artifacts"

    @property
    def spark_dir(self) -> Path:
        """Working dir of the Spark Connect server: its scratch space and SQL warehouse."""
        return self.state / "spark"

    @property
    def launcher_socket(self) -> Path:
        """The job launcher's Unix socket: in the state dir, unless that path is too long for a socket address
        (about 100 bytes), then in a private per-user folder of the temp dir, named after the state dir."""
        path = self.state / "launcher.sock"
        if len(os.fsencode(path)) <= _MAX_SOCKET_PATH:
            return path
        import hashlib
        import tempfile

        digest = hashlib.sha256(os.fsencode(self.state.resolve())).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"mlopsctl-{os.getuid()}" / f"{digest}.sock"

    @property
    def logs_dir(self) -> Path:
        return self.state / "logs"

    @property
    def pids_dir(self) -> Path:
        return self.state / "pids"

    @property
    def work_dir(self) -> Path:
        return self.state / "work"

    def log_file(self, component: str) -> Path:
        return self.logs_dir / f"{component}.log"

    def pid_file(self, component: str) -> Path:
        return self.pids_dir / f"{component}.pid"

    def ensure(self) -> None:
        """Create the layout; the state dir itself is private (0700)."""
        self.state.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state, 0o700)
        for path in (
            self.airflow_home,
            self.mlflow_dir,
            self.mlflow_artifacts,
            self.spark_dir,
            self.logs_dir,
            self.pids_dir,
            self.work_dir,
        ):
            path.mkdir(parents=True, exist_ok=True)
        socket_dir = self.launcher_socket.parent
        if socket_dir != self.state:
            socket_dir.mkdir(mode=0o700, exist_ok=True)
            if socket_dir.stat().st_uid != os.getuid():
                raise ConfigError(f"{socket_dir} belongs to another user; the job launcher cannot use it.",
                                  hint="Remove it, or use a shorter MLOPSCTL_STATE_DIR.")
            os.chmod(socket_dir, 0o700)


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


def ensure_admin_password(layout: StackLayout) -> str:
    """Return the local admin password, generating `<state>/airflow/passwords.json` (0600) on first use."""
    path = layout.passwords_file
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            password = data.get(ADMIN_USER)
        except (OSError, ValueError, AttributeError):
            password = None
        if isinstance(password, str) and password:
            os.chmod(path, 0o600)
            return password
    path.parent.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(18)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({ADMIN_USER: password}, fh)
    os.chmod(path, 0o600)
    return password


def read_admin_password(layout: StackLayout) -> str | None:
    try:
        data = json.loads(layout.passwords_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = data.get(ADMIN_USER) if isinstance(data, dict) else None
    return value if isinstance(value, str) and value else None


def _venv_bin() -> Path:
    return Path(sys.executable).parent


def _airflow_module() -> list[str]:
    """Command prefix of the Airflow CLI run as a module of this environment's Python (`python -m airflow`), the
    form `mlopsctl.devenv.zygote` forks."""
    if importlib.util.find_spec("airflow") is None:
        raise ConfigError(
            f"`airflow` is not installed in this environment ({sys.executable}).",
            hint="The local stack needs the `local` extra: pip install 'mlopsctl[local]'.",
        )
    return [sys.executable, "-m", "airflow"]


def _tool(name: str) -> list[str]:
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
        "MLOPSCTL_STATE_DIR": str(layout.state),
        "MLOPSCTL_PROJECT_DIR": str(settings.project_dir),
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
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
    spec = importlib.util.find_spec("pyspark")
    home = Path(next(iter(spec.submodule_search_locations or []), "")) if spec else None
    if home is None or not (home / "bin" / "spark-submit").is_file() or not (home / "jars").is_dir():
        raise ConfigError(
            f"No Spark distribution in this environment ({sys.executable}): the pyspark package with its "
            "bin/ and jars/ is needed for the local Spark Connect server.",
            hint="The local stack needs the `local` extra: pip install 'mlopsctl[local]' (pyspark-client "
            "alone is not enough).",
        )
    return home


#: the Python daemon of a local-master server's workers
SPARK_DAEMON_MODULE = "mlopsctl.devenv.sparkdaemon"


def is_loopback_master(master: str) -> bool:
    """local[...] or a cluster manager on this machine: the driver can then bind to 127.0.0.1 only."""
    if master.startswith("local"):
        return True
    return urlparse(master).hostname in ("127.0.0.1", "localhost")


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
    if is_loopback_master(settings.spark_master):
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
        # IPv4 sockets: the JVM's listeners show up as 127.0.0.1, not as IPv4-mapped IPv6 addresses.
        # C1-only JIT and the serial GC: the server then takes less CPU to start (it starts next to Airflow
        # and MLflow) and answers small jobs faster, for the same memory (figure in docs/local-stack.md).
        "spark.driver.extraJavaOptions": " ".join(
            ["-Djava.net.preferIPv4Stack=true", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC",
             *java_options]
        ),
        "spark.local.dir": str(layout.spark_dir / "tmp"),
        "spark.sql.warehouse.dir": str(layout.spark_dir / "warehouse"),
    }
    if is_loopback_master(master):
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


def _check_distinct_ports(settings: Settings) -> None:
    ports = {
        "Airflow": ("MLOPSCTL_AIRFLOW_PORT", settings.airflow_port),
        "MLflow": ("MLOPSCTL_MLFLOW_PORT", settings.mlflow_port),
        "the Spark Connect server": ("MLOPSCTL_SPARK_CONNECT_PORT", settings.spark_connect_port),
    }
    names = list(ports)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if ports[a][1] == ports[b][1]:
                raise ConfigError(
                    f"{a} and {b} cannot share port {ports[a][1]}.",
                    hint=f"Set {ports[a][0]} and {ports[b][0]} to different ports.",
                )


def component_specs(settings: Settings, layout: StackLayout | None = None) -> dict[str, ComponentSpec]:
    """The seven components of the local stack, in start order."""
    layout = layout or StackLayout.from_settings(settings)
    _check_distinct_ports(settings)
    airflow = _airflow_module()
    aenv = airflow_env(settings, layout)
    home = layout.airflow_home
    archive = spark_class_archive(settings, layout)
    return {
        "spark": ComponentSpec(
            "spark",
            spark_argv(settings, layout, archive.map_options() if archive else ()),
            spark_env(settings, layout),
            layout.spark_dir,
            settings.spark_connect_port,
        ),
        "launcher": ComponentSpec(
            "launcher",
            [sys.executable, "-m", "mlopsctl.devenv.launcher", "--socket", str(layout.launcher_socket)],
            base_env(settings, layout),  # each job gets the environment its task asks for, not this one
            layout.state,
        ),
        "mlflow": ComponentSpec(
            "mlflow",
            [
                *_tool("mlflow"),
                "server",
                "--backend-store-uri",
                f"sqlite:///{layout.mlflow_db}",
                "--artifacts-destination",
                str(layout.mlflow_artifacts),
                "--host",
                "127.0.0.1",
                "--port",
                str(settings.mlflow_port),
                "--workers",
                "1",
            ],
            mlflow_env(settings, layout),
            layout.mlflow_dir,
            settings.mlflow_port,
        ),
        "api-server": ComponentSpec(
            "api-server",
            [
                *airflow,
                "api-server",
                "--host",
                "127.0.0.1",
                "--port",
                str(settings.airflow_port),
                "--workers",
                "1",
            ],
            aenv,
            home,
            settings.airflow_port,
        ),
        "scheduler": ComponentSpec("scheduler", [*airflow, "scheduler", "--skip-serve-logs"], aenv, home),
        "dag-processor": ComponentSpec("dag-processor", [*airflow, "dag-processor"], aenv, home),
        "triggerer": ComponentSpec("triggerer", [*airflow, "triggerer", "--skip-serve-logs"], aenv, home),
    }


#: what every Airflow component imports before its own work: its forks share one import of them
AIRFLOW_PRELOAD: tuple[str, ...] = (
    "argcomplete",
    "airflow.cli.cli_parser",
    "airflow.cli.commands.api_server_command",
    "airflow.cli.commands.scheduler_command",
    "airflow.cli.commands.dag_processor_command",
    "airflow.cli.commands.triggerer_command",
)


def airflow_zygote_spec(settings: Settings, layout: StackLayout) -> ComponentSpec:
    """The process that starts the Airflow components as forks of itself (`mlopsctl.devenv.zygote`), with their
    shared environment."""
    argv = [sys.executable, "-m", "mlopsctl.devenv.zygote"]
    for module in AIRFLOW_PRELOAD:
        argv += ["--preload", module]
    return ComponentSpec("airflow", argv, airflow_env(settings, layout), layout.airflow_home)


def migrate_argv() -> list[str]:
    return [*_airflow_module(), "db", "migrate"]


def airflow_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("apache-airflow-core")
    except PackageNotFoundError:
        try:
            return version("apache-airflow")
        except PackageNotFoundError:
            return "unknown"


def migration_needed(layout: StackLayout) -> bool:
    """True on first start or after an Airflow upgrade (the stamp records the version last migrated)."""
    if not layout.airflow_db.is_file() or not layout.airflow_cfg.is_file():
        return True
    try:
        stamp = json.loads(layout.migrate_stamp.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return True
    return not isinstance(stamp, dict) or stamp.get("airflow_version") != airflow_version()


def write_migrate_stamp(layout: StackLayout) -> None:
    layout.migrate_stamp.write_text(json.dumps({"airflow_version": airflow_version()}), encoding="utf-8")
