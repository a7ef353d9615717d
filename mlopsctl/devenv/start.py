"""`dev start`: start whatever part of the local stack is not running, then wait until all of it is healthy
(`mlopsctl.devenv.wait`). Components come from `mlopsctl.devenv.components`, in their start order.

Never prints: progress goes to an optional callback `on_progress(component, state, detail)`, where
component is a component's name, "db" (migration) or "dags" (DAG parsing), and state is one of
"starting", "running", "waiting", "healthy", "already running", "migrating", "done", "failed".
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING

from mlopsctl.devenv import components
from mlopsctl.devenv.layout import StackLayout, ensure_admin_password
from mlopsctl.devenv.ports import check_distinct_ports, check_port_free, recorded_port, wanted_ports
from mlopsctl.devenv.process import (
    ForkError,
    PidRecord,
    process_of,
    read_pid_file,
    remove_pid_file,
    spawn,
    spawn_forks,
    terminate,
    tree_of,
)
from mlopsctl.devenv.results import StartResult
from mlopsctl.devenv.stack import ComponentSpec, dags_folder
from mlopsctl.devenv.wait import Progress, StartRun, wait_healthy
from mlopsctl.errors import StackError

if TYPE_CHECKING:
    from mlopsctl.devenv.spec import Component, Group
    from mlopsctl.settings import Settings



def _noop(component: str, state: str, detail: str) -> None:
    pass


def _refuse_other_ports(settings: Settings, layout: StackLayout, records: dict[str, PidRecord | None]) -> None:
    """A running component listens where it was started: a start asking for another port is refused."""
    wanted = wanted_ports(settings)
    for c in components.with_ports():
        assert c.port is not None
        actual = recorded_port(records[c.name]) if process_of(records[c.name]) is not None else None
        if actual is not None and actual != wanted[c.name]:
            raise StackError(
                f"The local stack in {layout.state} is already running with {c.name} on port {actual}, "
                f"not {wanted[c.name]}.",
                hint=f"Use {c.port.env_var}={actual}, or run `mlopsctl dev stop` first to restart it on port "
                f"{wanted[c.name]}.",
            )


def _cleanup_stale(name: str, record: PidRecord | None, layout: StackLayout) -> None:
    """Kill processes left behind by a dead component (e.g. workers of a scheduler that got kill -9) and
    drop its PID file."""
    if record is None:
        return
    if tree_of(record):
        terminate([record], grace=10.0)
    remove_pid_file(layout.pid_file(name))


def _groups(comps: list[Component]) -> list[Group]:
    """The groups of ``comps``, each once, in the order of their first member."""
    out: list[Group] = []
    for c in comps:
        if c.group is not None and c.group not in out:
            out.append(c.group)
    return out


def _spawn(run: StartRun, commands: dict[str, ComponentSpec]) -> None:
    """Start the components to start, recording each in ``run.started`` (and ``run.procs``, for those that are
    this process's children) as soon as it runs: a group's members as forks of its zygote, the others spawned."""
    layout, ordered = run.layout, [c for c in components.in_start_order() if c in run.to_start]
    for c in ordered:
        if c.group is None:
            proc, record = spawn(commands[c.name], layout.log_file(c.name), layout.pid_file(c.name))
            run.started[c.name], run.procs[c.name] = record, proc
            run.progress(c.name, "starting", f"pid {record.pid}")
    for group in _groups(ordered):
        members = [c.name for c in ordered if c.group == group]
        try:
            records = spawn_forks(
                group.zygote(run.settings, layout),
                [commands[name] for name in members],
                {name: layout.log_file(name) for name in members},
                {name: layout.pid_file(name) for name in members},
                timeout=max(1.0, run.deadline - time.monotonic()),
            )
        except ForkError as exc:
            run.fail(", ".join(members), "could not be started",
                     explain=f"The process that forks them (python {' '.join(group.zygote(run.settings, layout).argv[1:3])}) "
                     f"failed: {exc}", hint=group.fork_hint or None)
        for name, record in records.items():
            run.started[name] = record
            run.progress(name, "starting", f"pid {record.pid}")


def start_stack(settings: Settings, *, on_progress: Progress | None = None, timeout: float | None = None) -> StartResult:
    """Start whatever part of the stack is not running and wait until all of it is really healthy.

    Idempotent: a running, healthy stack is left alone. A component that died (kill -9, crash) is cleaned up
    (stray children killed, stale PID file removed) and started again."""
    progress = on_progress or _noop
    t0 = time.monotonic()
    layout = StackLayout.from_settings(settings)
    layout.ensure()
    ensure_admin_password(layout)
    check_distinct_ports(settings)
    comps = components.components()
    records = {c.name: read_pid_file(layout.pid_file(c.name)) for c in comps}
    _refuse_other_ports(settings, layout, records)
    to_start = []
    for c in comps:
        record = records[c.name]
        if record is not None and process_of(record) is not None:
            progress(c.name, "already running", f"pid {record.pid}")
        else:
            to_start.append(c)
    limit = timeout if timeout is not None else settings.start_timeout
    run = StartRun(settings, layout, progress, limit, records, to_start, deadline=t0 + limit)
    for c in to_start:
        if c.before_start is not None:
            c.before_start(settings, layout)
    commands = {c.name: replace(c.command(settings, layout), name=c.name) for c in to_start}
    # a half-dead stack: clean up what the dead components left behind, before checking ports
    for c in to_start:
        _cleanup_stale(c.name, records[c.name], layout)
    for c in to_start:
        check_port_free(c, settings)
    migrated = False
    for group in _groups(to_start):
        if group.prepare is not None and group.prepare(run):
            migrated = True

    watches = {group: group.watch(settings, layout) for group in _groups(list(comps)) if group.watch is not None}
    try:
        _spawn(run, commands)
        wait_healthy(run, watches)
    except KeyboardInterrupt:
        run.stop_started()  # Ctrl-C during start: do not leave a half-started stack behind
        raise
    finally:
        for watch in watches.values():
            watch.close()
    for c in comps:
        if c.after_start is not None:
            c.after_start(settings, layout, c.name in run.started)

    dags: dict[str, list[str]] = {}
    import_errors: dict[str, str] = {}
    for watch in watches.values():
        dags.update(watch.report.dags_by_file)
        import_errors.update(watch.report.import_errors)
    return StartResult(
        already_running=not to_start, started=list(run.started), seconds=time.monotonic() - t0,
        migrated=migrated, urls=components.urls(wanted_ports(settings)), passwords_file=layout.passwords_file,
        dags_folder=dags_folder(settings), dags=dags, import_errors=import_errors,
    )
