"""The local stack's servers beside Airflow: the MLflow tracking server, the Spark Connect server (with the
background helpers of its start: the class-data archive's writer and the warm-up job) and the job launcher.
Their commands, health probes and start hooks.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from mlopsctl.devenv.launcher import ping, start_preload
from mlopsctl.devenv.process import process_of, read_pid_file, spawn
from mlopsctl.devenv.stack import (
    ARCHIVE_WRITER,
    SPARK_WARMUP,
    ComponentSpec,
    archive_writer_spec,
    base_env,
    mlflow_env,
    spark_argv,
    spark_class_archive,
    spark_env,
    spark_warmup_spec,
    tool,
)

if TYPE_CHECKING:
    from mlopsctl.devenv import health as hc
    from mlopsctl.devenv.layout import StackLayout
    from mlopsctl.devenv.spec import Component
    from mlopsctl.settings import Settings

SPARK = "spark"


# --------------------------------------------------------------------------------------------- MLflow


def mlflow_command(settings: Settings, layout: StackLayout) -> ComponentSpec:
    argv = [
        *tool("mlflow"), "server", "--backend-store-uri", f"sqlite:///{layout.mlflow_db}",
        "--artifacts-destination", str(layout.mlflow_artifacts), "--host", "127.0.0.1",
        "--port", str(settings.mlflow_port), "--workers", "1",
    ]
    return ComponentSpec("mlflow", argv, mlflow_env(settings, layout), layout.mlflow_dir, settings.mlflow_port)


def mlflow_health(ctx: hc.ProbeContext, component: Component) -> str:
    from mlopsctl.devenv import health as hc

    return "healthy" if hc.mlflow_healthy(ctx.urls["mlflow_url"]) else "unhealthy"


# --------------------------------------------------------------------------------------------- Spark


def spark_command(settings: Settings, layout: StackLayout) -> ComponentSpec:
    """The Spark Connect server, mapping its class-data archive when there is one."""
    archive = spark_class_archive(settings, layout)
    argv = spark_argv(settings, layout, archive.map_options() if archive else ())
    return ComponentSpec(SPARK, argv, spark_env(settings, layout), layout.spark_dir, settings.spark_connect_port)


def spark_health(ctx: hc.ProbeContext, component: Component) -> str:
    port = ctx.ports.get(component.name)
    return "healthy" if port is not None and spark_serving(port) else "unhealthy"


def spark_serving(port: int) -> bool:
    """The local Spark Connect server answers gRPC on 127.0.0.1:port."""
    from mlopsctl.devenv import health as hc

    return hc.grpc_serving("127.0.0.1", port)


def helper_running(layout: StackLayout, helper: str) -> bool:
    """A background helper of the start (one of ``stack.HELPERS``) is still at work."""
    return process_of(read_pid_file(layout.pid_file(helper))) is not None


def spark_before_start(settings: Settings, layout: StackLayout) -> None:
    """Before the server's command is built (which maps the archive if there is one): drop an unusable
    archive, unless its writer is still at work."""
    archive = spark_class_archive(settings, layout)
    if archive is not None and not helper_running(layout, ARCHIVE_WRITER):
        archive.prepare()


def spark_after_start(settings: Settings, layout: StackLayout, started: bool) -> None:
    """Once the stack is healthy: write the server's class-data archive for the next start, when there is
    none (`mlopsctl.devenv.classarchive`), and warm a freshly started server up (`mlopsctl.devenv.sparkwarmup`)."""
    archive = spark_class_archive(settings, layout)
    if archive is not None and not archive.path.is_file() and not helper_running(layout, ARCHIVE_WRITER):
        spawn(archive_writer_spec(settings, layout, archive), layout.log_file(ARCHIVE_WRITER),
              layout.pid_file(ARCHIVE_WRITER))
    if started:
        spawn(spark_warmup_spec(settings, layout), layout.log_file(SPARK_WARMUP), layout.pid_file(SPARK_WARMUP))


# --------------------------------------------------------------------------------------------- launcher


def launcher_command(settings: Settings, layout: StackLayout) -> ComponentSpec:
    return ComponentSpec(
        "launcher",
        [sys.executable, "-m", "mlopsctl.devenv.launcher", "--socket", str(layout.launcher_socket)],
        base_env(settings, layout),  # each job gets the environment its task asks for, not this one
        layout.state,
    )


def launcher_health(ctx: hc.ProbeContext, component: Component) -> str:
    return "healthy" if ping(ctx.layout.launcher_socket) is not None else "unhealthy"


def launcher_after_start(settings: Settings, layout: StackLayout, started: bool) -> None:
    """The launcher's imports wait until the stack is healthy, so that they do not slow the start of the rest;
    if this request is lost, the launcher starts them on its own, or for its first job."""
    start_preload(layout.launcher_socket)
