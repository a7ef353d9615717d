"""`dev status`: each component of the local stack, from its PID file (verified), its port, its health probe
and the memory of its whole process tree."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mlopsctl.devenv import components
from mlopsctl.devenv.health import ProbeContext
from mlopsctl.devenv.layout import StackLayout, read_admin_password
from mlopsctl.devenv.ports import recorded_port, wanted_ports
from mlopsctl.devenv.process import memory_bytes, process_of, read_pid_file, tree_of
from mlopsctl.devenv.results import ComponentState, StackStatus

if TYPE_CHECKING:
    from mlopsctl.settings import Settings


def stack_status(settings: Settings, *, probe: bool = True) -> StackStatus:
    """Each component: PID (verified), port, health (unless ``probe`` is False), RSS and PSS of its whole
    process tree. A running component reports the port it really uses."""
    layout = StackLayout.from_settings(settings)
    comps = components.components()
    records = {c.name: read_pid_file(layout.pid_file(c.name)) for c in comps}
    alive = {name: process_of(record) for name, record in records.items()}
    ports = wanted_ports(settings)
    for c in comps:
        if c.port is not None and alive[c.name] is not None:
            ports[c.name] = recorded_port(records[c.name]) or ports[c.name]
    urls = components.urls(ports)
    ctx = ProbeContext(settings, layout, urls, ports)
    states = []
    for c in comps:
        record, proc = records[c.name], alive[c.name]
        log = str(layout.log_file(c.name))
        if record is None or proc is None:
            states.append(ComponentState(name=c.name, pid=record.pid if record else None, running=False,
                                         port=ports[c.name], health="stopped", log_file=log))
            continue
        procs = tree_of(record)
        rss, pss = memory_bytes(procs)
        states.append(ComponentState(
            name=c.name, pid=proc.pid, running=True, port=ports[c.name],
            health=c.probe(ctx, c) if probe else "unknown", rss_bytes=rss, pss_bytes=pss,
            processes=len(procs), started_at=record.started_at, log_file=log,
        ))
    return StackStatus(state_dir=layout.state, urls=urls, passwords_file=layout.passwords_file, components=states)


def read_password(settings: Settings) -> str | None:
    return read_admin_password(StackLayout.from_settings(settings))


def log_file(settings: Settings, name: str) -> Path:
    return StackLayout.from_settings(settings).log_file(name)
