"""`mlopsctl logs RUN_ID`: task logs over the Airflow REST API (continuation tokens; -f follows)."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from mlopsctl.commands._common import app_context
from mlopsctl.commands.status import PipelineOpt, scope
from mlopsctl.errors import InputError, NotFoundError

FOLLOW_INTERVAL = 2.0
_ACTIVE = {None, "scheduled", "queued", "running", "up_for_retry", "up_for_reschedule", "deferred", "restarting"}


def logs(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="The dag_run_id (see `mlopsctl status`).")],
    task: Annotated[str | None, typer.Option("--task", "-t", help="Only this task (default: every task).")] = None,
    try_number: Annotated[
        int | None, typer.Option("--try", help="Attempt number (default: the latest).", show_default=False)
    ] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines while the task runs.")] = False,
    pipeline: PipelineOpt = None,
) -> None:
    """Print task logs of a run from the Airflow REST API.

    Example: mlopsctl logs mlopsctl__20261124T030405Z__a1b2c3 --task train_model

    Follow a running task: mlopsctl logs RUN_ID -t train_model -f
    """
    from rich.markup import escape

    from mlopsctl.runs import task_order

    if try_number is not None and try_number < 1:
        raise InputError(f"--try must be >= 1, got {try_number}.")
    actx = app_context(ctx)
    console = actx.console
    p, run = actx.runs().locate(run_id, scope(pipeline))
    client = actx.airflow
    tasks = task_order(client.task_instances(p.dag_id, run.dag_run_id))
    if task is not None:
        chosen = [t for t in tasks if t.task_id == task]
        if not chosen:
            names = ", ".join(dict.fromkeys(t.task_id for t in tasks)) or "none yet"
            raise NotFoundError(f"Run {run_id} of {p.dag_id} has no task {task!r}.", hint=f"Tasks: {names}")
    else:
        chosen = tasks
    for t in chosen:
        label = t.task_id if t.map_index < 0 else f"{t.task_id}[{t.map_index}]"
        if follow:
            t = _wait_start(client, p.dag_id, run.dag_run_id, t)
        tries = try_number or t.try_number
        if not tries:
            console.info(f"[dim]── {escape(label)}: not started ({t.state or 'none'}) ──[/dim]")
            continue
        if try_number is not None and try_number > t.try_number:
            raise NotFoundError(f"Task {label} has no try {try_number} (latest is {t.try_number}).")
        console.info(f"[bold]── {escape(label)} · try {tries} · {t.state or 'none'} ──[/bold]")
        printed = 0
        while True:
            lines = client.read_log(p.dag_id, run.dag_run_id, t.task_id, tries, map_index=t.map_index)
            for line in lines[printed:]:
                console.print(escape(line), soft_wrap=True)
            printed = max(printed, len(lines))
            if not follow or t.state not in _ACTIVE:
                break
            time.sleep(FOLLOW_INTERVAL)
            t = _refresh(client, p.dag_id, run.dag_run_id, t)


def _refresh(client: Any, dag_id: str, run_id: str, t: Any) -> Any:
    for x in client.task_instances(dag_id, run_id):
        if x.task_id == t.task_id and x.map_index == t.map_index:
            return x
    return t


def _wait_start(client: Any, dag_id: str, run_id: str, t: Any) -> Any:
    """With -f: wait until the task has a try to read (or ends without one)."""
    while not t.try_number and t.state in _ACTIVE - {"running"}:
        time.sleep(FOLLOW_INTERVAL)
        run = client.get_run(dag_id, run_id)
        t = _refresh(client, dag_id, run_id, t)
        if run.finished:
            break
    return t
