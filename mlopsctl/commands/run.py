"""`mlopsctl run build-model`: validate, trigger over REST, follow live, print the MLflow result.

Also holds the trigger/follow/report flow that `grid-search` and `status --wait` share.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer

from mlopsctl.commands._common import JsonOpt, app_context
from mlopsctl.context import AppContext
from mlopsctl.errors import DagError, InputError, MlopsctlError, NotFoundError, RunFailedError

app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Trigger a pipeline run and follow it to the end.\n\nExample: mlopsctl run build-model --max-depth 80 --n-estimators 100",
)

LOG_TAIL_LINES = 30

# --- shared options ---------------------------------------------------------------------------------
DataOpt = Annotated[
    str | None,
    typer.Option("--data", help="CSV/Parquet file or directory (or a remote URI). Default: scikit-learn's diabetes data."),
]
TargetOpt = Annotated[str, typer.Option("--target", help="Target column in --data.")]
TestSizeOpt = Annotated[float, typer.Option("--test-size", help="Held-out fraction, strictly between 0 and 1.")]
RandomStateOpt = Annotated[int, typer.Option("--random-state", help="Random seed (0..4294967295).")]
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


def check_timeout(timeout: float | None) -> float | None:
    if timeout is not None and not timeout > 0:
        raise InputError(f"--timeout must be a positive number of seconds, got {timeout:g}.")
    return timeout


# --- the flow ---------------------------------------------------------------------------------------


def airflow_run_url(actx: AppContext, dag_id: str, dag_run_id: str) -> str:
    return f"{actx.settings.airflow_url}/dags/{quote(dag_id, safe='')}/runs/{quote(dag_run_id, safe='')}"


def tracking_for(actx: AppContext):
    from mlopsctl.tracking import Tracking

    settings = actx.settings
    verify: bool | str = str(settings.ca_bundle) if settings.ca_bundle else settings.verify_tls
    return Tracking(settings.mlflow_tracking_uri, timeout=min(settings.request_timeout, 15.0), verify=verify)


def ensure_dag(actx: AppContext, dag_id: str, *, auto_unpause: bool = True) -> None:
    """The DAG must be loaded (else its import error, if any); unpause it unless told not to."""
    client = actx.airflow
    console = actx.console
    try:
        dag = client.get_dag(dag_id)
    except NotFoundError:
        errors = _import_errors_for(client, dag_id)
        if errors:
            err = errors[0]
            trace = (err.stack_trace or "").strip().splitlines()
            raise DagError(
                f"DAG {dag_id!r} is not loaded: {err.filename} failed to import:\n" + "\n".join(trace[-15:]),
                hint="Fix the DAG file, then check with `mlopsctl dags` (the dag-processor re-parses it within seconds).",
            ) from None
        raise NotFoundError(
            f"DAG {dag_id!r} is not loaded in Airflow at {actx.settings.airflow_url}.",
            hint="Start the local stack (`mlopsctl dev start`) or deploy the bundled DAGs; `mlopsctl dags` lists them.",
        ) from None
    if getattr(dag, "is_stale", False):
        console.warn(f"DAG {dag_id} is marked stale (its file is gone from the dags folder); the run may not start.")
    if dag.is_paused:
        if auto_unpause:
            client.set_paused(dag_id, False)
            console.info(f"Unpaused DAG {dag_id}.")
        else:
            console.warn(
                f"DAG {dag_id} is paused: the run will stay queued until you unpause it "
                "(drop --no-auto-unpause, or unpause it in the Airflow UI)."
            )


def _import_errors_for(client: Any, dag_id: str) -> list[Any]:
    try:
        errors = client.import_errors()
    except MlopsctlError:
        return []
    return [e for e in errors if e.filename and (Path(e.filename).stem == dag_id or dag_id in e.filename)]


def launch(
    actx: AppContext,
    pipeline: Any,
    conf: dict[str, Any],
    *,
    wait: bool = True,
    timeout: float | None = None,
    auto_unpause: bool = True,
) -> None:
    """Ensure the DAG, trigger with a client-chosen run id, then follow and report (or return at once)."""
    from mlopsctl.pipelines import new_dag_run_id

    ensure_dag(actx, pipeline.dag_id, auto_unpause=auto_unpause)
    run_id = new_dag_run_id()
    t0 = time.monotonic()
    run = actx.airflow.trigger(pipeline.dag_id, conf, dag_run_id=run_id)
    console = actx.console
    url = airflow_run_url(actx, pipeline.dag_id, run.dag_run_id)
    if not wait:
        if console.json_mode:
            console.json(
                {
                    "pipeline": pipeline.name,
                    "dag_id": pipeline.dag_id,
                    "dag_run_id": run.dag_run_id,
                    "state": run.state,
                    "conf": conf,
                    "links": {"airflow": url},
                }
            )
        else:
            console.print(run.dag_run_id)
            if not console.quiet:
                console.err.print(
                    f"Triggered {pipeline.dag_id} ({run.state}). Follow it with: "
                    f"mlopsctl status {run.dag_run_id} --wait",
                    soft_wrap=True,
                )
        return
    if not console.quiet:  # stderr, also in --json mode; soft_wrap keeps the URL on one line
        console.err.print(f"Triggered {pipeline.dag_id} run [bold]{run.dag_run_id}[/bold]\n  {url}", soft_wrap=True)
    finish(actx, pipeline, run.dag_run_id, timeout=timeout, t0=t0)


def finish(
    actx: AppContext, pipeline: Any, dag_run_id: str, *, timeout: float | None = None, t0: float | None = None
) -> dict[str, Any]:
    """Follow to the end, then print the result (success) or the failing task's log tail (RUN_FAILED)."""
    from mlopsctl.follow import FollowInterrupted, follow_run

    console = actx.console
    try:
        result = follow_run(actx.airflow, pipeline.dag_id, dag_run_id, console=console, timeout=timeout)
    except FollowInterrupted as exc:
        console.err.print(f"\n[yellow]{exc.message}[/yellow]\nReattach with: [bold]mlopsctl status {dag_run_id} --wait[/bold]")
        raise typer.Exit(int(exc.exit_code)) from None
    doc = result_doc(actx, pipeline, result.run, result.tasks)
    doc["follow"] = {"polls": result.polls, "requests": result.requests, "waited_s": round(result.waited, 3)}
    if t0 is not None:
        doc["follow"]["wall_s"] = round(time.monotonic() - t0, 3)
    if result.succeeded:
        add_mlflow(actx, pipeline, doc)
        emit(actx, pipeline, doc)
        return doc
    add_failure(actx, pipeline, doc, result.tasks)
    emit(actx, pipeline, doc)
    failed = doc.get("failed_task")
    where = f": task {failed!r} failed" if failed else ""
    raise RunFailedError(
        f"Run {dag_run_id} of {pipeline.dag_id} ended {result.run.state}{where}.",
        hint=(f"Full log: mlopsctl logs {dag_run_id} --task {failed}" if failed else f"See {doc['links']['airflow']}"),
    )


