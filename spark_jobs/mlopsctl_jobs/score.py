"""Batch scoring with one registered model version: the version and its signature (`load_version`), the input
read and cast to the signature's types (`read_input`), the predictions made on the workers (`score`), the output
(`output_exists`, `write_output`) and its summary (`prediction_summary`).

A version is scored only when it takes raw rows (`tracking.require_raw_input`);
the workers load it with ``mlflow.pyfunc.spark_udf(..., env_manager="local")`` (`ScoringModel.udf_uri`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from mlopsctl_jobs import data, tracking
from mlopsctl_jobs.data import DataError

#: the columns the output adds to the input's (the names a Databricks quality monitor reads)
PREDICTION_COL = "prediction"
MODEL_NAME_COL = "model_name"
MODEL_VERSION_COL = "model_version"
SCORED_AT_COL = "scored_at"
ADDED_COLUMNS = (PREDICTION_COL, MODEL_NAME_COL, MODEL_VERSION_COL, SCORED_AT_COL)
#: --mode -> Spark's save mode
MODES = {"error": "error", "overwrite": "overwrite", "append": "append"}
#: MLflow signature column types -> Spark SQL types
SPARK_TYPES = {
    "double": "DOUBLE", "float": "FLOAT", "long": "BIGINT", "integer": "INT", "string": "STRING",
    "boolean": "BOOLEAN", "datetime": "TIMESTAMP", "binary": "BINARY",
}


@dataclass(frozen=True)
class ScoringModel:
    """A registered version as the scoring job uses it: the URI its files are stored at (what the workers load)
    and its signature's input columns, (name, MLflow type) in the signature's order."""

    name: str
    version: str
    storage_uri: str
    inputs: tuple[tuple[str, str], ...]

    @property
    def udf_uri(self) -> str:
        """What the scoring UDF loads. Off Databricks the storage URI: under Spark Connect each worker downloads
        the model itself, with the tracking URI but not the registry's (nor any credentials). On Databricks the
        registry's own ``models:/`` URI, which the runtime resolves on the driver and ships to its workers (a
        Connect artifact on serverless, a broadcast file on a classic cluster)."""
        return f"models:/{self.name}/{self.version}" if on_databricks() else self.storage_uri


def load_version(name: str, version: str) -> ScoringModel:
    """The version's storage URI and signature, read on the driver (MLflow set up by `tracking.setup_mlflow`).
    DataError when it does not exist, takes cleaned features rather than raw rows, or has no column signature."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    try:
        mv = client.get_model_version(name, version)
        storage_uri = client.get_model_version_download_uri(name, version)
        info = mlflow.models.get_model_info(f"models:/{name}/{version}")
    except MlflowException as exc:
        raise DataError(f"cannot load version {version} of registered model {name!r}: {exc.message}") from None
    tracking.require_raw_input(name, mv)
    signature = info.signature
    schema = signature.inputs if signature is not None else None
    if schema is None or not schema.has_input_names():
        raise DataError(f"version {version} of {name!r} has no column signature: the columns to score are unknown")
    inputs = tuple((spec.name, _type_name(spec)) for spec in schema.inputs)
    return ScoringModel(name, str(version), storage_uri, inputs)


def _type_name(spec: Any) -> str:
    kind = getattr(spec, "type", None)
    return getattr(kind, "name", str(kind))


def _quoted(name: str) -> str:
    return "`" + str(name).replace("`", "``") + "`"


def _csv_path(source: str) -> tuple[str, str] | None:
    """(kind, path Spark reads) of a CSV file that Spark reads itself; None for anything else (tables, Parquet,
    workspace files), which `data.load_source` reads."""
    kind = data.source_kind(source)
    if kind == "table" and Path(source).expanduser().exists():
        kind = "local"
    if kind not in ("local", "uri", "volume", "dbfs") or not source.rstrip("/").lower().endswith(".csv"):
        return None
    if kind == "local":
        path = Path(source).expanduser()
        if not path.is_file():
            raise DataError(f"data file not found: {source}")
        if path.stat().st_size == 0:
            raise DataError(f"data file is empty: {source}")
        return kind, str(path.resolve())
    return kind, data.spark_path(source, kind)


