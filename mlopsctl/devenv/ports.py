"""The local stack's ports: the one each component wants (its port setting), the one a running component was
started with, and the checks before a start (distinct, and free on 127.0.0.1)."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from mlopsctl.devenv import components
from mlopsctl.devenv.stack import CONNECT_PORT_CONF
from mlopsctl.errors import ConfigError, StackError

if TYPE_CHECKING:
    from mlopsctl.devenv.process import PidRecord
    from mlopsctl.devenv.spec import Component
    from mlopsctl.settings import Settings


def wanted_ports(settings: Settings) -> dict[str, int | None]:
    """Component name -> the port its setting names (None: it listens on no port)."""
    return {c.name: c.port.read(settings) if c.port else None for c in components.components()}


def check_distinct_ports(settings: Settings) -> None:
    """ConfigError when two components' settings name the same port."""
    seen: dict[int, Component] = {}
    for component in components.with_ports():
        assert component.port is not None
        port = component.port.read(settings)
        other = seen.setdefault(port, component)
        if other is not component:
            assert other.port is not None
            raise ConfigError(
                f"The {other.port.what} and the {component.port.what} cannot share port {port}.",
                hint=f"Set {other.port.env_var} and {component.port.env_var} to different ports.",
            )


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


def check_port_free(component: Component, settings: Settings) -> None:
    """StackError when the component's port is taken on 127.0.0.1 (no-op for a component without a port)."""
    if component.port is None:
        return
    port = component.port.read(settings)
    if port_in_use(port):
        owner = _port_owner(port)
        raise StackError(
            f"Port {port} on 127.0.0.1, needed by {component.name}, is already in use"
            + (f" by {owner}." if owner else "."),
            hint=f"Stop whatever listens there, or pick another port with {component.port.env_var}=<port>.",
        )


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
