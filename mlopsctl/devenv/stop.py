"""`dev stop`: end every process this state dir's stack started, leaving no orphans."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from mlopsctl.devenv import components
from mlopsctl.devenv.layout import StackLayout
from mlopsctl.devenv.process import (
    STOP_GRACE,
    PidRecord,
    kill_all,
    read_pid_file,
    remove_pid_file,
    terminate,
    tree_of,
)
from mlopsctl.devenv.results import StopResult
from mlopsctl.devenv.stack import HELPERS, STACK_MARKER
from mlopsctl.errors import StackError

if TYPE_CHECKING:
    import psutil

    from mlopsctl.settings import Settings


def marked_processes(marker: str, value: str) -> list[psutil.Process]:
    """Live processes whose environment has marker=value (every process a stack spawned, however deep),
    excluding this process and its ancestors."""
    import psutil as ps

    me = ps.Process()
    exclude = {me.pid, *(p.pid for p in me.parents())}
    found = []
    for proc in ps.process_iter(["pid"]):
        if proc.info["pid"] in exclude:
            continue
        try:
            if proc.environ().get(marker) == value and proc.status() != ps.STATUS_ZOMBIE:
                found.append(proc)
        except (ps.NoSuchProcess, ps.AccessDenied, ps.ZombieProcess, OSError):
            continue
    return found


def _noop(component: str, state: str, detail: str) -> None:
    pass


def stop_stack(
    settings: Settings, *, grace: float = STOP_GRACE, on_progress: Callable[[str, str, str], None] | None = None
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
    names = components.names()
    records = {name: read_pid_file(layout.pid_file(name)) for name in names}
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
    for name, record in records.items():
        if record is not None:
            remove_pid_file(layout.pid_file(name))
    for name in live:
        progress(name, "stopped", "")
    result = StopResult(stopped=sorted(live, key=names.index), stale=stale, seconds=time.monotonic() - t0,
                        leftover=[p.pid for p in leftover])
    if leftover:
        raise StackError(
            f"Could not stop processes {', '.join(map(str, result.leftover))} of the local stack.",
            hint="Check them with `ps -o pid,cmd -p <pid>` and end them by hand.",
        )
    return result
