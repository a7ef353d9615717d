"""Shared option types and helpers for command modules (thin glue only)."""

from __future__ import annotations

from typing import Annotated

import typer

from mlopsctl.context import AppContext

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout instead of tables.")]


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
