"""`mlopsctl models list|versions|show`: the registered models, their versions with metrics, one version in full.

Reads go through `mlopsctl.tracking.Tracking` (MLflow server over REST, or a workspace's Unity Catalog through
MLflow's client); this module only parses flags and renders.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mlopsctl.commands._common import JsonOpt, app_context, escape
from mlopsctl.errors import InputError
from mlopsctl.tracking import VERSION_SORTS

if TYPE_CHECKING:
    from mlopsctl.appcontext import AppContext
    from mlopsctl.tracking import Tracking

app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Registered models: list them, compare their versions, show one version.\n\n"
    "Example: mlopsctl models versions mlopsctl-random-forest --sort rmse",
)


@contextmanager
def _tracking(actx: AppContext) -> Iterator[Tracking]:
    tracking = actx.tracking()
    try:
        yield tracking
    finally:
        tracking.close()


def _show(actx: AppContext, doc: Any, render: Callable[[Any], None]) -> None:
    if actx.console.json_mode:
        actx.console.json(doc)
    else:
        render(doc)


@app.command("list")
def list_models(ctx: typer.Context, json_output: JsonOpt = False) -> None:
    """Each registered model with its aliases (alias -> version), latest version and number of versions.

    Example: mlopsctl models list --json
    """
    actx = app_context(ctx, json_output)
    with _tracking(actx) as tracking:
        models = tracking.registered_models()
    _show(actx, {"models": models}, lambda doc: actx.console.print(_models_table(doc["models"])))


@app.command("versions")
def versions(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Registered model name (catalog.schema.model on Databricks).")],
    sort: Annotated[str, typer.Option("--sort", help=f"Order: {'|'.join(VERSION_SORTS)} (created: newest first; rmse, "
                                      "mae: ascending; r2: descending).", metavar="KEY")] = "created",
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many versions to show (1..1000).")] = 20,
    json_output: JsonOpt = False,
) -> None:
    """A model's versions: aliases, run, pipeline, data source, rmse/r2/mae and creation time.

    Example: mlopsctl models versions mlopsctl-random-forest --sort rmse --limit 5
    """
    if sort not in VERSION_SORTS:
        raise InputError(f"--sort must be one of {', '.join(VERSION_SORTS)}, got {sort!r}.")
    if not 1 <= limit <= 1000:
        raise InputError(f"--limit must be between 1 and 1000, got {limit}.")
    actx = app_context(ctx, json_output)
    with _tracking(actx) as tracking:
        rows = tracking.version_rows(name, sort=sort, limit=limit)
    _show(actx, {"name": name, "sort": sort, "versions": rows},
          lambda doc: actx.console.print(_versions_table(name, doc["versions"])))


@app.command("show")
def show(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="NAME@ALIAS or NAME/VERSION.", metavar="NAME@ALIAS|NAME/VERSION")],
    json_output: JsonOpt = False,
) -> None:
    """One version in full: the version an alias resolves to, its run, signature, params, metrics and promotion
    record.

    Example: mlopsctl models show mlopsctl-random-forest@champion   ·   mlopsctl models show my-model/3
    """
    from mlopsctl.tracking import parse_model_ref

    parse_model_ref(ref)  # a malformed reference is a usage error before any request
    actx = app_context(ctx, json_output)
    with _tracking(actx) as tracking:
        doc = tracking.describe_version(ref, actx.settings.mlflow_ui)
    _show(actx, doc, lambda d: _print_version(actx, d))


# --- rendering --------------------------------------------------------------------------------------


def _models_table(models: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    table = Table(title="Registered models", title_justify="left")
    for col in ("model", "aliases", "latest", "versions"):
        table.add_column(col, justify="right" if col in ("latest", "versions") else "left")
    for m in models:
        aliases = ", ".join(f"{a} -> {v}" for a, v in sorted(m["aliases"].items())) or "-"
        table.add_row(escape(m["name"]), escape(aliases), m["latest_version"] or "-", str(m["versions"]))
    return table


def _versions_table(name: str, rows: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    from mlopsctl.render import fmt_metric, fmt_time

    table = Table(title=f"Versions of {escape(name)} (run: the first 8 characters of its id)", title_justify="left")
    for col in ("version", "aliases", "rmse", "r2", "mae", "pipeline", "data", "run", "created"):
        table.add_column(col, justify="right" if col in ("version", "rmse", "r2", "mae") else "left",
                         no_wrap=col in ("aliases", "run", "created"), overflow="fold" if col == "data" else "ellipsis")
    for r in rows:
        table.add_row(r["version"], escape(", ".join(r["aliases"]) or "-"), fmt_metric(r["rmse"]),
                      fmt_metric(r["r2"]), fmt_metric(r["mae"]), escape(r["pipeline"] or "-"),
                      escape(r["data"] or "-"), escape((r["run_id"] or "-")[:8]), fmt_time(r["created"]))
    return table


def _print_version(actx: AppContext, doc: dict[str, Any]) -> None:
    from mlopsctl.render import fmt_time, kv_table

    console = actx.console
    via = f" (alias {doc['alias']})" if doc["alias"] else ""
    console.print(f"[bold]{escape(doc['name'])}[/bold] version [bold]{doc['version']}[/bold]{escape(via)}")
    console.print(kv_table("", {
        "aliases": ", ".join(doc["aliases"]) or "-", "status": doc["status"] or "-", "created": fmt_time(doc["created"]),
        "pipeline": doc["pipeline"] or "-", "data": doc["data"] or "-", "run": doc["run_id"] or "-",
        "source": doc["source"] or "-",
    }))
    if doc["run_url"]:
        console.print(f"Run: {doc['run_url']}", soft_wrap=True, markup=False)
    signature = doc["signature"]
    if signature:
        for part in ("inputs", "outputs"):
            cols = ", ".join(f"{c['name'] or '-'}: {c['type']}" for c in signature[part])
            console.print(f"Signature {part}: {cols or '-'}", soft_wrap=True, markup=False)
    else:
        console.print("Signature: none recorded", markup=False)
    for title in ("metrics", "params", "promotion"):
        if doc[title]:
            console.print(kv_table(title.capitalize(), doc[title]))
    if not doc["promotion"]:
        console.print("Promotion: no record", markup=False)
