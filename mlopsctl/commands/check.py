"""`mlopsctl check`: parse the project's DAGs in-process and report problems (no running Airflow)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mlopsctl.commands._common import JsonOpt, app_context, escape
from mlopsctl.errors import DagError, InputError
from mlopsctl.extras import require_local_extra

if TYPE_CHECKING:
    from mlopsctl.dagcheck import CheckReport, Problem


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
    strict: Annotated[
        bool,
        typer.Option(
            "--strict", help="Fail on warnings too (top-level code, moved Airflow imports, slow parse)."
        ),
    ] = False,
    json_output: JsonOpt = False,
) -> None:
    """Parse the DAGs in-process, like the dag-processor would, and report import errors, cycles, missing
    tags/retries, Params without a schema, Variable/Connection reads at parse time and each file's parse
    time; run ruff's Airflow 3 migration rules (AIR3xx: what to write instead, with file:line) and flag
    code that runs at every parse outside a task (clock, randomness, print, file/network I/O,
    subprocesses). Exits 12 on an error (or on a warning with --strict). Needs the `local` extra.

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
        for line in problem_lines(report):
            app.console.print(line)
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


def _problem_line(p: Problem, prefix: str = "") -> str:
    colour = "red" if p.severity == "error" else "yellow"
    label = p.kind + (f" {p.rule}" if p.rule else "")
    where = p.file + (f":{p.line}" if p.line else "") + (f" [{p.dag_id}]" if p.dag_id else "")
    message = p.message.removeprefix(f"line {p.line}: ") if p.line else p.message
    text = f"{prefix}[{colour}]{p.severity}[/{colour}] {escape(label)}: {escape(where)}: {escape(message)}"
    return text + (f"\n{' ' * len(prefix)}    [dim]->[/dim] {escape(p.fix)}" if p.fix else "")


def problem_lines(report: CheckReport) -> list[str]:
    """One entry per problem, by file and line; the AIR3xx findings that cause a file's import error are
    listed under it (as its cause) instead of beside it."""
    lines = [_problem_line(p) for p in report.outside.problems]
    for f in report.files:
        causes = [p for p in f.problems if p.explains_import_error]
        for p in sorted(f.problems, key=lambda p: p.line or 0):
            if p.explains_import_error:
                continue
            if p.kind == "import_error" and causes:
                lines.append(_problem_line(replace(p, fix=None)))
                lines.extend(_problem_line(c, prefix="    caused by: ") for c in causes)
            else:
                lines.append(_problem_line(p))
    return lines