def result_doc(actx: AppContext, pipeline: Any, run: Any, tasks: list[Any]) -> dict[str, Any]:
    from mlopsctl.render import run_duration

    return {
        "pipeline": pipeline.name,
        "dag_id": pipeline.dag_id,
        "dag_run_id": run.dag_run_id,
        "state": run.state,
        "queued_at": run.queued_at.isoformat() if run.queued_at else None,
        "start_date": run.start_date.isoformat() if run.start_date else None,
        "end_date": run.end_date.isoformat() if run.end_date else None,
        "duration_s": run_duration(run.start_date, run.end_date),
        "conf": run.conf,
        "tasks": [
            {
                "task_id": t.task_id,
                "map_index": t.map_index,
                "state": t.state,
                "try_number": t.try_number,
                "duration": t.duration,
            }
            for t in tasks
        ],
        "links": {"airflow": airflow_run_url(actx, pipeline.dag_id, run.dag_run_id), "mlflow": None},
        "mlflow": None,
        "warnings": [],
    }


def add_mlflow(actx: AppContext, pipeline: Any, doc: dict[str, Any]) -> None:
    """Attach the MLflow run (and grid points). MLflow trouble is a warning, never a failure."""
    tracking = tracking_for(actx)
    try:
        if pipeline.kind == "grid":
            grid = tracking.grid(pipeline.dag_id, doc["dag_run_id"])
            main = grid.parent
            points = grid.points()
        else:
            main = tracking.main_run(pipeline.dag_id, doc["dag_run_id"])
            points = None
    except MlopsctlError as exc:
        doc["warnings"].append(f"MLflow result unavailable: {exc.message}")
        return
    finally:
        tracking.close()
    if main is None and not points:
        doc["warnings"].append(
            f"No MLflow run tagged airflow.dag_run_id={doc['dag_run_id']} in experiment "
            f"{tracking.experiment_name(pipeline.dag_id)} at {tracking.tracking_uri}."
        )
        return
    doc["mlflow"] = {"run": main.as_dict() if main else None}
    if points is not None:
        doc["mlflow"]["points"] = points
    if main is not None:
        doc["links"]["mlflow"] = tracking.run_url(main, actx.settings.mlflow_ui)


