"""`mlopsctl run build-model`: validate, trigger over REST, follow live, print the MLflow result."""

from __future__ import annotations

import typer

from mlopsctl.commands import _common as opts

app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Trigger a pipeline run and follow it to the end.\n\nExample: mlopsctl run build-model --max-depth 80 --n-estimators 100",
)


@app.command("build-model")
@opts.pipeline_command("build-model")
def build_model(ctx: typer.Context, request: opts.RunRequest) -> None:
    """Train one random forest: trigger build_model, follow it, print its MLflow metrics.

    Example: mlopsctl run build-model --max-depth 80 --n-estimators 100

    Own data: mlopsctl run build-model --data data.csv --target price --json
    """
    request.launch(ctx, "build-model")
