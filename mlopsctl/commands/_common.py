"""Shared option types and glue for command modules: the context, the run options, and printing a run."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mlopsctl.appcontext import AppContext
from mlopsctl.errors import InputError

if TYPE_CHECKING:
    from mlopsctl.console import Console
    from mlopsctl.pipelines import Pipeline
    from mlopsctl.runs import RunResult

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout instead of tables.")]

# --- options of the run-shaped commands (run build-model, grid-search) ---------------------------------
DataOpt = Annotated[
    str | None,
    typer.Option("--data", help="CSV/Parquet file or directory on this machine (local compute only), a URI Spark reads "
                 "(s3://, abfss://, gs://, dbfs:/), a /Volumes/... path, or a table (catalog.schema.table). "
                 "Default: scikit-learn's diabetes data."),
]
TargetOpt = Annotated[str, typer.Option("--target", help="Target column in --data.")]
TestSizeOpt = Annotated[float, typer.Option("--test-size", help="Held-out fraction, strictly between 0 and 1.")]
RandomStateOpt = Annotated[int, typer.Option("--random-state", help="Random seed (0..4294967295).")]
NaValuesOpt = Annotated[
    str | None,
    typer.Option("--na-values", help="Comma-separated tokens read as missing in a CSV --data, replacing the default "
                 "list (pandas' defaults: NA, N/A, NaN, nan, null, NULL, None, #N/A, <NA>, ...). Empty fields are "
                 "always missing."),
]
RegisterOpt = Annotated[
    str | None,
    typer.Option("--register", help="Register the model under this name [default: mlopsctl-random-forest].",
                 show_default=False),
]
NoRegisterOpt = Annotated[bool, typer.Option("--no-register", help="Do not register the model.")]
NoWaitOpt = Annotated[bool, typer.Option("--no-wait", help="Print the run id and return at once.")]
TimeoutOpt = Annotated[
    float | None,
    typer.Option("--timeout", help="Stop waiting after S seconds (exit 9; the run keeps going).", metavar="S"),
]
AutoUnpauseOpt = Annotated[
    bool,
    typer.Option("--auto-unpause/--no-auto-unpause", help="Unpause the DAG if it is paused (a paused DAG only queues)."),
]


def escape(text: str) -> str:
    """rich's markup escape, imported on use (rich is not loaded at CLI start)."""
    from rich.markup import escape as _escape

    return _escape(text)


def app_context(ctx: typer.Context, json_output: bool = False) -> AppContext:
    """The AppContext built by the root callback (switching it to --json mode if asked)."""
    obj = ctx.find_root().obj
    if not isinstance(obj, AppContext):  # invoked outside the root app (tests of a sub-app)
        obj = AppContext()
        ctx.find_root().obj = obj
    obj.set_json(json_output)
    return obj


def check_timeout(timeout: float | None) -> float | None:
    if timeout is not None and not timeout > 0:
        raise InputError(f"--timeout must be a positive number of seconds, got {timeout:g}.")
    return timeout


def launch(
    actx: AppContext,
    pipeline: Pipeline,
    conf: dict[str, Any],
    *,
    wait: bool = True,
    timeout: float | None = None,
    auto_unpause: bool = True,
) -> None:
    """Trigger (after the service's preflight), then follow and print the result, or print the run id at once."""
    from mlopsctl.console import RunProgress

    console = actx.console
    progress = RunProgress(console, pipeline.dag_id)
    service = actx.runs(progress)
    t0 = time.monotonic()
    triggered = service.trigger(pipeline, conf, auto_unpause=auto_unpause)
    if not wait:
        if console.json_mode:
            console.json(triggered.model_dump())
        else:
            console.print(triggered.dag_run_id)
            if not console.quiet:
                console.err.print(
                    f"Triggered {pipeline.dag_id} ({triggered.state}). Follow it with: "
                    f"mlopsctl status {escape(triggered.dag_run_id)} --wait",
                    soft_wrap=True,
                )
        return
    if not console.quiet:  # stderr, also in --json mode; soft_wrap keeps the URL on one line
        console.err.print(f"Triggered {pipeline.dag_id} run [bold]{escape(triggered.dag_run_id)}[/bold]\n"
                          f"  {escape(triggered.links['airflow'])}", soft_wrap=True)
    follow_and_print(actx, pipeline, triggered.dag_run_id, timeout=timeout, started=t0, progress=progress)


def follow_and_print(
    actx: AppContext,
    pipeline: Pipeline,
    dag_run_id: str,
    *,
    timeout: float | None = None,
    started: float | None = None,
    progress: Any = None,
) -> None:
    """Follow a run to its end with live progress, print the result, exit RUN_FAILED if it failed."""
    from mlopsctl.console import RunProgress

    progress = progress or RunProgress(actx.console)
    progress.dag_id, progress.dag_run_id = pipeline.dag_id, dag_run_id
    service = actx.runs(progress)
    with progress:
        result = service.follow(pipeline, dag_run_id, timeout=timeout, on_update=progress,
                                tasks_each_poll=progress.tasks_each_poll, started=started)
    print_result(actx.console, result)
    failure = result.failure()
    if failure is not None:
        raise failure


def print_result(console: Console, result: RunResult) -> None:
    """One JSON document, or the summary, links, tasks (unless it succeeded), grid and failure tail."""
    for w in result.warnings:
        console.warn(w)
    doc = result.to_json()
    if console.json_mode:
        console.json(doc)
        return
    from mlopsctl.render import heatmap, leaderboard, link_lines, run_summary, tasks_table

    console.print(run_summary(doc))
    for line in link_lines(doc):
        console.print(line, soft_wrap=True, markup=False)
    if result.state != "success":
        console.print(tasks_table(doc["tasks"]))
    points = (result.mlflow or {}).get("points")
    if points:
        console.print(leaderboard(points))
        console.print(heatmap(points))
    if result.failed_task:
        tail = result.log_tail or []
        console.print(f"[bold red]Task {escape(result.failed_task)} failed[/bold red]; last {len(tail)} log lines:")
        for line in tail:
            console.print(escape(line), soft_wrap=True)
