"""`mlopsctl status [RUN_ID]`: recent runs across the pipelines, or one run (reattach with --wait)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from mlopsctl.appcontext import AppContext
from mlopsctl.commands._common import JsonOpt, app_context, check_timeout
from mlopsctl.errors import InputError
from mlopsctl.pipelines import PIPELINE_NAMES, complete_pipeline

PipelineOpt = Annotated[
    str | None,
    typer.Option(
        "--pipeline",
        "-p",
        help=f"Only this pipeline: {', '.join(PIPELINE_NAMES[:-1])} or {PIPELINE_NAMES[-1]}.",
        autocompletion=complete_pipeline,
        show_default=False,
    ),
]


def scope(pipeline: str | None) -> list[Any]:
    from mlopsctl.pipelines import PIPELINES, get_pipeline

    return [get_pipeline(pipeline)] if pipeline else list(PIPELINES.values())


def status(
    ctx: typer.Context,
    run_id: Annotated[str | None, typer.Argument(help="A dag_run_id (omit to list recent runs).", show_default=False)] = None,
    pipeline: PipelineOpt = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many recent runs to list (1..500).")] = 10,
    wait: Annotated[bool, typer.Option("--wait", help="With RUN_ID: reattach and follow the run to its end.")] = False,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="With --wait: stop waiting after S seconds.", metavar="S")
    ] = None,
    json_output: JsonOpt = False,
) -> None:
    """Show recent runs of the pipelines, or one run's tasks, conf and MLflow metrics.

    Example: mlopsctl status   ·   mlopsctl status -p grid-search -n 5

    Reattach: mlopsctl status mlopsctl__20261124T030405Z__a1b2c3 --wait
    """
    if not 1 <= limit <= 500:
        raise InputError(f"--limit must be between 1 and 500, got {limit}.")
    check_timeout(timeout)
    if run_id is None and wait:
        raise InputError("--wait needs a RUN_ID.", hint="mlopsctl status RUN_ID --wait")
    targets = scope(pipeline)  # validates --pipeline before any request
    actx = app_context(ctx, json_output)
    if run_id is None:
        _list(actx, targets, limit)
    else:
        _one(actx, run_id, pipeline, wait=wait, timeout=timeout)


def _list(actx: AppContext, targets: list[Any], limit: int) -> None:
    from mlopsctl.console import RunProgress
    from mlopsctl.render import runs_table

    console = actx.console
    recent = actx.runs(RunProgress(console)).recent(targets, limit)
    for w in recent.warnings:
        console.warn(w)
    if console.json_mode:
        console.json(recent.model_dump())
    else:
        console.print(runs_table([r.model_dump() for r in recent.runs]))


def _one(actx: AppContext, run_id: str, pipeline: str | None, *, wait: bool, timeout: float | None) -> None:
    from mlopsctl.commands._common import follow, print_result
    from mlopsctl.console import RunProgress

    console = actx.console
    service = actx.runs(RunProgress(console))
    p, run = service.locate(run_id, scope(pipeline))
    if wait:
        print_result(console, follow(actx, p, run.dag_run_id, timeout=timeout))
        return
    result = service.describe(p, run)
    if not console.json_mode and run.conf:
        from mlopsctl.render import kv_table

        console.print(kv_table("Conf", run.conf))
    print_result(console, result)
    if not console.json_mode:
        from mlopsctl.render import tasks_table

        if run.state == "success":
            console.print(tasks_table(result.to_json()["tasks"]))
        if not run.finished:
            console.info(f"Still {run.state}. Follow it with: mlopsctl status {run.dag_run_id} --wait")
