"""`mlopsctl init [DIR]`: scaffold a project (dags/, spark_jobs/, .env.example, .gitignore, a DAG test)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlopsctl.commands._common import JsonOpt, app_context, escape

_LABELS = (
    ("created", "Created", "green"),
    ("overwritten", "Overwritten", "yellow"),
    ("updated", "Updated", "cyan"),
    ("unchanged", "Unchanged", "dim"),
)


def _next_steps(directory: Path) -> list[str]:
    steps = []
    try:
        same = directory.resolve() == Path.cwd().resolve()
    except OSError:
        same = False
    if not same:
        steps.append(f"cd {directory}")
    steps += [
        "cp .env.example .env   # optional: adjust settings",
        "mlopsctl dev start     # local Airflow + MLflow",
        "mlopsctl run build-model",
        "pytest tests/test_dag_integrity.py",
    ]
    return steps


def _group(files: list[str]) -> list[str]:
    """Collapse files under dags/ and spark_jobs/ into one line per top folder (with a count)."""
    out: list[str] = []
    folders: dict[str, int] = {}
    for f in files:
        top, _, rest = f.partition("/")
        if rest and top in ("dags", "spark_jobs"):
            folders[top] = folders.get(top, 0) + 1
        else:
            out.append(f)
    return [f"{top}/ ({n} file{'s' if n != 1 else ''})" for top, n in folders.items()] + out


def init(
    ctx: typer.Context,
    directory: Annotated[
        Path | None,
        typer.Argument(
            help="Project directory (created if missing). Default: --project-dir, else the current directory.",
            show_default=False,
            metavar="DIR",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", "-f", help="Overwrite files that differ from the scaffold.")
    ] = False,
    json_output: JsonOpt = False,
) -> None:
    """Scaffold a project: dags/ and spark_jobs/ (copies of the bundled pipelines), .env.example,
    a .gitignore with .env and .mlopsctl/, and tests/test_dag_integrity.py.

    Safe to run twice: identical files are left alone; an existing .gitignore only gets the missing lines.

    If a file exists with different content, nothing is written and the exit code is 2 (USAGE).

    The conflicting files are listed; --force overwrites them.

    Example: mlopsctl init my-project   ·   mlopsctl init . --force
    """
    from mlopsctl.scaffold import init_project

    actx = app_context(ctx, json_output)
    if directory is None:
        directory = actx.overrides.get("project_dir") or Path(".")
    result = init_project(Path(directory), force=force)
    steps = _next_steps(result.directory)
    console = actx.console
    if actx.json_mode:
        console.json({**result.to_dict(), "next_steps": steps})
        return
    for name in result.skipped:
        console.warn(f"{name} is not bundled with this installation of mlopsctl; skipped it.")
    for name, what in result.left_over.items():
        console.warn(f"{name} is left from an older mlopsctl: {what}.")
    if result.already_initialised:
        console.print(f"{escape(str(result.directory))} is already initialised: nothing changed.")
        return
    console.print(f"Initialised mlopsctl project in [bold]{escape(str(result.directory))}[/bold]")
    for attr, label, colour in _LABELS:
        files = getattr(result, attr)
        if not files or attr == "unchanged":
            continue
        for item in _group(files):
            console.print(f"  [{colour}]{label}[/{colour}] {escape(item)}")
    if result.unchanged:
        console.print(f"  [dim]{len(result.unchanged)} file(s) already up to date[/dim]")
    console.print("\nNext steps:")
    for step in steps:
        console.print(f"  {escape(step)}")
