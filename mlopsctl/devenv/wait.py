"""`dev start`'s run in progress (`StartRun`) and its wait: poll every component's health probe, and what each
group waits for (such as the DAG files parsed), until the whole stack is healthy; stop what the start
launched and say why on a death or at the deadline."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

from mlopsctl.devenv import components
from mlopsctl.devenv.health import ProbeContext
from mlopsctl.devenv.logs import tail
from mlopsctl.devenv.ports import wanted_ports
from mlopsctl.devenv.process import PidRecord, process_of, remove_pid_file, terminate
from mlopsctl.errors import StackError

if TYPE_CHECKING:
    from mlopsctl.devenv.layout import StackLayout
    from mlopsctl.devenv.spec import Component, Group
    from mlopsctl.settings import Settings

Progress = Callable[[str, str, str], None]

#: between health/parse checks while starting: local probes (HTTP health, a socket connect), cheap enough to
#: look four times a second, so `dev start` returns within a quarter second of the stack being ready
_POLL = 0.25


@dataclass
class StartRun:
    """One `dev start` in progress: what it was asked, what it found, and what it has launched so far."""

    settings: Settings
    layout: StackLayout
    progress: Progress
    limit: float
    records: dict[str, PidRecord | None]
    to_start: list[Component]
    deadline: float = 0.0
    started: dict[str, PidRecord] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)  # the started ones that are our children

    def group_running(self, group: Group) -> bool:
        """Some component of ``group`` is running (was running when this start began)."""
        return any(process_of(self.records[c.name]) is not None for c in components.components() if c.group == group)

    def stop_started(self) -> None:
        """Stop what this start launched and drop its PID files."""
        if self.started:
            terminate(list(self.started.values()), grace=10.0)
            for name in self.started:
                remove_pid_file(self.layout.pid_file(name))

    def fail(self, name: str, reason: str, hint: str | None = None, explain: str | None = None) -> NoReturn:
        """Stop what this start launched and raise StackError: `name` `reason`, then ``explain`` (by default the
        last lines of the component's log)."""
        launched = list(self.started)
        self.stop_started()
        stopped = f" Stopped what this start had launched ({', '.join(launched)})." if launched else ""
        if explain is None:
            log = self.layout.log_file(name)
            explain = f"Last lines of {log}:\n{tail(log, 20)}"
        raise StackError(f"{name} {reason}.{stopped} {explain}",
                         hint=hint or f"See the whole log with `mlopsctl dev logs {name}`.")


def _check_alive(run: StartRun) -> None:
    """Fail the start when a component died: one it launched, or one that was already running."""
    for name, proc in run.procs.items():
        if proc.poll() is not None:
            run.fail(name, f"exited during start (exit code {proc.returncode})")
    for name, record in run.started.items():
        if name not in run.procs and process_of(record) is None:  # a fork of a zygote: not our child
            run.fail(name, "exited during start")
    for c in components.components():
        if c not in run.to_start and process_of(run.records[c.name]) is None:
            run.fail(c.name, "stopped while the stack was starting")


def wait_healthy(run: StartRun, watches: dict[Group, Any]) -> None:
    """Poll until every component is healthy and every watch (one per group, e.g. the DAG files parsed) is
    done; StackError on a death or at the deadline."""
    comps = components.components()
    ports = wanted_ports(run.settings)
    ctx = ProbeContext(run.settings, run.layout, components.urls(ports), ports, waiting=True,
                       since={name: record.started_at - 1.0 for name, record in run.started.items()})
    done: set[str] = set()
    last: dict[str, str] = {}

    def note(name: str, state: str, detail: str = "") -> None:
        if last.get(name) != state + detail:
            last[name] = state + detail
            run.progress(name, state, detail)

    while True:
        _check_alive(run)
        ctx.new_round()
        for c in comps:
            if c.name not in done:
                healthy = c.probe(ctx, c) == "healthy"
                if healthy:
                    done.add(c.name)
                note(c.name, "healthy" if healthy else "waiting")
        settled = True
        for group, watch in watches.items():
            members = {c.name for c in comps if c.group == group}
            settled = (members <= done and watch.check(note)) and settled
        if settled and len(done) == len(comps):
            return
        if time.monotonic() > run.deadline:
            waiting = [c.name for c in comps if c.name not in done]
            if waiting:
                others = f" (also not healthy: {', '.join(waiting[1:])})" if waiting[1:] else ""
                run.fail(waiting[0], f"was not healthy after {run.limit:.0f} s{others}",
                         hint="The machine may be slow: raise MLOPSCTL_START_TIMEOUT (or --timeout), or read "
                         "the log above.")
            name, reason, hint = next(w.failure(run.limit) for w in watches.values() if not w.done)
            run.fail(name, reason, hint=hint)
        time.sleep(_POLL)
