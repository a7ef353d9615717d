"""`mlopsctl status [RUN_ID]`: recent runs across the pipelines, or one run (reattach with --wait)."""

from __future__ import annotations

from datetime import UTC
from typing import Annotated, Any

import typer

from mlopsctl.commands._common import JsonOpt, app_context
from mlopsctl.context import AppContext
from mlopsctl.errors import InputError, MlopsctlError, NotFoundError
from mlopsctl.pipelines import complete_pipeline

PipelineOpt = Annotated[
    str | None,
    typer.Option(
        "--pipeline",
        "-p",
        help="Only this pipeline: build-model, grid-search or grid-search-spark.",
        autocompletion=complete_pipeline,
        show_default=False,
    ),
]


def scope(pipeline: str | None) -> list[Any]:
    from mlopsctl.pipelines import PIPELINES, get_pipeline

    return [get_pipeline(pipeline)] if pipeline else list(PIPELINES.values())


def locate_run(actx: AppContext, dag_run_id: str, pipeline: str | None = None) -> tuple[Any, Any]:
    """(pipeline, DagRun) of a run id, trying each pipeline's DAG in turn."""
    candidates = scope(pipeline)
    for p in candidates:
        try:
            return p, actx.airflow.get_run(p.dag_id, dag_run_id)
        except NotFoundError:
            continue
    where = ", ".join(p.dag_id for p in candidates)
    raise NotFoundError(f"No run {dag_run_id!r} in {where}.", hint="List recent runs with: mlopsctl status")


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
    from mlopsctl.commands.run import check_timeout

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
    from datetime import datetime

    from mlopsctl.commands.run import tracking_for
    from mlopsctl.render import run_duration, runs_table

    console = actx.console
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    warnings: list[str] = []
    per_pipeline: dict[str, list[Any]] = {}
    for p in targets:
        try:
            per_pipeline[p.name] = actx.airflow.list_runs(p.dag_id, limit=limit)
        except NotFoundError:
            warnings.append(f"DAG {p.dag_id} is not loaded in Airflow (see `mlopsctl dags`).")
    tracking = tracking_for(actx)
    try:
        for p in targets:
            runs = per_pipeline.get(p.name) or []
            if not runs:
                continue
            key: dict[str, Any] = {}
            try:  # ONE MLflow search per pipeline, not per run
                key = tracking.key_runs(p.dag_id, p.mlflow_role, max_results=max(100, limit * 5))
            except MlopsctlError as exc:
                if not any(w.startswith("MLflow") for w in warnings):
                    warnings.append(f"MLflow metrics unavailable: {exc.message}")
            for r in runs:
                m = key.get(r.dag_run_id)
                rows.append(
                    {
                        "pipeline": p.name,
                        "dag_id": p.dag_id,
                        "dag_run_id": r.dag_run_id,
                        "state": r.state,
                        "run_type": r.run_type,
                        "start_date": r.start_date.isoformat() if r.start_date else None,
                        "end_date": r.end_date.isoformat() if r.end_date else None,
                        "duration_s": run_duration(r.start_date, r.end_date, None if r.finished else now),
                        "metric": p.key_metric,
                        "metric_value": m.metrics.get(p.key_metric) if m else None,
                        "mlflow_run_id": m.run_id if m else None,
                        "_sort": (r.start_date or r.queued_at or now).timestamp(),
                    }
                )
    finally:
        tracking.close()
    rows.sort(key=lambda r: r["_sort"], reverse=True)
    rows = rows[:limit]
    for r in rows:
        r.pop("_sort")
    for w in warnings:
        console.warn(w)
    if console.json_mode:
        console.json({"runs": rows, "warnings": warnings})
    else:
        console.print(runs_table(rows))


def _one(actx: AppContext, run_id: str, pipeline: str | None, *, wait: bool, timeout: float | None) -> None:
    from mlopsctl.commands.run import add_failure, add_mlflow, emit, finish, result_doc

    p, run = locate_run(actx, run_id, pipeline)
    if wait:
        finish(actx, p, run.dag_run_id, timeout=timeout)
        return
    from mlopsctl.follow import task_order

    tasks = task_order(actx.airflow.task_instances(p.dag_id, run.dag_run_id))
    doc = result_doc(actx, p, run, tasks)
    if run.state == "success":
        add_mlflow(actx, p, doc)
    elif run.state == "failed":
        add_failure(actx, p, doc, tasks)
    else:
        add_mlflow(actx, p, doc)  # partial metrics of a running run, if any
        doc["warnings"] = [w for w in doc["warnings"] if not w.startswith("No MLflow run")]
    if not actx.console.json_mode and run.conf:
        from mlopsctl.render import kv_table

        actx.console.print(kv_table("Conf", run.conf))
    emit(actx, p, doc)
    if not actx.console.json_mode:
        from mlopsctl.render import tasks_table

        if run.state == "success":
            actx.console.print(tasks_table(doc["tasks"]))
        if not run.finished:
            actx.console.info(f"Still {run.state}. Follow it with: mlopsctl status {run.dag_run_id} --wait")
