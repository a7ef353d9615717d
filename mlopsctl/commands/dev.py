"""`mlopsctl dev start|stop|status|logs`: the embedded local stack (Airflow 3, MLflow and a Spark Connect
server on 127.0.0.1)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from mlopsctl.appcontext import AppContext
from mlopsctl.commands._common import JsonOpt, app_context
from mlopsctl.devenv.process import STOP_GRACE
from mlopsctl.devenv.stack import COMPONENTS, HELPERS, PORT_ENV_VARS
from mlopsctl.errors import InputError
from mlopsctl.extras import require_local_extra

app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="The embedded local stack: real Airflow 3 (api-server, scheduler, dag-processor, triggerer), an "
    "MLflow server and a Spark Connect server (spark) on 127.0.0.1, state under <project>/.mlopsctl. "
    "No Docker.",
)


def _port_option(flag: str, what: str, component: str) -> Any:
    """The `--<x>-port` option of one stack component; its env var is the one the settings read."""
    return Annotated[
        int | None,
        typer.Option(
            flag, min=1, max=65535, help=f"{what} port. [env: {PORT_ENV_VARS[component]}]", show_default=False
        ),
    ]


AirflowPortOpt = _port_option("--airflow-port", "Airflow api-server", "api-server")
MlflowPortOpt = _port_option("--mlflow-port", "MLflow server", "mlflow")
SparkPortOpt = _port_option("--spark-port", "Spark Connect server", "spark")


def _with_ports(
    actx: AppContext, airflow_port: int | None, mlflow_port: int | None, spark_port: int | None
) -> None:
    given = {"airflow_port": airflow_port, "mlflow_port": mlflow_port, "spark_connect_port": spark_port}
    given = {key: value for key, value in given.items() if value is not None}
    if given:
        actx.overrides.update(given)
        actx.__dict__.pop("settings", None)


@app.command()
def start(
    ctx: typer.Context,
    airflow_port: AirflowPortOpt = None,
    mlflow_port: MlflowPortOpt = None,
    spark_port: SparkPortOpt = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            min=1,
            help="Seconds to wait for health. [env: MLOPSCTL_START_TIMEOUT]",
            show_default=False,
        ),
    ] = None,
    json_output: JsonOpt = False,
) -> None:
    """Start the local stack and wait until every component is healthy and the DAGs are parsed.

    Idempotent: an already running stack is left alone; a crashed component is started again.

    Example: mlopsctl dev start   (then open http://127.0.0.1:8080, user admin)
    """
    require_local_extra("dev start")
    from mlopsctl.console import StackProgress
    from mlopsctl.devenv.health import last_line
    from mlopsctl.devenv.manager import start_stack

    actx = app_context(ctx, json_output)
    _with_ports(actx, airflow_port, mlflow_port, spark_port)
    settings = actx.settings
    with StackProgress(actx.console) as progress:
        result = start_stack(settings, on_progress=progress, timeout=timeout)
    console = actx.console
    if json_output:
        console.json(result.as_dict())
        return
    if result.already_running:
        console.success("The local stack is already running and healthy.")
    else:
        console.success(f"Local stack started in {result.seconds:.1f} s ({', '.join(result.started)}).")
    for name, trace in result.import_errors.items():
        console.warn(f"DAG file {name} failed to import: {last_line(trace)}")
    if result.import_errors:
        console.info("  See the full traces with `mlopsctl check` or in the Airflow UI.")
    console.print(
        f"Airflow UI  {result.airflow_url}   (log in as [bold]{result.username}[/bold]; the password is in "
        f"{result.passwords_file}, or run `mlopsctl dev status --show-password`)",
        soft_wrap=True,
    )
    console.print(f"MLflow UI   {result.mlflow_url}", soft_wrap=True)
    console.print(f"Spark       {result.spark_url}   (Spark Connect)", soft_wrap=True)
    n_dags = sum(len(v) for v in result.dags.values())
    console.print(f"DAGs        {n_dags} from {result.dags_folder}", soft_wrap=True)
    console.info(
        "Stop it with `mlopsctl dev stop`; follow a component's log with `mlopsctl dev logs scheduler -f`."
    )


@app.command()
def stop(
    ctx: typer.Context,
    grace: Annotated[
        float, typer.Option("--grace", min=0, help="Seconds to wait after SIGTERM before SIGKILL.")
    ] = STOP_GRACE,
    json_output: JsonOpt = False,
) -> None:
    """Stop every process of the local stack (SIGTERM, then SIGKILL after --grace), leaving no orphans.

    Safe after a crash: stale PID files are cleaned up and never used to kill an unrelated process.

    Example: mlopsctl dev stop
    """
    require_local_extra("dev stop")
    from mlopsctl.console import StackProgress
    from mlopsctl.devenv.manager import stop_stack

    actx = app_context(ctx, json_output)
    with StackProgress(actx.console) as progress:
        result = stop_stack(actx.settings, grace=grace, on_progress=progress)
    if json_output:
        actx.console.json(result.as_dict())
        return
    if result.stopped:
        actx.console.success(f"Stopped {', '.join(result.stopped)} in {result.seconds:.1f} s.")
    else:
        actx.console.success("The local stack was not running.")
    if result.stale:
        actx.console.info(f"Removed stale PID files: {', '.join(result.stale)}.")


@app.command()
def status(
    ctx: typer.Context,
    airflow_port: AirflowPortOpt = None,
    mlflow_port: MlflowPortOpt = None,
    spark_port: SparkPortOpt = None,
    show_password: Annotated[
        bool, typer.Option("--show-password", help="Also print the local admin password.")
    ] = False,
    json_output: JsonOpt = False,
) -> None:
    """Show each component of the local stack: PID, port, health, memory (RSS and PSS incl. child processes).

    Exit code 0 when every component is running and healthy, 11 (STACK) otherwise.

    Example: mlopsctl dev status --json
    """
    require_local_extra("dev status")
    from mlopsctl.devenv.manager import read_password, stack_status
    from mlopsctl.errors import ExitCode

    actx = app_context(ctx, json_output)
    _with_ports(actx, airflow_port, mlflow_port, spark_port)
    st = stack_status(actx.settings)
    password = read_password(actx.settings) if show_password else None
    if json_output:
        data = st.as_dict()
        if show_password:
            data["password"] = password
        actx.console.json(data)
    else:
        from mlopsctl.render import stack_table

        actx.console.print(stack_table(st))
        if st.running:
            actx.console.print(
                f"Airflow UI  {st.airflow_url}   (user admin, password in {st.passwords_file})",
                soft_wrap=True,
            )
            actx.console.print(f"MLflow UI   {st.mlflow_url}", soft_wrap=True)
            actx.console.print(f"Spark       {st.spark_url}   (Spark Connect)", soft_wrap=True)
        if show_password:
            actx.console.print(f"Password    {password or '(none yet: run `mlopsctl dev start`)'}")
        if not st.running:
            actx.console.info("Not running. Start it with `mlopsctl dev start`.")
    if not (st.all_running and st.all_healthy):
        raise typer.Exit(int(ExitCode.STACK))


@app.command()
def logs(
    ctx: typer.Context,
    component: Annotated[
        str | None,
        typer.Argument(
            help=f"One of: {', '.join(COMPONENTS)}, db-migrate, or a background helper of the start "
            f"({', '.join(HELPERS)}). Default: all components.",
            show_default=False,
        ),
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines (Ctrl-C to stop).")
    ] = False,
    lines: Annotated[
        int, typer.Option("--lines", "-n", min=0, help="How many last lines to print first.")
    ] = 50,
) -> None:
    """Print the last lines of a component's log (stdout+stderr), optionally following it.

    Example: mlopsctl dev logs scheduler -f -n 100
    """
    require_local_extra("dev logs")
    import sys

    from mlopsctl.devenv.manager import log_file
    from mlopsctl.devenv.process import file_sizes, follow_lines, tail

    actx = app_context(ctx)
    valid = (*COMPONENTS, "db-migrate", *HELPERS)
    if component is not None and component not in valid:
        raise InputError(f"Unknown component {component!r}.", hint=f"Use one of: {', '.join(valid)}.")
    names = [component] if component else list(COMPONENTS)
    paths = {name: log_file(actx.settings, name) for name in names}
    if component and not paths[component].exists() and not follow:
        raise InputError(
            f"No log for {component} yet ({paths[component]}).",
            hint="Start the stack with `mlopsctl dev start`.",
        )
    prefix = component is None
    positions = file_sizes(paths)  # -f continues exactly where the tail below ends: no line lost or repeated
    for name, path in paths.items():
        if not path.exists() or lines == 0:
            continue
        text = tail(path, lines, end=positions[name])
        for line in text.splitlines():
            sys.stdout.write(f"{name} | {line}\n" if prefix else line + "\n")
    sys.stdout.flush()
    if follow:
        try:
            for name, line in follow_lines(paths, positions):
                sys.stdout.write(f"{name} | {line}\n" if prefix else line + "\n")
                sys.stdout.flush()
        except KeyboardInterrupt:
            raise typer.Exit(0) from None
