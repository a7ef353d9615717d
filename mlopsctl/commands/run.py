"""`mlopsctl run build-model`: validate, trigger over REST, follow live, print the MLflow result."""

from __future__ import annotations

from typing import Annotated

import typer

from mlopsctl.commands import _common as opts

app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Trigger a pipeline run and follow it to the end.\n\nExample: mlopsctl run build-model --max-depth 80 --n-estimators 100",
)


@app.command("build-model")
def build_model(
    ctx: typer.Context,
    max_depth: Annotated[int, typer.Option("--max-depth", help="Maximum tree depth (1..1000).")] = 80,
    n_estimators: Annotated[int, typer.Option("--n-estimators", help="Number of trees (1..5000).")] = 100,
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
        na_values=na_values,
        test_size=test_size,
        random_state=random_state,
        register=register_value(register, no_register),
    )
    opts.check_timeout(timeout)
    actx = opts.app_context(ctx, json_output)
    opts.launch(actx, get_pipeline("build-model"), conf, wait=not no_wait, timeout=timeout, auto_unpause=auto_unpause)
