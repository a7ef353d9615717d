"""Start, stop and inspect the local stack. Used by `mlopsctl dev ...` and by tests/fixtures/stack.py.

Never prints: progress goes to an optional callback `on_progress(component, state, detail)`, where
component is one of COMPONENTS, "db" (migration) or "dags" (DAG parsing), and state is one of
"starting", "running", "waiting", "healthy", "already running", "migrating", "done", "failed".
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlparse

from mlopsctl.devenv import health as hc
from mlopsctl.devenv.launcher import ping, start_preload
from mlopsctl.devenv.process import (
    STOP_GRACE,
    ForkError,
    PidRecord,
    kill_all,
    marked_processes,
    memory_bytes,
    process_of,
    read_pid_file,
    remove_pid_file,
    spawn,
    spawn_forks,
    tail,
    terminate,
    tree_of,
)
from mlopsctl.devenv.stack import (
    ADMIN_USER,
    AIRFLOW_COMPONENTS,
    ARCHIVE_WRITER,
    COMPONENTS,
    CONNECT_PORT_CONF,
    HEALTH_KEYS,
    HEARTBEAT_KEYS,
    HELPERS,
    PORT_ENV_VARS,
    SPARK_WARMUP,
    STACK_MARKER,
    START_ORDER,
    ComponentSpec,
    StackLayout,
    airflow_env,
    airflow_zygote_spec,
    archive_writer_spec,
    component_specs,
    dags_folder,
    ensure_admin_password,
    migrate_argv,
    migration_needed,
    read_admin_password,
    spark_class_archive,
    spark_warmup_spec,
    write_migrate_stamp,
)
from mlopsctl.errors import StackError
from mlopsctl.settings import CONNECT_DEFAULT_PORT

if TYPE_CHECKING:
    from mlopsctl.settings import Settings

Progress = Callable[[str, str, str], None]

#: between health/parse checks while starting: local probes (HTTP health, a socket connect), cheap enough to
#: look four times a second, so `dev start` returns within a quarter second of the stack being ready
_POLL = 0.25
_MIGRATE_TIMEOUT = 600.0


def _noop(component: str, state: str, detail: str) -> None:
    pass


# --------------------------------------------------------------------------------------------- ports


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True if something already listens on host:port (or the port cannot be bound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _port_owner(port: int) -> str | None:
    """'pid 123 (name)' of the process listening on port, when the OS tells us."""
    try:
        import psutil

        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                try:
                    name = " ".join(psutil.Process(conn.pid).cmdline()[:3]) or psutil.Process(conn.pid).name()
                except psutil.Error:
                    name = "?"
                return f"pid {conn.pid} ({name})"
    except Exception:  # noqa: BLE001 - best effort only
        return None
    return None


def _check_port(component: str, port: int, env_var: str) -> None:
    if port_in_use(port):
        owner = _port_owner(port)
        raise StackError(
            f"Port {port} on 127.0.0.1, needed by {component}, is already in use"
            + (f" by {owner}." if owner else "."),
            hint=f"Stop whatever listens there, or pick another port with {env_var}=<port>.",
        )


# --------------------------------------------------------------------------------------------- results


@dataclass
class ComponentState:
    name: str
    pid: int | None
    running: bool
    port: int | None
    health: str  # healthy | unhealthy | starting | stopped | unknown
    rss_bytes: int = 0
    processes: int = 0
    started_at: float | None = None
    log_file: str = ""
    pss_bytes: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "component": self.name,
            "pid": self.pid,
            "running": self.running,
            "port": self.port,
            "health": self.health,
            "rss_bytes": self.rss_bytes,
            "rss_mb": round(self.rss_bytes / 1e6, 1),
            "pss_bytes": self.pss_bytes,
            "processes": self.processes,
            "started_at": datetime.fromtimestamp(self.started_at, UTC).isoformat()
            if self.started_at
            else None,
            "log_file": self.log_file,
        }


@dataclass
class StackStatus:
    state_dir: Path
    airflow_url: str
    mlflow_url: str
    passwords_file: Path
    components: list[ComponentState]
    spark_url: str = ""

    @property
    def running(self) -> list[str]:
        return [c.name for c in self.components if c.running]

    @property
    def all_running(self) -> bool:
        return len(self.running) == len(self.components)

    @property
    def all_healthy(self) -> bool:
        return all(c.health == "healthy" for c in self.components)

    @property
    def total_rss_bytes(self) -> int:
        return sum(c.rss_bytes for c in self.components)

    @property
    def total_pss_bytes(self) -> int:
        return sum(c.pss_bytes for c in self.components)

    def as_dict(self) -> dict[str, Any]:
        return {
            "state_dir": str(self.state_dir),
            "airflow_url": self.airflow_url,
            "mlflow_url": self.mlflow_url,
            "spark_url": self.spark_url,
            "username": ADMIN_USER,
            "passwords_file": str(self.passwords_file),
            "running": self.all_running,
            "healthy": self.all_healthy,
            "total_rss_bytes": self.total_rss_bytes,
            "total_rss_mb": round(self.total_rss_bytes / 1e6, 1),
            "total_pss_bytes": self.total_pss_bytes,
            "total_pss_mb": round(self.total_pss_bytes / 1e6, 1),
            "components": [c.as_dict() for c in self.components],
        }


@dataclass
class StartResult:
    already_running: bool
    started: list[str]
    seconds: float
    migrated: bool
    airflow_url: str
    mlflow_url: str
    username: str
    passwords_file: Path
    dags_folder: Path
    dags: dict[str, list[str]] = field(default_factory=dict)
    import_errors: dict[str, str] = field(default_factory=dict)
    spark_url: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "already_running": self.already_running,
            "started": self.started,
            "seconds": round(self.seconds, 1),
            "migrated": self.migrated,
            "airflow_url": self.airflow_url,
            "mlflow_url": self.mlflow_url,
            "spark_url": self.spark_url,
            "username": self.username,
            "passwords_file": str(self.passwords_file),
            "dags_folder": str(self.dags_folder),
            "dags": self.dags,
            "import_errors": {k: hc.last_line(v) for k, v in self.import_errors.items()},
        }


@dataclass
class StopResult:
    stopped: list[str]
    stale: list[str]
    seconds: float
    leftover: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "stopped": self.stopped,
            "stale_pid_files": self.stale,
            "seconds": round(self.seconds, 1),
            "leftover_pids": self.leftover,
        }


# --------------------------------------------------------------------------------------------- status


def _records(layout: StackLayout) -> dict[str, PidRecord | None]:
    return {name: read_pid_file(layout.pid_file(name)) for name in COMPONENTS}


def _ports(settings: Settings) -> dict[str, int | None]:
    return {
        "api-server": settings.airflow_port,
        "scheduler": None,
        "dag-processor": None,
        "triggerer": None,
        "mlflow": settings.mlflow_port,
        "spark": settings.spark_connect_port,
        "launcher": None,  # a Unix socket in the state dir, no port
    }


def recorded_port(record: PidRecord | None) -> int | None:
    """The port a running component was started with (from the argv in its PID file: `--port N`, or the
    Spark Connect server's `--conf spark.connect.grpc.binding.port=N`)."""
    if record is None:
        return None
    argv = record.argv
    for i, arg in enumerate(argv):
        if arg == "--port" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(CONNECT_PORT_CONF + "="):
            value = arg.partition("=")[2]
        else:
            continue
        try:
            return int(value)
        except ValueError:
            return None
    return None


def spark_serving(port: int) -> bool:
    """The local Spark Connect server answers gRPC on 127.0.0.1:port."""
    return hc.grpc_serving("127.0.0.1", port)


def _airflow_component_health(health: dict[str, Any] | None, name: str, since: float | None = None) -> str:
    if health is None:
        return "unknown"
    status = hc.component_status(health, HEALTH_KEYS[name])
    if status != "healthy":
        return "unhealthy" if status else "starting"
    if since is not None and name in HEARTBEAT_KEYS:
        beat = hc.heartbeat(health, HEALTH_KEYS[name], HEARTBEAT_KEYS[name])
        if beat is None or beat.timestamp() < since:
            return "starting"  # the healthy heartbeat is an old one, from before this process started
    return "healthy"


def stack_status(settings: Settings, *, probe: bool = True) -> StackStatus:
    """Each component: PID (verified), port, health, RSS of its whole process tree."""
    layout = StackLayout.from_settings(settings)
    records = _records(layout)
    ports = _ports(settings)
    alive = {name: process_of(rec) for name, rec in records.items()}
    for name in PORT_ENV_VARS:  # a running stack reports the ports it really uses
        if alive[name] is not None:
            ports[name] = recorded_port(records[name]) or ports[name]
    airflow_url = f"http://127.0.0.1:{ports['api-server']}"
    mlflow_url = f"http://127.0.0.1:{ports['mlflow']}"
    health = None
    if probe and alive.get("api-server") is not None:
        health = hc.airflow_health(airflow_url)
    mlflow_ok = probe and alive.get("mlflow") is not None and hc.mlflow_healthy(mlflow_url)
    spark_port = ports["spark"] or settings.spark_connect_port
    spark_ok = probe and alive.get("spark") is not None and spark_serving(spark_port)
    launcher_ok = probe and alive.get("launcher") is not None and ping(layout.launcher_socket) is not None
    states = []
    for name in COMPONENTS:
        rec, proc = records[name], alive[name]
        if proc is None:
            states.append(
                ComponentState(
                    name,
                    rec.pid if rec else None,
                    False,
                    ports[name],
                    "stopped",
                    log_file=str(layout.log_file(name)),
                )
            )
            continue
        procs = tree_of(rec)  # type: ignore[arg-type]
        rss, pss = memory_bytes(procs)
        if not probe:
            h = "unknown"
        elif name == "mlflow":
            h = "healthy" if mlflow_ok else "unhealthy"
        elif name == "spark":
            h = "healthy" if spark_ok else "unhealthy"
        elif name == "launcher":
            h = "healthy" if launcher_ok else "unhealthy"
        elif name == "api-server":
            h = "healthy" if health is not None else "unhealthy"
        else:
            h = _airflow_component_health(health, name)
        states.append(
            ComponentState(
                name,
                proc.pid,
                True,
                ports[name],
                h,
                rss,
                len(procs),
                rec.started_at if rec else None,
                str(layout.log_file(name)),
                pss_bytes=pss,
            )
        )
    spark_url = f"sc://127.0.0.1:{spark_port}"
    return StackStatus(layout.state, airflow_url, mlflow_url, layout.passwords_file, states, spark_url)


# --------------------------------------------------------------------------------------------- start


def _migrate(settings: Settings, layout: StackLayout, on_progress: Progress) -> None:
    on_progress("db", "migrating", "airflow db migrate (first start or Airflow upgrade)")
    log = layout.log_file("db-migrate")
    env = airflow_env(settings, layout)
    with open(log, "ab") as fh:
        fh.write(f"\n=== mlopsctl: airflow db migrate at {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n".encode())
        fh.flush()
        try:
            rc = subprocess.run(
                migrate_argv(),
                env=env,
                cwd=str(layout.airflow_home),
                stdin=subprocess.DEVNULL,
                stdout=fh,
                check=False,
                stderr=subprocess.STDOUT,
                timeout=_MIGRATE_TIMEOUT,
                start_new_session=True,
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


def _cleanup_stale(name: str, record: PidRecord | None, layout: StackLayout) -> bool:
    """Kill processes left behind by a dead component (e.g. workers of a scheduler that got kill -9) and
    drop its PID file. True if the PID file was stale."""
    if record is None:
        return False
    leftovers = tree_of(record)
    if leftovers:
        terminate([record], grace=10.0)
    remove_pid_file(layout.pid_file(name))
    return True


def _fail(
    name: str, reason: str, layout: StackLayout, started: dict[str, PidRecord], hint: str | None = None,
    explain: str | None = None,
) -> NoReturn:
    """Stop what this start launched and raise StackError: `name` `reason`, then ``explain`` (by default the
    last lines of the component's log)."""
    if started:
        terminate(list(started.values()), grace=10.0)
        for comp in started:
            remove_pid_file(layout.pid_file(comp))
    stopped = f" Stopped what this start had launched ({', '.join(started)})." if started else ""
    if explain is None:
        log = layout.log_file(name)
        explain = f"Last lines of {log}:\n{tail(log, 20)}"
    raise StackError(
        f"{name} {reason}.{stopped} {explain}",
        hint=hint or f"See the whole log with `mlopsctl dev logs {name}`.",
    )


class _BackgroundProbe:
    """A slow probe run in a daemon thread (started again after a failure), so that the poll loop goes on
    looking at the other components meanwhile."""

    def __init__(self, probe: Callable[[], bool]) -> None:
        self._probe = probe
        self._thread: threading.Thread | None = None
        self._ok = False

    def passed(self) -> bool:
        if not self._ok and (self._thread is None or not self._thread.is_alive()):
            self._thread = threading.Thread(target=self._run, name="health-probe", daemon=True)
            self._thread.start()
        return self._ok

    def _run(self) -> None:
        self._ok = self._probe()


def _wait_healthy(
    settings: Settings,
    layout: StackLayout,
    records: dict[str, PidRecord | None],
    to_start: list[str],
    started: dict[str, PidRecord],
    procs: dict[str, subprocess.Popen],
    client: Any,
    dag_files: list[Path],
    deadline: float,
    limit: float,
    progress: Progress,
) -> hc.ParseReport:
    """Poll until every component is healthy and every DAG file is parsed; StackError on death/timeout."""
    done: set[str] = set()
    report: hc.ParseReport | None = None
    last: dict[str, str] = {}
    execution_api = _BackgroundProbe(lambda: hc.execution_api_ready(settings.local_airflow_url))

    def note(name: str, state: str, detail: str = "") -> None:
        if last.get(name) != state + detail:
            last[name] = state + detail
            progress(name, state, detail)

    while True:
        for name, proc in procs.items():
            if proc.poll() is not None:
                _fail(name, f"exited during start (exit code {proc.returncode})", layout, started)
        for name, record in started.items():
            if name not in procs and process_of(record) is None:  # a fork of the zygote: not our child
                _fail(name, "exited during start", layout, started)
        for name in COMPONENTS:
            if name not in to_start and process_of(records[name]) is None:
                _fail(name, "stopped while the stack was starting", layout, started)

        health = hc.airflow_health(settings.local_airflow_url) if len(done) < len(COMPONENTS) else None
        for name in COMPONENTS:
            if name in done:
                continue
            if name == "mlflow":
                healthy = hc.mlflow_healthy(settings.local_mlflow_url)
            elif name == "spark":
                healthy = spark_serving(settings.spark_connect_port)
            elif name == "launcher":
                healthy = ping(layout.launcher_socket) is not None
            elif name == "api-server":  # its public API answers, then its execution API (which tasks call)
                healthy = (
                    health is not None
                    and hc.component_status(health, "metadatabase") == "healthy"
                    and execution_api.passed()
                )
            else:
                since = started[name].started_at - 1.0 if name in started else None
                healthy = _airflow_component_health(health, name, since) == "healthy"
            if healthy:
                done.add(name)
            note(name, "healthy" if healthy else "waiting")

        if done >= set(AIRFLOW_COMPONENTS) and (report is None or not report.complete):
            fresh = hc.dag_parse_report(client, dag_files)
            if fresh is not None:
                report = fresh
                if report.complete:
                    note(
                        "dags",
                        "done",
                        f"{len(report.dags_by_file)} file(s) with DAGs, "
                        f"{len(report.import_errors)} import error(s)",
                    )
                else:
                    note(
                        "dags", "waiting", f"{len(report.pending)} of {len(dag_files)} file(s) not parsed yet"
                    )

        if done == set(COMPONENTS) and report is not None and report.complete:
            return report
        if time.monotonic() > deadline:
            waiting = [n for n in COMPONENTS if n not in done]
            if waiting:
                others = f" (also not healthy: {', '.join(waiting[1:])})" if waiting[1:] else ""
                _fail(
                    waiting[0],
                    f"was not healthy after {limit:.0f} s{others}",
                    layout,
                    started,
                    hint="The machine may be slow: raise MLOPSCTL_START_TIMEOUT (or --timeout), or read the log "
                    "above.",
                )
            pending = ", ".join(report.pending) if report else "all of them"
            _fail(
                "dag-processor",
                f"had not parsed these DAG files after {limit:.0f} s: {pending}",
                layout,
                started,
                hint="Raise MLOPSCTL_START_TIMEOUT, or check the DAG files with `mlopsctl check`.",
            )
        time.sleep(_POLL)


def _spawn_components(
    settings: Settings,
    layout: StackLayout,
    specs: dict[str, ComponentSpec],
    to_start: list[str],
    started: dict[str, PidRecord],
    procs: dict[str, subprocess.Popen],
    deadline: float,
    progress: Progress,
) -> None:
    """Start the components in ``to_start``, recording each in ``started`` (and ``procs``, for those that are
    this process's children) as soon as it runs: the Airflow ones as forks of one zygote, the others spawned."""
    for name in START_ORDER:
        if name not in to_start or name in AIRFLOW_COMPONENTS:
            continue
        proc, record = spawn(specs[name], layout.log_file(name), layout.pid_file(name))
        started[name] = record
        procs[name] = proc
        progress(name, "starting", f"pid {record.pid}")
    forked = [name for name in START_ORDER if name in to_start and name in AIRFLOW_COMPONENTS]
    if not forked:
        return
    try:
        records = spawn_forks(
            airflow_zygote_spec(settings, layout),
            [specs[name] for name in forked],
            {name: layout.log_file(name) for name in forked},
            {name: layout.pid_file(name) for name in forked},
            timeout=max(1.0, deadline - time.monotonic()),
        )
    except ForkError as exc:
        _fail(", ".join(forked), "could not be started", layout, started,
              explain=f"The process that forks them (python -m mlopsctl.devenv.zygote) failed: {exc}",
              hint="Check the Airflow install with `python -m airflow version`.")
    for name, record in records.items():
        started[name] = record
        progress(name, "starting", f"pid {record.pid}")


def start_stack(
    settings: Settings, *, on_progress: Progress | None = None, timeout: float | None = None
) -> StartResult:
    """Start whatever part of the stack is not running and wait until all of it is really healthy.

    Idempotent: a running, healthy stack is left alone. A component that died (kill -9, crash) is cleaned up
    (stray children killed, stale PID file removed) and started again."""
    progress = on_progress or _noop
    t0 = time.monotonic()
    limit = timeout if timeout is not None else settings.start_timeout
    deadline = t0 + limit
    layout = StackLayout.from_settings(settings)
    layout.ensure()
    password = ensure_admin_password(layout)
    records = _records(layout)
    archive = spark_class_archive(settings, layout)
    writing = helper_running(layout, ARCHIVE_WRITER)
    if archive is not None and process_of(records["spark"]) is None and not writing:
        archive.prepare()  # before the server's argv is built, which maps the archive if there is one
    specs = component_specs(settings, layout)
    folder = dags_folder(settings)
    dag_files = hc.expected_dag_files(folder)

    wanted = _ports(settings)
    for name, env_var in PORT_ENV_VARS.items():
        port = wanted[name]
        actual = recorded_port(records[name]) if process_of(records[name]) is not None else None
        if actual is not None and actual != port:
            raise StackError(
                f"The local stack in {layout.state} is already running with {name} on port {actual}, not {port}.",
                hint=f"Use {env_var}={actual}, or run `mlopsctl dev stop` first to restart it on port {port}.",
            )
    to_start = []
    for name in COMPONENTS:
        if process_of(records[name]) is not None:
            progress(name, "already running", f"pid {records[name].pid}")  # type: ignore[union-attr]
        else:
            to_start.append(name)

    # a half-dead stack: clean up what the dead components left behind, before checking ports
    for name in to_start:
        _cleanup_stale(name, records[name], layout)

    for name in PORT_ENV_VARS:
        if name in to_start:
            _check_port(name, wanted[name], PORT_ENV_VARS[name])  # type: ignore[arg-type]

    migrated = False
    if any(n in AIRFLOW_COMPONENTS for n in to_start) and migration_needed(layout):
        if any(process_of(records[n]) is not None for n in AIRFLOW_COMPONENTS):
            raise StackError(
                "The Airflow database needs a migration but some Airflow components are still running.",
                hint="Run `mlopsctl dev stop`, then `mlopsctl dev start`.",
            )
        _migrate(settings, layout, progress)
        migrated = True

    started: dict[str, PidRecord] = {}
    procs: dict[str, subprocess.Popen] = {}
    from mlopsctl.airflow.client import AirflowClient

    client = AirflowClient(
        settings.local_airflow_url,
        auth="password",
        username=ADMIN_USER,
        password=password,
        timeout=10.0,
        retries=0,
    )
    try:
        _spawn_components(settings, layout, specs, to_start, started, procs, deadline, progress)
        report = _wait_healthy(
            settings, layout, records, to_start, started, procs, client, dag_files, deadline, limit, progress
        )
    except KeyboardInterrupt:
        # Ctrl-C during start: do not leave a half-started stack behind
        terminate(list(started.values()), grace=10.0)
        for comp in started:
            remove_pid_file(layout.pid_file(comp))
        raise
    finally:
        client.close()
    # the launcher's imports wait until now, so that they do not slow the start of the rest of the stack;
    # if this request is lost, the launcher starts them on its own, or for its first job
    start_preload(layout.launcher_socket)
    # likewise the Spark server's class-data archive, for the next start (`mlopsctl.devenv.classarchive`)
    if archive is not None and not archive.path.is_file() and not writing:
        spawn(archive_writer_spec(settings, layout, archive), layout.log_file(ARCHIVE_WRITER),
              layout.pid_file(ARCHIVE_WRITER))
    # and a freshly started Spark server's first job (`mlopsctl.devenv.sparkwarmup`)
    if "spark" in started:
        spawn(spark_warmup_spec(settings, layout), layout.log_file(SPARK_WARMUP), layout.pid_file(SPARK_WARMUP))

    return StartResult(
        already_running=not to_start,
        started=list(started),
        seconds=time.monotonic() - t0,
        migrated=migrated,
        airflow_url=settings.local_airflow_url,
        mlflow_url=settings.local_mlflow_url,
        username=ADMIN_USER,
        passwords_file=layout.passwords_file,
        dags_folder=folder,
        dags=report.dags_by_file,
        import_errors=report.import_errors,
        spark_url=settings.local_spark_remote,
    )


def helper_running(layout: StackLayout, helper: str) -> bool:
    """A background helper of the start (one of ``HELPERS``) is still at work."""
    return process_of(read_pid_file(layout.pid_file(helper))) is not None


# --------------------------------------------------------------------------------------------- stop


def stop_stack(
    settings: Settings, *, grace: float = STOP_GRACE, on_progress: Progress | None = None
) -> StopResult:
    """Stop every component this state dir started (process groups, SIGTERM then SIGKILL after ``grace``
    seconds), leaving no orphans. Stale PID files (dead process, or PID reused by someone else) are removed,
    never killed. The start's background helpers still at work are killed at once: a writer of the Spark
    server's class-data archive (the next start drops what it wrote, and writes the archive again) and the
    Spark server's warm-up job."""
    progress = on_progress or _noop
    t0 = time.monotonic()
    layout = StackLayout.from_settings(settings)
    for helper in HELPERS:
        record = read_pid_file(layout.pid_file(helper))
        if record is not None:
            terminate([record], grace=0)
            remove_pid_file(layout.pid_file(helper))
    records = _records(layout)
    live: dict[str, PidRecord] = {}
    stale: list[str] = []
    for name, record in records.items():
        if record is None:
            continue
        if tree_of(record):
            live[name] = record
            progress(name, "stopping", f"pid {record.pid}")
        else:
            stale.append(name)
    leftover = terminate(list(live.values()), grace=grace) if live else []
    # final sweep: anything still carrying this stack's marker escaped its session (e.g. a setsid'd task)
    strays = [
        p for p in marked_processes(STACK_MARKER, str(layout.state)) if p.pid not in {q.pid for q in leftover}
    ]
    if strays:
        progress("strays", "stopping", f"{len(strays)} process(es) outside the component sessions")
        leftover += kill_all(strays, grace=min(grace, 5.0))
    for name in records:
        if records[name] is not None:
            remove_pid_file(layout.pid_file(name))
    for name in live:
        progress(name, "stopped", "")
    result = StopResult(
        sorted(live, key=COMPONENTS.index), stale, time.monotonic() - t0, [p.pid for p in leftover]
    )
    if leftover:
        raise StackError(
            f"Could not stop processes {', '.join(map(str, result.leftover))} of the local stack.",
            hint="Check them with `ps -o pid,cmd -p <pid>` and end them by hand.",
        )
    return result


def read_password(settings: Settings) -> str | None:
    return read_admin_password(StackLayout.from_settings(settings))


def log_file(settings: Settings, component: str) -> Path:
    return StackLayout.from_settings(settings).log_file(component)


# --------------------------------------------------------------------------------------------- Spark server


def spark_server_down(settings: Settings) -> str | None:
    """None when the Spark Connect server the DAG tasks use (`settings.spark_remote`) serves; otherwise one
    line saying why not and what to do. Cheap (PID file, one socket probe): meant to be called before a run
    is triggered. For the embedded server it also checks that this state dir's server process is alive."""
    if not settings.spark_remote_is_local:
        parsed = urlparse(settings.spark_remote)
        host, port = parsed.hostname or "", parsed.port or CONNECT_DEFAULT_PORT
        tls = "use_ssl=true" in parsed.path.lower().replace(" ", "")
        serving = hc.tcp_accepts(host, port) if tls else hc.grpc_serving(host, port)
        if serving:
            return None
        return (
            f"The Spark Connect server at {settings.spark_remote} (MLOPSCTL_SPARK_REMOTE) does not answer."
        )
    layout = StackLayout.from_settings(settings)
    log = layout.log_file("spark")
    record = read_pid_file(layout.pid_file("spark"))
    if record is None or process_of(record) is None:
        return (
            f"The local Spark Connect server is not running (state dir {layout.state}; log {log}): "
            "start it with `mlopsctl dev start`."
        )
    port = recorded_port(record) or settings.spark_connect_port
    if not spark_serving(port):
        return (
            f"The local Spark Connect server (pid {record.pid}) does not answer on 127.0.0.1:{port} yet "
            f"(still starting, or hung; log {log}): check `mlopsctl dev status`."
        )
    return None
