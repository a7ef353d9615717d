"""The run preflight's question, "can the Spark Connect server take this run's jobs": asked before a run is
triggered, so that a run on the embedded stack is not queued behind a Spark server that is down.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from mlopsctl.devenv import health as hc
from mlopsctl.devenv.airflowstack import API_SERVER
from mlopsctl.devenv.layout import StackLayout
from mlopsctl.devenv.ports import recorded_port
from mlopsctl.devenv.process import process_of, read_pid_file
from mlopsctl.devenv.servers import SPARK, spark_serving
from mlopsctl.settings import CONNECT_DEFAULT_PORT

if TYPE_CHECKING:
    from mlopsctl.settings import Settings


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
        return f"The Spark Connect server at {settings.spark_remote} (MLOPSCTL_SPARK_REMOTE) does not answer."
    layout = StackLayout.from_settings(settings)
    log = layout.log_file(SPARK)
    record = read_pid_file(layout.pid_file(SPARK))
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


def runs_spark_down(settings: Settings) -> str | None:
    """The run preflight's one question. None when runs on ``settings`` do not go to this project's embedded
    stack (its api-server recorded in the state dir, serving the Airflow URL, with local compute), or when
    the Spark Connect server its tasks use serves; otherwise why it cannot take their jobs."""
    if settings.airflow_url != settings.local_airflow_url or settings.compute != "local":
        return None
    if importlib.util.find_spec("psutil") is None:  # no `local` extra: no embedded stack here
        return None
    if read_pid_file(StackLayout.from_settings(settings).pid_file(API_SERVER)) is None:
        return None
    return spark_server_down(settings)
