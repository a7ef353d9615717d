"""The local stack's components, declared once (mlopsctl/devenv/components.py): the list is consistent, and a
component added to it flows through the start order, the port checks, start, status (and its table and
JSON) and stop with no other change."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import sys
from pathlib import Path

import pytest
from rich.console import Console

from mlopsctl.devenv import components, health, ports, start, status, stop
from mlopsctl.devenv.layout import StackLayout
from mlopsctl.devenv.spec import Component, PortSetting, UrlLine
from mlopsctl.devenv.stack import STACK_MARKER, ComponentSpec
from mlopsctl.errors import ConfigError, ExitCode, StackError
from mlopsctl.render import stack_table
from mlopsctl.settings import Settings
from tests.fixtures.stack import free_port

EIGHTH = "cache"
EIGHTH_PORT = PortSetting("cache_port", "--cache-port", "cache server", default=16379)


def _settings(project: Path, **fields) -> Settings:
    taken: set[int] = set()
    for component in components.with_ports():
        if component.port.setting not in fields:
            fields[component.port.setting] = free_port(taken)
            taken.add(fields[component.port.setting])
    return Settings(_env_file=None, project_dir=project, **fields)


# ------------------------------------------------------------------------------------------ the list


def test_every_component_has_its_own_name_order_and_port_setting() -> None:
    stack = components.components()
    assert len(stack) == 7
    assert len({c.name for c in stack}) == len(stack)
    assert len({c.order for c in stack}) == len(stack)
    port_settings = [c.port for c in stack if c.port is not None]
    for attribute in ("setting", "env_var", "flag"):
        values = [getattr(p, attribute) for p in port_settings]
        assert len(set(values)) == len(values), attribute
    url_keys = [c.url.key for c in stack if c.url is not None]
    assert len(set(url_keys)) == len(url_keys)
    assert [c.name for c in components.in_start_order()] == [
        "spark", "launcher", "mlflow", "api-server", "scheduler", "dag-processor", "triggerer"
    ]


def test_the_port_settings_are_the_ones_users_have() -> None:
    """MLOPSCTL_AIRFLOW_PORT, MLOPSCTL_MLFLOW_PORT, MLOPSCTL_SPARK_CONNECT_PORT and their flags, unchanged."""
    assert {c.name: (c.port.env_var, c.port.flag) for c in components.with_ports()} == {
        "api-server": ("MLOPSCTL_AIRFLOW_PORT", "--airflow-port"),
        "mlflow": ("MLOPSCTL_MLFLOW_PORT", "--mlflow-port"),
        "spark": ("MLOPSCTL_SPARK_CONNECT_PORT", "--spark-port"),
    }
    s = Settings(_env_file=None, airflow_port=18080, mlflow_port=18081, spark_connect_port=18082)
    assert ports.wanted_ports(s) == {
        "api-server": 18080, "scheduler": None, "dag-processor": None, "triggerer": None,
        "mlflow": 18081, "spark": 18082, "launcher": None,
    }


def test_a_port_setting_without_a_settings_field_is_read_from_env_dotenv_and_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert EIGHTH_PORT.read(Settings(_env_file=None)) == 16379  # its default
    (tmp_path / ".env").write_text("MLOPSCTL_CACHE_PORT=16001\n")
    assert EIGHTH_PORT.read(Settings(_env_file=tmp_path / ".env")) == 16001
    monkeypatch.setenv("MLOPSCTL_CACHE_PORT", "16002")
    assert EIGHTH_PORT.read(Settings(_env_file=tmp_path / ".env")) == 16002  # env over .env
    assert EIGHTH_PORT.read(Settings(_env_file=tmp_path / ".env", cache_port=16003)) == 16003  # flag over env
    monkeypatch.setenv("MLOPSCTL_CACHE_PORT", "0")
    with pytest.raises(ValueError, match="cache_port"):
        Settings(_env_file=None)
    no_default = PortSetting("other_port", "--other-port", "other server")
    with pytest.raises(ConfigError, match="No port is set for the other server") as exc:
        no_default.read(Settings(_env_file=None, cache_port=1))
    assert "MLOPSCTL_OTHER_PORT" in (exc.value.hint or "")


def test_start_status_and_stop_iterate_the_list(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With the list emptied, none of them knows a component."""
    monkeypatch.setattr(components, "STACK", ())
    s = Settings(_env_file=None, project_dir=tmp_path)
    assert status.stack_status(s).components == []
    assert stop.stop_stack(s).stopped == []
    assert ports.wanted_ports(s) == {}
    result = start.start_stack(s, timeout=10)
    assert result.started == [] and result.urls == {} and result.already_running


# ------------------------------------------------------------------------------------------ an eighth component

LISTEN = (
    "import socket, sys, time\n"
    "sock = socket.socket(); sock.bind(('127.0.0.1', int(sys.argv[2]))); sock.listen()\n"
    "time.sleep(300)\n"
)


