"""The local stack's components, each declared once.

A `Component` carries everything the rest of devenv and `mlopsctl dev` need to know about it: its name, its
place in the start order, the setting of its port, its health probe, the URL line `dev start`/`dev status`
print, and how it starts (its command, and whether it is forked from a group's process instead of spawned on
its own). `STACK` lists them in the order `dev status` shows them. Start, status, stop, the port checks, the
`dev` port options, the test fixture and the benchmarks iterate it; nothing branches on a component's name.
Adding a component means one entry here and the module that builds its command and probe.
"""

from __future__ import annotations

from mlopsctl.devenv import airflowstack as airflow
from mlopsctl.devenv import servers
from mlopsctl.devenv.spec import Component, PortSetting, UrlLine

_LOGIN = "(log in as [bold]{username}[/bold]; the password is in {passwords_file}, or run `mlopsctl dev status --show-password`)"

#: every component, in the order `dev status` lists them
STACK: tuple[Component, ...] = (
    Component(
        airflow.API_SERVER, 3, airflow.api_server_command, airflow.api_server_health,
        port=PortSetting("airflow_port", "--airflow-port", "Airflow api-server"),
        url=UrlLine("airflow_url", "Airflow UI", "http://127.0.0.1:{port}", _LOGIN),
        group=airflow.GROUP,
    ),
    Component("scheduler", 4, airflow.scheduler_command, airflow.heartbeat_health("scheduler"), group=airflow.GROUP),
    Component(
        "dag-processor", 5, airflow.dag_processor_command, airflow.heartbeat_health("dag_processor"),
        group=airflow.GROUP,
    ),
    Component("triggerer", 6, airflow.triggerer_command, airflow.heartbeat_health("triggerer"), group=airflow.GROUP),
    Component(
        "mlflow", 2, servers.mlflow_command, servers.mlflow_health,
        port=PortSetting("mlflow_port", "--mlflow-port", "MLflow server"),
        url=UrlLine("mlflow_url", "MLflow UI", "http://127.0.0.1:{port}"),
    ),
    # the Spark server's JVM starts slowest and needs nothing else, so it goes first
    Component(
        servers.SPARK, 0, servers.spark_command, servers.spark_health,
        port=PortSetting("spark_connect_port", "--spark-port", "Spark Connect server"),
        url=UrlLine("spark_url", "Spark", "sc://127.0.0.1:{port}", "(Spark Connect)"),
        before_start=servers.spark_before_start, after_start=servers.spark_after_start,
    ),
    # a Unix socket in the state dir, no port
    Component("launcher", 1, servers.launcher_command, servers.launcher_health, after_start=servers.launcher_after_start),
)


def components() -> tuple[Component, ...]:
    """The stack's components, in the order `dev status` lists them."""
    return STACK


def names() -> list[str]:
    return [c.name for c in components()]


def in_start_order() -> list[Component]:
    return sorted(components(), key=lambda c: c.order)


def with_ports() -> list[Component]:
    return [c for c in components() if c.port is not None]


def named(name: str) -> Component:
    for component in components():
        if component.name == name:
            return component
    raise KeyError(name)


def urls(ports: dict[str, int | None]) -> dict[str, str]:
    """URL key -> URL of each component with a URL line, on the ports given by component name."""
    return {c.url.key: c.url.url(ports.get(c.name)) for c in components() if c.url is not None}
