"""`mlopsctl score NAME@ALIAS|NAME/VERSION --data ... --output ...`: resolve the version, trigger batch_score,
follow it, print the rows scored, the version, the output and the prediction summary.

The alias is resolved here (through `mlopsctl.tracking`) so the run scores one fixed version; the job itself
refuses what only the compute can see (a table or remote output that exists, columns the data lacks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlopsctl.commands import _common as opts
from mlopsctl.errors import ExitCode, MlopsctlError
from mlopsctl.pipelines import param_schemas

PIPELINE = "score"
_SCHEMAS = param_schemas(PIPELINE)


class OutputExistsError(MlopsctlError, exit_code=ExitCode.REJECTED):
    """The output exists and --mode error (the default) never overwrites it."""


def local_output(output: str) -> str | None:
    """The output as an absolute path when it names a path on this machine (Airflow's workers do not share our
    working directory); None for a URI, a volume, DBFS or workspace path, or a table, which the job judges."""
    from mlopsctl.datasources import data_kind

    text = output.strip()
    kind = data_kind(text)
    if kind == "table" and Path(text).expanduser().exists():
        kind = "local"
    return str(Path(text).expanduser().resolve()) if kind == "local" else None


@opts.pipeline_command(PIPELINE, own=("model_name", "model_version", "data", "output"))
def score(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="NAME@ALIAS or NAME/VERSION of a registered model (catalog.schema."
                                         "model on Databricks).", metavar="NAME@ALIAS|NAME/VERSION")],
    data: Annotated[str, typer.Option("--data", help=_SCHEMAS["data"]["description"], metavar="PATH|TABLE")],
    output: Annotated[str, typer.Option("--output", help=_SCHEMAS["output"]["description"], metavar="PATH|TABLE")],
    request: opts.RunRequest,
) -> None:
    """Score data with a registered model version: trigger batch_score, follow it, print the summary.

    The output holds the input columns plus prediction, model_name, model_version and scored_at.

    Example: mlopsctl score mlopsctl-random-forest@champion --data new.csv --output scored/
    """
    from mlopsctl.pipelines import build_conf
    from mlopsctl.tracking import parse_model_ref

    name, _, _ = parse_model_ref(model)
    values = {**request.values, "model_name": name, "data": data, "output": output}
    build_conf(PIPELINE, **values, model_version=1)  # every flag judged before any request
    opts.check_timeout(request.timeout)
    local = local_output(output)
    if local is not None:
        values["output"] = local
        if values.get("mode", "error") == "error" and Path(local).exists():
            raise OutputExistsError(f"--output {output} exists.",
                                    hint="--mode overwrite replaces it, --mode append adds to it.")
    actx = opts.app_context(ctx, request.json_output)
    tracking = actx.tracking()
    try:
        version = tracking.raw_input_version(model)
    finally:
        tracking.close()
    actx.console.status_line(f"Scoring with {name} version {version.version}" +
                             (f" ({model.rpartition('@')[2]})" if "@" in model else ""))
    request.values = {**values, "model_version": int(version.version)}
    request.launch(ctx, PIPELINE)
