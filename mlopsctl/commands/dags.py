"""`mlopsctl dags`: the bundled pipelines, their params with defaults, paused state, last run, import errors."""

from __future__ import annotations

from typing import Any

import typer

from mlopsctl.commands._common import JsonOpt, app_context
from mlopsctl.errors import MlopsctlError, NotFoundError


def param_defaults(params: dict[str, Any]) -> dict[str, Any]:
    """Airflow's serialized Params ({name: {"value": default, "schema": ...}}) -> {name: default}."""
    out = {}
    for name, spec in (params or {}).items():
        out[name] = spec.get("value", spec.get("default")) if isinstance(spec, dict) else spec
    return out


def dags(ctx: typer.Context, json_output: JsonOpt = False) -> None:
    """List the bundled pipelines: params with defaults, paused state, last run and import errors.

    Example: mlopsctl dags   ·   mlopsctl dags --json
    """
    from mlopsctl.airflow.models import import_errors_of
    from mlopsctl.pipelines import PIPELINES
    from mlopsctl.render import dags_table, fmt_time

    actx = app_context(ctx, json_output)
    client = actx.airflow
    console = actx.console
    try:
        errors = client.import_errors()
    except MlopsctlError as exc:
        if not isinstance(exc, NotFoundError):
            raise
        errors = []
    rows = []
    for p in PIPELINES.values():
        row: dict[str, Any] = {"pipeline": p.name, "dag_id": p.dag_id, "summary": p.help, "result": p.result,
                               "loaded": False}
        try:
            d = client.get_dag_details(p.dag_id)
            row.update(loaded=True, is_paused=d.is_paused, params=param_defaults(d.params), fileloc=d.fileloc)
            runs = client.list_runs(p.dag_id, limit=1)
            row["last_run"] = (
                {"dag_run_id": runs[0].dag_run_id, "state": runs[0].state,
                 "start_date": runs[0].start_date.isoformat() if runs[0].start_date else None}
                if runs else None
            )
        except NotFoundError:
            d = None
            row.update(is_paused=None, params={}, last_run=None)
        row["import_errors"] = [
            {"filename": e.filename, "stack_trace": e.stack_trace} for e in import_errors_of(errors, p.dag_id, d)
        ]
        rows.append(row)
    if console.json_mode:
        console.json(
            {"pipelines": rows, "import_errors": [{"filename": e.filename, "stack_trace": e.stack_trace,
                                                   "timestamp": e.timestamp.isoformat() if e.timestamp else None}
                                                  for e in errors]}
        )
        return
    console.print(dags_table(rows))
    for e in errors:
        trace = (e.stack_trace or "").strip().splitlines()
        console.print(f"[bold red]Import error[/bold red] in {e.filename} ({fmt_time(e.timestamp)}):")
        for line in trace[-10:]:
            console.print("  " + line, markup=False)
    if not all(r["loaded"] for r in rows):
        console.info("Some pipelines are not loaded: start the local stack (`mlopsctl dev start`) or deploy the DAGs.")