def _cache_command(settings: Settings, layout: StackLayout) -> ComponentSpec:
    """The eighth component's own module would hold this: its command, on the port its setting names."""
    port = EIGHTH_PORT.read(settings)
    env = dict(os.environ, **{STACK_MARKER: str(layout.state)})
    return ComponentSpec(EIGHTH, [sys.executable, "-c", LISTEN, "--port", str(port)], env, layout.state, port)


def _cache_health(ctx: health.ProbeContext, component: Component) -> str:
    port = ctx.ports[component.name]
    return "healthy" if port and health.tcp_accepts("127.0.0.1", port) else "unhealthy"


def _sleeper(name: str):
    def command(settings: Settings, layout: StackLayout) -> ComponentSpec:
        env = dict(os.environ, **{STACK_MARKER: str(layout.state)})
        return ComponentSpec(name, [sys.executable, "-c", "import time; time.sleep(300)"], env, layout.state)

    return command


@pytest.fixture
def eight(monkeypatch: pytest.MonkeyPatch) -> tuple[Component, ...]:
    """The seven components, run as sleepers that are healthy at once (no Airflow, MLflow or Spark here), and
    an eighth appended to the list: the only change."""
    seven = tuple(
        dataclasses.replace(c, command=_sleeper(c.name), probe=lambda ctx, c: "healthy", group=None,
                            before_start=None, after_start=None)
        for c in components.components()
    )
    eighth = Component(EIGHTH, 7, _cache_command, _cache_health, port=EIGHTH_PORT,
                       url=UrlLine("cache_url", "Cache", "redis://127.0.0.1:{port}"))
    monkeypatch.setattr(components, "STACK", (*seven, eighth))
    return components.components()


def test_an_eighth_component_takes_its_place_in_the_start_order(eight) -> None:
    assert [c.name for c in components.in_start_order()][-1] == EIGHTH
    assert components.names()[-1] == EIGHTH


def test_an_eighth_component_joins_the_port_checks(eight, tmp_path: Path) -> None:
    s = _settings(tmp_path)
    with pytest.raises(ConfigError, match="cannot share port") as exc:
        ports.check_distinct_ports(_settings(tmp_path, cache_port=s.mlflow_port, mlflow_port=s.mlflow_port))
    assert "MLOPSCTL_CACHE_PORT" in (exc.value.hint or "") and "MLOPSCTL_MLFLOW_PORT" in (exc.value.hint or "")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        with pytest.raises(StackError) as exc:
            start.start_stack(_settings(tmp_path, cache_port=taken), timeout=30)
    assert f"Port {taken}" in exc.value.message and EIGHTH in exc.value.message
    assert "MLOPSCTL_CACHE_PORT" in (exc.value.hint or "")
    assert not any(StackLayout(tmp_path / ".mlopsctl").pid_file(n).exists() for n in components.names())


def test_an_eighth_component_is_started_shown_and_stopped(
    eight, project: Path, monkeypatch: pytest.MonkeyPatch, cli, procs: list
) -> None:
    s = _settings(project)
    for c in components.with_ports():
        monkeypatch.setenv(c.port.env_var, str(c.port.read(s)))
    s = Settings(_env_file=None, project_dir=project)
    cache_port = EIGHTH_PORT.read(s)
    try:
        result = start.start_stack(s, timeout=120)
        assert result.started == [c.name for c in components.in_start_order()]
        assert result.urls["cache_url"] == f"redis://127.0.0.1:{cache_port}"
        assert result.as_dict()["cache_url"] == f"redis://127.0.0.1:{cache_port}"

        st = status.stack_status(s)
        cache = st.components[-1]
        assert (cache.name, cache.running, cache.health, cache.port) == (EIGHTH, True, "healthy", cache_port)
        assert st.all_running and st.all_healthy
        console = Console(width=200, no_color=True)
        with console.capture() as table:
            console.print(stack_table(st))
        assert re.search(rf"^\W*{EIGHTH}\W+\d+\W+{cache_port}\W+healthy", table.get(), re.MULTILINE), table.get()

        code, out, err = cli("dev", "status", "--json")
        assert code == 0, err
        data = json.loads(out)
        assert data["components"][-1]["component"] == EIGHTH and data["components"][-1]["port"] == cache_port
        assert data["cache_url"] == f"redis://127.0.0.1:{cache_port}"
        code, out, err = cli("dev", "status")
        assert code == 0 and f"Cache       redis://127.0.0.1:{cache_port}" in out, err
    finally:
        stopped = stop.stop_stack(s, grace=5)
    assert stopped.stopped == components.names()
    assert status.stack_status(s).running == []
    code, out, _err = cli("dev", "status", "--json")
    assert code == ExitCode.STACK and json.loads(out)["components"][-1]["health"] == "stopped"
