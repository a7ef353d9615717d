"""`mlopsctl grid-search [--spark]`: trigger a grid search, follow it, print a leaderboard and a heatmap."""

from __future__ import annotations

from typing import Annotated

import typer

from mlopsctl.commands import _common as opts


def grid_search(
    ctx: typer.Context,
    spark: Annotated[bool, typer.Option("--spark", help="Fan the grid out on Spark (grid_search_spark).")] = False,
    max_depth: Annotated[
        str, typer.Option("--max-depth", help="Comma-separated max_depth values (each 1..1000).", metavar="LIST")
    ] = "80,90,100,110",
    n_estimators: Annotated[
        str, typer.Option("--n-estimators", help="Comma-separated n_estimators values (each 1..5000).", metavar="LIST")
    ] = "100,200,300",
    cv: Annotated[int, typer.Option("--cv", help="Cross-validation folds (2..20).")] = 3,
    data: opts.DataOpt = None,
    target: opts.TargetOpt = "target",
    na_values: opts.NaValuesOpt = None,
    test_size: opts.TestSizeOpt = 0.2,
    random_state: opts.RandomStateOpt = 42,
    register: opts.RegisterOpt = None,
    no_register: opts.NoRegisterOpt = False,
    no_wait: opts.NoWaitOpt = False,
    timeout: opts.TimeoutOpt = None,
    auto_unpause: opts.AutoUnpauseOpt = True,
    json_output: opts.JsonOpt = False,
) -> None:
    """Grid-search a random forest over max_depth × n_estimators; print a leaderboard and a heatmap.

    Example: mlopsctl grid-search --max-depth 3,5 --n-estimators 10,20 --cv 2

    On Spark: mlopsctl grid-search --spark --json
    """
    from mlopsctl.pipelines import get_pipeline, grid_conf, register_value

    conf = grid_conf(
        max_depth=max_depth,
        n_estimators=n_estimators,
        cv=cv,
        data=data,
        target=target,
        na_values=na_values,
        test_size=test_size,
        random_state=random_state,
        register=register_value(register, no_register),
    )
    opts.check_timeout(timeout)
    actx = opts.app_context(ctx, json_output)
    pipeline = get_pipeline("grid-search-spark" if spark else "grid-search")
    opts.launch(actx, pipeline, conf, wait=not no_wait, timeout=timeout, auto_unpause=auto_unpause)