def read_input(spark: Any, source: str, model: ScoringModel) -> Any:
    """The rows to score, every signature column cast to the signature's type (a CSV is read as text and cast,
    not typed by inference; missing-value tokens are null). DataError naming the columns the model needs that
    the input lacks, found from the input's schema alone, before any pass over the data."""
    from pyspark.errors import AnalysisException
    from pyspark.sql import functions as F

    csv = _csv_path(source)
    try:
        if csv is None:
            raw = data.load_source(spark, source)
        else:
            raw = spark.read.option("header", True).option("inferSchema", False).csv(csv[1])
        columns = list(raw.columns)  # one analysis request
    except AnalysisException as exc:
        reason = (str(exc).strip().splitlines() or ["unreadable"])[0]
        raise DataError(f"cannot read {source}: {reason}") from None
    missing = [name for name, _ in model.inputs if name not in columns]
    if missing:
        raise DataError(
            f"{source} lacks {len(missing)} column(s) that version {model.version} of {model.name} needs: "
            f"{', '.join(missing)} (it has: {', '.join(columns)})"
        )
    clash = [c for c in columns if c in ADDED_COLUMNS]
    if clash:
        raise DataError(f"{source} already has column(s) {', '.join(clash)}, which the scored output adds")
    tokens = sorted({"", *data.NA_VALUES})
    types = dict(model.inputs)
    projected = []
    for c in columns:
        col = F.col(_quoted(c))
        if csv is not None:
            col = F.when(F.trim(col).isin(tokens), F.lit(None)).otherwise(col)
        if c in types:
            col = col.try_cast(SPARK_TYPES.get(types[c], "STRING"))
        projected.append(col.alias(c))
    return raw.select(*projected)


def score(spark: Any, rows: Any, model: ScoringModel, scored_at: datetime) -> Any:
    """`rows` plus the prediction (double, made on the workers from the signature's columns in its order),
    the model's name and version and `scored_at`."""
    import mlflow.pyfunc
    from pyspark.sql import functions as F

    predict = mlflow.pyfunc.spark_udf(spark, model.udf_uri, result_type="double", env_manager="local")
    return rows.select(
        *[F.col(_quoted(c)) for c in rows.columns],
        predict(*[F.col(_quoted(name)) for name, _ in model.inputs]).alias(PREDICTION_COL),
        F.lit(model.name).alias(MODEL_NAME_COL),
        F.lit(model.version).alias(MODEL_VERSION_COL),
        F.lit(scored_at).cast("timestamp").alias(SCORED_AT_COL),
    )


def on_databricks() -> bool:
    return bool(os.environ.get("DATABRICKS_RUNTIME_VERSION"))


def output_kind(output: str) -> str:
    """``table`` or ``path`` (a path on the job's machine, a URI, a volume or DBFS path)."""
    kind = data.source_kind(output)
    if kind == "table" and not Path(output).expanduser().exists():
        return "table"
    if kind == "workspace":
        raise DataError(f"output {output}: workspace files cannot hold a scored table; give a /Volumes/... path, "
                        "a URI or a table name")
    if kind == "local" and on_databricks():
        raise DataError(f"output {output} is a path on the cluster's driver; give a /Volumes/... path, a URI or "
                        "a table name (catalog.schema.table)")
    return "path"


def _target(output: str) -> str:
    kind = data.source_kind(output)
    if kind == "local" or (kind == "table" and Path(output).expanduser().exists()):
        return str(Path(output).expanduser().resolve())
    return data.spark_path(output, kind)


