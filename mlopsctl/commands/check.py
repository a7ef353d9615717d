"""`mlopsctl check`: parse the project's DAGs in-process and report problems (no running Airflow)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlopsctl.commands._common import JsonOpt, app_context, escape
from mlopsctl.errors import DagError, InputError
from mlopsctl.extras import require_local_extra


def check(
    ctx: typer.Context,
    path: Annotated[
        Path | None,
        typer.Argument(help="DAG folder or file to check. Default: <project>/dags.", show_default=False),
    ] = None,
    max_parse_seconds: Annotated[
        float,
        typer.Option(
            "--max-parse-seconds", min=0.0, help="Flag DAG files whose parse takes longer than this."
        ),
    ] = 2.0,
    strict: Annotated[bool, typer.Option("--strict", help="Fail on warnings (slow parse) too.")] = False,
    json_output: JsonOpt = False,
) -> None:
    """Parse the DAGs in-process, like the dag-processor would, and report import errors, cycles, missing
    tags/retries, Params without a schema, Variable/Connection reads at parse time and each file's parse
    time. Exits 12 when it finds a problem. Needs the `local` extra (apache-airflow).

    Example: mlopsctl check  (or: mlopsctl check dags/build_model.py --json)
    """
    require_local_extra("check", "airflow")  # found, not imported: dagcheck sets AIRFLOW_HOME first
    app = app_context(ctx, json_output)
    if path is None:
        path = app.settings.project_dir / "dags"
    if not path.exists():
        raise InputError(f"{path} does not exist.", hint="Give the DAG folder or file: mlopsctl check PATH")
    from mlopsctl.dagcheck import check_dags

    app.console.status_line(f"Parsing DAGs in {escape(str(path))} ...")
    report = check_dags(path, max_parse_seconds=max_parse_seconds)

    if json_output:
        app.console.json(report.to_dict(strict))
    else:
        from rich.table import Table

        table = Table("FILE", "PARSE (s)", "DAGS", "PROBLEMS", box=None)
        for f in report.files:
            table.add_row(
                escape(f.file),
                f"{f.parse_seconds:.3f}",
                escape(", ".join(f.dag_ids) or "-"),
                str(len(f.problems)) if f.problems else "ok",
            )
        app.console.print(table)
        for p in report.problems:
            where = f"{p.file}" + (f" [{p.dag_id}]" if p.dag_id else "")
            colour = "red" if p.severity == "error" else "yellow"
            app.console.print(
                f"[{colour}]{p.severity}[/{colour}] {p.kind}: {escape(where)}: {escape(p.message)}"
            )
    problems = report.problems
    if report.failed(strict):
        errors = sum(p.severity == "error" for p in problems)
        raise DagError(
            f"check found {len(problems)} problem(s) ({errors} error(s)) in {report.path}.",
            hint="Fix the problems listed above, then re-run `mlopsctl check`.",
        )
    dag_count = sum(len(f.dag_ids) for f in report.files)
    suffix = f", {len(problems)} warning(s)" if problems else ""
    app.console.success(f"{dag_count} DAG(s) in {len(report.files)} file(s) parsed without errors{suffix}.")
