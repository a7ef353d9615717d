"""The four Airflow components of the local stack: their commands (forks of one process that imports Airflow
once, `mlopsctl.devenv.zygote`), their health in Airflow's health JSON, the database migration before they
start, and the DAG files parsed, which `dev start` waits for once they are healthy.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlopsctl.devenv.layout import ADMIN_USER, StackLayout, read_admin_password
from mlopsctl.devenv.logs import tail
from mlopsctl.devenv.spec import Group
from mlopsctl.devenv.stack import ComponentSpec, airflow_env, airflow_module, dags_folder
from mlopsctl.errors import StackError

if TYPE_CHECKING:
    from mlopsctl.devenv import health as hc
    from mlopsctl.devenv.spec import Component
    from mlopsctl.settings import Settings

API_SERVER = "api-server"
_MIGRATE_TIMEOUT = 600.0

#: what every Airflow component imports before its own work: its forks share one import of them
AIRFLOW_PRELOAD: tuple[str, ...] = (
    "argcomplete",
    "airflow.cli.cli_parser",
    "airflow.cli.commands.api_server_command",
    "airflow.cli.commands.scheduler_command",
    "airflow.cli.commands.dag_processor_command",
    "airflow.cli.commands.triggerer_command",
)


# --------------------------------------------------------------------------------------------- commands


def airflow_zygote_spec(settings: Settings, layout: StackLayout) -> ComponentSpec:
    """The process that starts the Airflow components as forks of itself (`mlopsctl.devenv.zygote`), with their
    shared environment."""
    argv = [sys.executable, "-m", "mlopsctl.devenv.zygote"]
    for module in AIRFLOW_PRELOAD:
        argv += ["--preload", module]
    return ComponentSpec("airflow", argv, airflow_env(settings, layout), layout.airflow_home)


def _command(name: str, settings: Settings, layout: StackLayout, *args: str) -> ComponentSpec:
    return ComponentSpec(name, [*airflow_module(), *args], airflow_env(settings, layout), layout.airflow_home)


def api_server_command(settings: Settings, layout: StackLayout) -> ComponentSpec:
    port = str(settings.airflow_port)
    spec = _command(API_SERVER, settings, layout, "api-server", "--host", "127.0.0.1", "--port", port, "--workers", "1")
    return ComponentSpec(spec.name, spec.argv, spec.env, spec.cwd, settings.airflow_port)


def scheduler_command(settings: Settings, layout: StackLayout) -> ComponentSpec:
    return _command("scheduler", settings, layout, "scheduler", "--skip-serve-logs")


def dag_processor_command(settings: Settings, layout: StackLayout) -> ComponentSpec:
    return _command("dag-processor", settings, layout, "dag-processor")


def triggerer_command(settings: Settings, layout: StackLayout) -> ComponentSpec:
    return _command("triggerer", settings, layout, "triggerer", "--skip-serve-logs")


# --------------------------------------------------------------------------------------------- health


def api_server_health(ctx: hc.ProbeContext, component: Component) -> str:
    """Its public API answers with a healthy metadatabase; while `dev start` waits, its execution API (which
    tasks call) answers too: the first request builds its routes, seconds of CPU that no task should wait for."""
    from mlopsctl.devenv import health as hc

    url = ctx.urls["airflow_url"]
    health = ctx.airflow_health(url)
    if health is None or hc.component_status(health, "metadatabase") != "healthy":
        return "unhealthy"
    if ctx.waiting and not ctx.background("execution-api", lambda: hc.execution_api_ready(url)):
        return "starting"
    return "healthy"


def heartbeat_health(key: str):
    """The probe of an Airflow component that heartbeats, under ``key`` in Airflow's health JSON: healthy, and
    (when this start launched it) with a heartbeat from after it was spawned."""

    def probe(ctx: hc.ProbeContext, component: Component) -> str:
        from mlopsctl.devenv import health as hc

        health = ctx.airflow_health(ctx.urls["airflow_url"])
        if health is None:
            return "unknown"
        status = hc.component_status(health, key)
        if status != "healthy":
            return "unhealthy" if status else "starting"
        since = ctx.since.get(component.name)
        if since is not None:
            beat = hc.heartbeat(health, key, f"latest_{key}_heartbeat")
            if beat is None or beat.timestamp() < since:
                return "starting"  # the healthy heartbeat is an old one, from before this process started
        return "healthy"

    return probe


# --------------------------------------------------------------------------------------------- database


def migrate_argv() -> list[str]:
    return [*airflow_module(), "db", "migrate"]


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


def prepare_database(run: Any) -> bool:
    """Migrate the Airflow database when needed (first start, Airflow upgrade), before any Airflow component
    starts; `run` is the start in progress (`mlopsctl.devenv.wait.StartRun`). True when it migrated."""
    if not migration_needed(run.layout):
        return False
    if run.group_running(GROUP):
        raise StackError(
            "The Airflow database needs a migration but some Airflow components are still running.",
            hint="Run `mlopsctl dev stop`, then `mlopsctl dev start`.",
        )
    _migrate(run.settings, run.layout, run.progress)
    return True


def _migrate(settings: Settings, layout: StackLayout, on_progress: Any) -> None:
    on_progress("db", "migrating", "airflow db migrate (first start or Airflow upgrade)")
    log = layout.log_file("db-migrate")
    with open(log, "ab") as fh:
        fh.write(f"\n=== mlopsctl: airflow db migrate at {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n".encode())
        fh.flush()
        try:
            rc = subprocess.run(
                migrate_argv(), env=airflow_env(settings, layout), cwd=str(layout.airflow_home),
                stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, check=False,
                timeout=_MIGRATE_TIMEOUT, start_new_session=True,
            ).returncode
        except subprocess.TimeoutExpired:
            rc = -1
    if rc != 0:
        raise StackError(
            f"`airflow db migrate` failed (exit {rc}). Last lines of {log}:\n{tail(log, 15)}",
            hint=f"Fix the cause above, or start from a clean state by removing {layout.airflow_db}.",
        )
    write_migrate_stamp(layout)
    on_progress("db", "done", "database ready")


# --------------------------------------------------------------------------------------------- DAG files


class DagParseWatch:
    """The DAG files of the stack's DAG folder as Airflow knows them: `dev start` waits until each one has
    its DAGs or an import error."""

    def __init__(self, settings: Settings, layout: StackLayout) -> None:
        from mlopsctl.airflow.client import AirflowClient
        from mlopsctl.devenv import health as hc

        self.folder: Path = dags_folder(settings)
        self.files = hc.expected_dag_files(self.folder)
        self.report: hc.ParseReport | None = None
        self.client = AirflowClient(settings.local_airflow_url, auth="password", username=ADMIN_USER,
                                    password=read_admin_password(layout) or "", timeout=10.0, retries=0)

    @property
    def done(self) -> bool:
        return self.report is not None and self.report.complete

    def check(self, note: Any) -> bool:
        """Ask Airflow again unless every file is parsed; ``note(name, state, detail)`` reports progress."""
        from mlopsctl.devenv import health as hc

        if self.done:
            return True
        fresh = hc.dag_parse_report(self.client, self.files)
        if fresh is not None:
            self.report = fresh
            if fresh.complete:
                note("dags", "done",
                     f"{len(fresh.dags_by_file)} file(s) with DAGs, {len(fresh.import_errors)} import error(s)")
            else:
                note("dags", "waiting", f"{len(fresh.pending)} of {len(self.files)} file(s) not parsed yet")
        return self.done

    def failure(self, limit: float) -> tuple[str, str, str]:
        """(component, reason, hint) when the files are still not parsed at the deadline."""
        pending = ", ".join(self.report.pending) if self.report else "all of them"
        return ("dag-processor", f"had not parsed these DAG files after {limit:.0f} s: {pending}",
                "Raise MLOPSCTL_START_TIMEOUT, or check the DAG files with `mlopsctl check`.")

    def close(self) -> None:
        self.client.close()


#: the four Airflow components are forks of one zygote, after one migration
GROUP = Group("airflow", airflow_zygote_spec, prepare=prepare_database, watch=DagParseWatch,
              fork_hint="Check the Airflow install with `python -m airflow version`.")
