"""What the local stack is made of: the state-dir layout, the component command lines and their environment.

Pure functions of Settings (plus a few file reads/writes in the state dir); no processes are started here.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mlopsctl.errors import ConfigError

if TYPE_CHECKING:
    from mlopsctl.settings import Settings

AIRFLOW_COMPONENTS: tuple[str, ...] = ("api-server", "scheduler", "dag-processor", "triggerer")
COMPONENTS: tuple[str, ...] = (*AIRFLOW_COMPONENTS, "mlflow")

#: component -> key of its entry in Airflow's /api/v2/monitor/health JSON
HEALTH_KEYS: dict[str, str] = {
    "api-server": "metadatabase",
    "scheduler": "scheduler",
    "dag-processor": "dag_processor",
    "triggerer": "triggerer",
}
#: component -> heartbeat field in its health entry (a restarted component must beat after it was spawned)
HEARTBEAT_KEYS: dict[str, str] = {
    "scheduler": "latest_scheduler_heartbeat",
    "dag-processor": "latest_dag_processor_heartbeat",
    "triggerer": "latest_triggerer_heartbeat",
}

ADMIN_USER = "admin"
STACK_MARKER = "_MLOPSCTL_STACK"
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
# Airflow plugin folder of the embedded stack (SQLite write serialisation + busy timeout; see the module)
AIRFLOW_PLUGINS_DIR = Path(__file__).resolve().parent / "airflow_plugins"


@dataclass(frozen=True)
class StackLayout:
    """Files and folders of the local stack under the state dir (see the cross-team contract)."""

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
            self.logs_dir,
            self.pids_dir,
            self.work_dir,
        ):
            path.mkdir(parents=True, exist_ok=True)


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


def _tool(name: str) -> list[str]:
    """Command prefix for a console script of this environment (`airflow`, `mlflow`)."""
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
    """The runtime env contract the DAG tasks read (see contracts: MLOPSCTL_* + Spark's python)."""
    env = {
        "MLOPSCTL_MLFLOW_TRACKING_URI": settings.local_mlflow_url,
        "MLOPSCTL_COMPUTE": settings.compute,
        "MLOPSCTL_SPARK_MASTER": settings.spark_master,
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
            "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(layout.passwords_file),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{layout.airflow_db}",
            # SQLite under concurrent writers: see airflow_plugins/mlopsctl_sqlite.py
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(AIRFLOW_PLUGINS_DIR),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": "mlopsctl_sqlite.CONNECT_ARGS",
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


def component_specs(settings: Settings, layout: StackLayout | None = None) -> dict[str, ComponentSpec]:
    """The five components of the local stack, in start order."""
    layout = layout or StackLayout.from_settings(settings)
    if settings.airflow_port == settings.mlflow_port:
        raise ConfigError(
            f"Airflow and MLflow cannot share port {settings.airflow_port}.",
            hint="Set MLOPSCTL_AIRFLOW_PORT and MLOPSCTL_MLFLOW_PORT to different ports.",
        )
    airflow = _tool("airflow")
    aenv = airflow_env(settings, layout)
    home = layout.airflow_home
    return {
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


def migrate_argv() -> list[str]:
    return [*_tool("airflow"), "db", "migrate"]


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