def output_exists(spark: Any, output: str) -> bool:
    """Whether the output is there already: a table in the session's catalog, or a path the job's process sees
    (this machine's disk, a volume, DBFS); other URIs are judged by Spark's own write (`write_output`)."""
    if output_kind(output) == "table":
        try:
            return bool(spark.catalog.tableExists(output))
        except Exception:  # noqa: BLE001 - an unknown catalog or schema: the table is not there either
            return False
    kind = data.source_kind(output)
    if kind == "uri":
        return False
    local = Path("/dbfs") / output.removeprefix("/dbfs/") if kind == "dbfs" else Path(output).expanduser()
    return local.exists()


def refuse_existing(spark: Any, output: str, mode: str) -> None:
    if mode == "error" and output_exists(spark, output):
        raise DataError(f"output {output} exists; --mode overwrite replaces it, --mode append adds to it")


def write_output(scored: Any, output: str, mode: str) -> None:
    """Write the scored rows: a Parquet directory at a path, or a table (Delta with column mapping on Databricks,
    so the input's column names stay as they are; the session's default format elsewhere)."""
    from pyspark.errors import AnalysisException

    writer = scored.write.mode(MODES[mode])
    try:
        if output_kind(output) == "table":
            if on_databricks():
                writer = writer.format("delta").option("delta.columnMapping.mode", "name") \
                    .option("delta.minReaderVersion", "2").option("delta.minWriterVersion", "5")
            writer.saveAsTable(output)
        else:
            writer.parquet(_target(output))
    except AnalysisException as exc:
        reason = (str(exc).strip().splitlines() or ["refused"])[0]
        if "ALREADY_EXISTS" in reason or "already exists" in reason:
            raise DataError(f"output {output} exists; --mode overwrite replaces it, --mode append adds to it") from None
        raise


def read_back(spark: Any, output: str, scored_at: datetime, model: ScoringModel) -> Any:
    """This run's rows of the output (an appended output holds earlier runs' rows too)."""
    from pyspark.sql import functions as F

    table = spark.table(output) if output_kind(output) == "table" else spark.read.parquet(_target(output))
    return table.where((F.col(SCORED_AT_COL) == F.lit(scored_at).cast("timestamp"))
                       & (F.col(MODEL_VERSION_COL) == F.lit(model.version))
                       & (F.col(MODEL_NAME_COL) == F.lit(model.name)))


def prediction_summary(rows: Any) -> dict[str, float]:
    """count, min, mean and max of the prediction column (one aggregation)."""
    from pyspark.sql import functions as F

    col = F.col(PREDICTION_COL)
    row = rows.agg(F.count(col).alias("count"), F.min(col).alias("min"), F.mean(col).alias("mean"),
                   F.max(col).alias("max"), F.count(F.lit(1)).alias("rows")).collect()[0]
    out = {"rows_scored": float(row["rows"]), "prediction_count": float(row["count"])}
    for key in ("min", "mean", "max"):
        if row[key] is not None:
            out[f"prediction_{key}"] = float(row[key])
    return out


def log_scoring_run(args: Any, experiment_id: str, model: ScoringModel, engine: str,
                    summary: dict[str, float], scored_at: datetime) -> str:
    """One MLflow run whose role is the pipeline's result kind (`scoring`): the version, data and output as
    params, the rows scored and the prediction summary as metrics."""
    import mlflow

    tags = tracking.run_tags(args.dag_id, args.run_id, "scoring", engine, args.try_number)
    tags |= {"mlopsctl.output": args.output, "mlopsctl.model_name": model.name,
             "mlopsctl.model_version": model.version}
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{args.dag_id} {args.run_id}", tags=tags) as run:
        mlflow.log_params({"model_name": model.name, "model_version": model.version, "data": args.data,
                           "output": args.output, "mode": args.mode, "scored_at": scored_at.isoformat()})
        mlflow.log_metrics(summary)
    return run.info.run_id
