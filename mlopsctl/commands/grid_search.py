"""`mlopsctl grid-search [--spark]`: trigger a grid search, follow it, print a leaderboard and a heatmap."""

from __future__ import annotations

from typing import Annotated

import typer

from mlopsctl.commands import _common as opts


@opts.pipeline_command("grid-search")  # grid-search-spark takes the same Params
def grid_search(
    ctx: typer.Context,
    request: opts.RunRequest,
    spark: Annotated[bool, typer.Option("--spark", help="Fan the grid out on Spark (grid_search_spark).")] = False,
) -> None:
    """Grid-search a random forest over max_depth × n_estimators; print a leaderboard and a heatmap.

    Example: mlopsctl grid-search --max-depth 3,5 --n-estimators 10,20 --cv 2

    On Spark: mlopsctl grid-search --spark --json
    """
    request.launch(ctx, "grid-search-spark" if spark else "grid-search")