def add_failure(actx: AppContext, pipeline: Any, doc: dict[str, Any], tasks: list[Any]) -> None:
    failed = [t for t in tasks if t.state == "failed"] or [t for t in tasks if t.state == "upstream_failed"]
    if not failed:
        return
    task = failed[0]
    doc["failed_task"] = task.task_id
    try:
        lines = read_log(actx.airflow, pipeline.dag_id, doc["dag_run_id"], task.task_id, max(task.try_number, 1),
                         map_index=task.map_index)
        doc["log_tail"] = lines[-LOG_TAIL_LINES:]
    except MlopsctlError as exc:
        doc["log_tail"] = []
        doc["warnings"].append(f"Could not read the log of {task.task_id}: {exc.message}")


def read_log(client: Any, dag_id: str, dag_run_id: str, task_id: str, try_number: int, *, map_index: int = -1,
             max_pages: int = 100) -> list[str]:
    """The whole log of one task try, following continuation tokens."""
    from mlopsctl.render import log_lines

    lines: list[str] = []
    token = None
    for _ in range(max_pages):
        chunk = client.task_log(dag_id, dag_run_id, task_id, try_number, map_index=map_index, continuation_token=token)
        new = log_lines(chunk.content)
        lines.extend(new)
        if not chunk.continuation_token or chunk.continuation_token == token or not new:
            break
        token = chunk.continuation_token
    return lines


def emit(actx: AppContext, pipeline: Any, doc: dict[str, Any]) -> None:
    """Print the result: one JSON document, or tables (+ warnings on stderr)."""
    from rich.markup import escape

    console = actx.console
    for w in doc.get("warnings", []):
        console.warn(w)
    if console.json_mode:
        console.json(doc)
        return
    from mlopsctl.render import heatmap, leaderboard, link_lines, run_summary, tasks_table

    console.print(run_summary(doc))
    for line in link_lines(doc):
        console.print(line, soft_wrap=True, markup=False)
    if doc.get("state") != "success":
        console.print(tasks_table(doc["tasks"]))
    points = (doc.get("mlflow") or {}).get("points")
    if points:
        console.print(leaderboard(points))
        console.print(heatmap(points))
    if doc.get("failed_task"):
        tail = doc.get("log_tail") or []
        console.print(f"[bold red]Task {escape(doc['failed_task'])} failed[/bold red]; last {len(tail)} log lines:")
        for line in tail:
            console.print(escape(line), soft_wrap=True)


# --- command ----------------------------------------------------------------------------------------


@app.command("build-model")
def build_model(
    ctx: typer.Context,
    max_depth: Annotated[int, typer.Option("--max-depth", help="Maximum tree depth (1..1000).")] = 80,
    n_estimators: Annotated[int, typer.Option("--n-estimators", help="Number of trees (1..5000).")] = 100,
    data: DataOpt = None,
    target: TargetOpt = "target",
    test_size: TestSizeOpt = 0.2,
    random_state: RandomStateOpt = 42,
    register: RegisterOpt = None,
    no_register: NoRegisterOpt = False,
    no_wait: NoWaitOpt = False,
    timeout: TimeoutOpt = None,
    auto_unpause: AutoUnpauseOpt = True,
    json_output: JsonOpt = False,
) -> None:
    """Train one random forest: trigger build_model, follow it, print its MLflow metrics.

    Example: mlopsctl run build-model --max-depth 80 --n-estimators 100

    Own data: mlopsctl run build-model --data data.csv --target price --json
    """
    from mlopsctl.pipelines import build_model_conf, get_pipeline, register_value

    conf = build_model_conf(
        max_depth=max_depth,
        n_estimators=n_estimators,
        data=data,
        target=target,
        test_size=test_size,
        random_state=random_state,
        register=register_value(register, no_register),
    )
    check_timeout(timeout)
    actx = app_context(ctx, json_output)
    launch(actx, get_pipeline("build-model"), conf, wait=not no_wait, timeout=timeout, auto_unpause=auto_unpause)
