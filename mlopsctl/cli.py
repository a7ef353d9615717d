"""Root Typer app: global options, sub-command registration, and main() mapping errors to exit codes.

Heavy libraries (airflow, mlflow, pyspark, databricks-sdk) are imported only inside the commands that
need them, so `mlopsctl --help` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from mlopsctl import __version__
from mlopsctl.appcontext import AppContext, Environment
from mlopsctl.commands import (
    check,
    connect,
    context_cmd,
    dags,
    deploy,
    dev,
    grid_search,
    init,
    logs,
    models,
    promote,
    run,
    score,
    status,
)
from mlopsctl.errors import ExitCode, MlopsctlError

app = typer.Typer(
    name="mlopsctl",
    help="Run batch ML pipelines on Airflow 3, with Spark/Databricks doing the work and MLflow keeping score.",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mlopsctl {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    project_dir: Annotated[
        Path | None,
        typer.Option(
            "--project-dir", "-C", help="Project root. [env: MLOPSCTL_PROJECT_DIR]", show_default=False
        ),
    ] = None,
    context: Annotated[
        str | None,
        typer.Option(
            "--context",
            help="Named Airflow/MLflow target (see `mlopsctl context`). [env: MLOPSCTL_CONTEXT]",
        ),
    ] = None,
    airflow_url: Annotated[
        str | None, typer.Option("--airflow-url", help="Airflow base URL. [env: MLOPSCTL_AIRFLOW_URL]")
    ] = None,
    mlflow_uri: Annotated[
        str | None,
        typer.Option("--mlflow-uri", help="MLflow tracking URI. [env: MLOPSCTL_MLFLOW_TRACKING_URI]"),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only print results and errors.")] = False,
    version: Annotated[
        bool | None,
        typer.Option("--version", "-V", callback=_version, is_eager=True, help="Show the version and exit."),
    ] = None,
) -> None:
    """mlopsctl: trigger, follow and score ML pipelines on Airflow + Spark/Databricks + MLflow."""
    overrides = {
        "project_dir": project_dir,
        "context": context,
        "airflow_url": airflow_url,
        "mlflow_tracking_uri": mlflow_uri,
    }
    # main() hands its Environment in as the context object; the AppContext takes its place
    environment = ctx.obj if isinstance(ctx.obj, Environment) else Environment()
    ctx.obj = AppContext(overrides=overrides, quiet=quiet, environment=environment)


app.command("init")(init.init)
app.add_typer(dev.app, name="dev")
app.add_typer(connect.app, name="connect")
app.add_typer(run.app, name="run")
app.command("grid-search")(grid_search.grid_search)
app.add_typer(models.app, name="models")
app.command("promote")(promote.promote)
app.command("score")(score.score)
app.command("status")(status.status)
app.command("logs")(logs.logs)
app.command("dags")(dags.dags)
app.command("pipelines", help="Alias of `dags`.", hidden=True)(dags.dags)
app.command("check")(check.check)
app.add_typer(context_cmd.app, name="context")
app.add_typer(deploy.app, name="deploy")


def _debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv or bool(__import__("os").environ.get("MLOPSCTL_DEBUG"))


def main(argv: list[str] | None = None, environment: Environment | None = None) -> None:
    """Console-script entry point: run the app, turn errors into one message and an exit code. `environment`:
    what the invocation runs against (settings to start from, console, Airflow transport, MLflow reader); the
    real ones by default."""
    args = list(sys.argv[1:] if argv is None else argv)
    environment = Environment() if environment is None else environment
    debug = _debug_requested(args)
    try:
        # standalone_mode=False: `raise typer.Exit(n)` in a command makes app() *return* n.
        result = app(args=args, prog_name="mlopsctl", standalone_mode=False, obj=environment)
    except MlopsctlError as exc:
        if debug:
            raise
        console = environment.console(json_mode=False, quiet=False)
        if exc.exit_code == ExitCode.INTERRUPTED:  # Ctrl-C while waiting: a notice, the run keeps going
            console.interrupted(exc.message, exc.hint)
        else:
            console.error(exc.message, exc.hint)
        sys.exit(int(exc.exit_code))
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.stderr.write("Aborted.\n")
        sys.exit(int(ExitCode.INTERRUPTED))
    except typer.TyperException as exc:  # typer >= 0.29 vendors click: usage errors (exit 2) land here
        if hasattr(exc, "show"):
            exc.show()
        sys.exit(getattr(exc, "exit_code", int(ExitCode.USAGE)))
    except KeyboardInterrupt:
        sys.stderr.write("Interrupted.\n")
        sys.exit(int(ExitCode.INTERRUPTED))
    except Exception as exc:
        if debug:
            raise
        environment.console(json_mode=False, quiet=False).error(
            f"Unexpected error: {type(exc).__name__}: {exc}",
            "This is a bug in mlopsctl. Re-run with --debug for the traceback and report it.",
        )
        sys.exit(int(ExitCode.ERROR))
    sys.exit(result if isinstance(result, int) else 0)
