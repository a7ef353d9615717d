"""Reading a job's source data and preparing the training table: the source kinds (`source_kind`, pinned to
the CLI's copy in mlopsctl/datasources.py by tests/unit/test_data_sources.py), the CSV missing-value tokens,
validation (`DataError` for anything a retry cannot fix), typing (`prepare_training`), and the training
table's path, write and read. The table holds the raw input columns under their own names: the model
encodes and imputes them itself (`mlopsctl_jobs.model`).

What data is accepted and how it is cleaned: docs/data.md.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TARGET_COL = "__target__"
ROW_ID_COL = "__row_id__"


class DataError(Exception):
    """The input data cannot be used (retrying will not help)."""


def run_key(run_id: str) -> str:
    """A filesystem/Hadoop-safe, collision-free key for an Airflow run id (which contains ':' and '+')."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", run_id)[:120]
    digest = hashlib.sha1(run_id.encode("utf-8")).hexdigest()[:8]
    return f"{safe}-{digest}"


def training_path(work_dir: str, dag_id: str, run_id: str) -> str:
    """Where the training table of one Airflow run lives: <work_dir>/<dag_id>/<run key>/training.parquet."""
    return str(Path(work_dir) / dag_id / run_key(run_id) / "training.parquet")


#: Tokens read as missing in CSV sources: pandas' default ``na_values`` (``pandas._libs.parsers.STR_NA_VALUES``),
#: so a file reads here as it does in a notebook. R writes ``NA``, databases ``NULL``, Excel ``#N/A``.
NA_VALUES: tuple[str, ...] = (
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
)


#: what a ``--data`` value names, judged from its text alone. The CLI keeps its own copy (``data_kind`` in
#: mlopsctl/datasources.py: the jobs import nothing from mlopsctl); tests/unit/test_data_sources.py pins the two.
_URI_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")  # two letters at least: C:/ stays a local path
_IDENTIFIER = r"(?:[A-Za-z_][A-Za-z0-9_]*|`[^`]+`)"
_TABLE_RE = re.compile(rf"^{_IDENTIFIER}(?:\.{_IDENTIFIER}){{1,2}}$")
#: a last dotted part that makes ``name.ext`` a file name, not a ``schema.table``
FILE_EXTENSIONS = frozenset({"csv", "tsv", "txt", "json", "parquet", "pq", "orc", "avro", "xlsx", "xls", "gz", "zip"})


def source_kind(data: str) -> str:
    """``uri``, ``volume`` (/Volumes/...), ``workspace`` (/Workspace/...), ``dbfs`` (/dbfs/...), ``table``
    (``catalog.schema.table`` / ``schema.table``) or ``local`` (a path on this machine)."""
    if _URI_RE.match(data):
        return "uri"
    if data.startswith("/Volumes/"):
        return "volume"
    if data.startswith("/Workspace/"):
        return "workspace"
    if data.startswith("/dbfs/"):
        return "dbfs"
    if _TABLE_RE.match(data) and data.rsplit(".", 1)[-1].lower() not in FILE_EXTENSIONS:
        return "table"
    return "local"


def spark_path(data: str, kind: str) -> str:
    """A cluster path as ``spark.read`` takes it: the DBFS FUSE form as the ``dbfs:/`` URI; volumes and URIs
    as they are. (Workspace files are no Spark path: `read_workspace_file`.)"""
    if kind == "dbfs":
        return "dbfs:/" + data.removeprefix("/dbfs/")
    return data


def load_source(spark: Any, data: str | None, na_values: Sequence[str] | None = None) -> Any:
    """Read the raw source into a Spark DataFrame (what is accepted: docs/data.md)."""
    if not data:
        from sklearn.datasets import load_diabetes

        pdf = load_diabetes(as_frame=True).frame
        return spark.createDataFrame(pdf)
    kind = source_kind(data)
    if kind == "table" and Path(data).expanduser().exists():  # a local file or folder named like a table
        kind = "local"
    if kind == "table":
        return read_table(spark, data)
    if kind == "workspace":
        return read_workspace_file(spark, data, na_values)
    if kind != "local":
        return read_cluster_path(spark, data, kind, na_values)
    path = Path(data).expanduser()
    if not path.exists():
        if _is_table(spark, data):  # a one-part table name (`houses`) of the session's catalog
            return spark.table(data)
        raise DataError(f"data file not found: {data}")
    if path.is_dir():
        parquet_files = [p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in (".parquet", ".pq")]
        if not parquet_files:
            raise DataError(f"data directory {data} holds no .parquet files (expected a CSV/Parquet file or a Parquet directory)")
        return spark.read.parquet(str(path.resolve()))
    suffix = path.suffix.lower()
    if path.stat().st_size == 0:
        raise DataError(f"data file is empty: {data}")
    if suffix == ".csv":
        raw = spark.read.option("header", True).option("inferSchema", False).csv(str(path.resolve()))
        return type_csv_columns(raw, NA_VALUES if na_values is None else na_values)
    if suffix in (".parquet", ".pq"):
        return spark.read.parquet(str(path.resolve()))
    raise DataError(f"unsupported data format {suffix or '(no extension)'!r} for {data}: use a .csv or .parquet file")


def read_table(spark: Any, name: str) -> Any:
    """``spark.table(name)``, after checking the catalog has it (Connect would only fail at the first action)."""
    try:
        exists = bool(spark.catalog.tableExists(name))
    except Exception:  # noqa: BLE001 - an unknown catalog or schema: the table is not there either
        exists = False
    if not exists:
        raise DataError(
            f"table {name} not found (or not visible to the job's identity): give an existing table as "
            "catalog.schema.table, a /Volumes/... path or a URI"
        )
    return spark.table(name)


def read_cluster_path(spark: Any, data: str, kind: str, na_values: Sequence[str] | None = None) -> Any:
    """A URI, volume or DBFS path, read by Spark by its extension: ``.csv`` (typed like a local CSV),
    ``.parquet``/``.pq``, or none (a Parquet directory). Its schema is resolved here, so a path that is not
    there is a DataError now rather than a failure at the first aggregation."""
    from pyspark.errors import AnalysisException

    if kind == "dbfs" or data.lower().startswith("dbfs:"):
        print(f"warning: {data} is on DBFS, which Databricks serverless compute and standard access mode limit; "
              "a Unity Catalog volume path (/Volumes/...) is readable everywhere", file=sys.stderr, flush=True)
    path = spark_path(data, kind)
    name = path.rstrip("/").rsplit("/", 1)[-1]
    suffix = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if suffix not in ("csv", "parquet", "pq", ""):
        raise DataError(
            f"unsupported data format '.{suffix}' for {data}: use a .csv or .parquet file, or a Parquet directory"
        )
    try:  # a classic session fails in the reader already, a Connect session when the schema is asked for
        if suffix == "csv":
            raw = spark.read.option("header", True).option("inferSchema", False).csv(path)
        else:
            raw = spark.read.parquet(path)
        raw.columns  # noqa: B018 - resolves the schema (one analysis request, no pass over the data)
    except AnalysisException as exc:
        reason = (str(exc).strip().splitlines() or ["unreadable"])[0]
        raise DataError(f"cannot read {data}: {reason}") from None
    if suffix == "csv":
        return type_csv_columns(raw, NA_VALUES if na_values is None else na_values)
    return raw


def read_workspace_file(spark: Any, data: str, na_values: Sequence[str] | None = None) -> Any:
    """A workspace file (``/Workspace/...``) read where the job's Python runs, with pandas, then handed to
    Spark with ``createDataFrame``: Databricks serverless compute does not let Spark's executors read
    workspace files (``file:/Workspace/...``), while the job's own process reads them on every compute.
    A CSV is read as text, like `read_cluster_path` reads one, and typed by `type_csv_columns`; a
    ``.parquet``/``.pq`` file or a Parquet directory keeps its types. Workspace files are small (the
    workspace caps a file's size), so the copy through the driver is cheap."""
    import pandas as pd

    path = Path(data)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq", ""):
        raise DataError(
            f"unsupported data format '{suffix}' for {data}: use a .csv or .parquet file, or a Parquet directory"
        )
    if not path.exists():
        raise DataError(f"cannot read {data}: no such workspace file or folder (or the job's identity cannot see it)")
    try:
        if suffix == ".csv":
            if path.is_file() and path.stat().st_size == 0:
                raise DataError(f"data file is empty: {data}")
            pdf = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
        else:
            pdf = pd.read_parquet(path)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - a malformed file: pandas' or pyarrow's words say why
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(f"cannot read {data}: {reason}") from None
    if suffix != ".csv":
        return spark.createDataFrame(pdf)
    if pdf.columns.empty:
        raise DataError(f"data has no columns: {data}")
    from pyspark.sql import types as T

    schema = T.StructType([T.StructField(str(c), T.StringType()) for c in pdf.columns])
    raw = spark.createDataFrame(pdf, schema)
    return type_csv_columns(raw, NA_VALUES if na_values is None else na_values)


def type_csv_columns(df: Any, na_values: Sequence[str]) -> Any:
    """CSV columns read as text -> missing-value tokens become null, and a column becomes double when every
    value left casts to a number (one aggregation pass over the data decides every column)."""
    from pyspark.sql import functions as F

    tokens = sorted({"", *na_values})
    names = list(df.columns)
    if not names:
        return df
    cleaned = df.select(*[
        F.when(F.trim(F.col(_quoted(c))).isin(tokens), F.lit(None)).otherwise(F.col(_quoted(c))).alias(c) for c in names
    ])
    as_number = {c: F.expr(f"try_cast({_quoted(c)} AS DOUBLE)") for c in names}
    text = cleaned.agg(*[
        F.count_if(F.col(_quoted(c)).isNotNull() & as_number[c].isNull()).alias(f"t{i}") for i, c in enumerate(names)
    ]).collect()[0]
    return cleaned.select(*[
        (as_number[c] if text[f"t{i}"] == 0 else F.col(_quoted(c))).alias(c) for i, c in enumerate(names)
    ])


def _quoted(name: str) -> str:
    """A column name as a Spark SQL identifier: backticks around it, inner backticks doubled."""
    return "`" + str(name).replace("`", "``") + "`"


def _is_table(spark: Any, name: str) -> bool:
    """True when `name` looks like a table identifier and the session's catalog has it."""
    if not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*){0,2}", name) or name.lower().endswith((".csv", ".parquet", ".pq")):
        return False
    try:
        return bool(spark.catalog.tableExists(name))
    except Exception:  # noqa: BLE001 - unknown catalog/schema: not a table
        return False


@dataclass
class PrepareReport:
    rows_in: int = 0
    rows_out: int = 0
    dropped_null_target: int = 0
    dropped_all_null_columns: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)  # the input columns kept, in source order
    text_columns: list[str] = field(default_factory=list)  # those held as string (the rest are double)

    def lines(self) -> list[str]:
        out = [
            f"rows read: {self.rows_in}, rows kept: {self.rows_out} (dropped {self.dropped_null_target} with a null target)",
            f"input columns ({len(self.columns)}): {', '.join(self.columns)}",
        ]
        if self.text_columns:
            out.append(f"text columns ({len(self.text_columns)}): {', '.join(self.text_columns)}")
        if self.dropped_all_null_columns:
            out.append(f"dropped all-null columns: {', '.join(self.dropped_all_null_columns)}")
        return out


def prepare_training(df: Any, target: str) -> tuple[Any, PrepareReport]:
    """Validate a raw Spark DataFrame and make it the typed training table: the rows with a target, every
    usable input column under its own name (numbers as double, anything else as string, nulls kept), the
    target as double in ``TARGET_COL`` and the source row order in ``ROW_ID_COL`` (the rules: docs/data.md).
    Encoding and imputation are the model's first step (`mlopsctl_jobs.model`), fitted on the training split."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    report = PrepareReport()
    columns = list(df.columns)
    if not columns:
        raise DataError("data has no columns (is the file empty?)")
    if target not in columns:
        shown = ", ".join(columns[:50]) + (" ..." if len(columns) > 50 else "")
        raise DataError(f"target column {target!r} not found; columns are: {shown}")
    reserved = [c for c in columns if c != target and c.lower() in (TARGET_COL, ROW_ID_COL)]
    if reserved:
        raise DataError(f"column name {reserved[0]!r} is reserved for the training table: rename that column")

    # numbers become double in the training table; every other type is text
    numeric_types = (T.ByteType, T.ShortType, T.IntegerType, T.LongType, T.FloatType, T.DoubleType, T.DecimalType)
    dtypes = {f.name: f.dataType for f in df.schema.fields}

    df = df.withColumn(ROW_ID_COL, F.monotonically_increasing_id())
    feature_cols = [c for c in columns if c != target]

    # target: numeric, or strings that all parse as numbers
    tcol = F.col(_quoted(target))
    if isinstance(dtypes[target], numeric_types):
        tvalue = tcol.cast("double")
        bad_target = None
    elif isinstance(dtypes[target], T.StringType):
        tvalue = F.expr(f"try_cast({_quoted(target)} AS DOUBLE)")
        bad_target = tcol.isNotNull() & tvalue.isNull()
    else:
        tvalue = None
        bad_target = None
    if tvalue is not None:
        tvalue = F.when(F.isnan(tvalue), None).otherwise(tvalue)

    def _value(c: str) -> Any:
        """The column as the training table holds it: double (NaN as null) or string."""
        col = F.col(_quoted(c))
        if isinstance(dtypes[c], numeric_types):
            col = col.cast("double")
            return F.when(F.isnan(col), None).otherwise(col)
        return col.cast("string")

    # ONE pass over the data: row counts, the target check, and each input column's non-null count over the
    # rows whose target is kept. Every Spark action costs a job on the cluster and a round trip.
    stats = [F.count(F.lit(1)).alias("rows_in")]
    if tvalue is not None:
        kept_row = tvalue.isNotNull()
        stats.append(F.count(tvalue).alias("rows_out"))
        if bad_target is not None:
            stats.append(F.count_if(bad_target).alias("bad_target"))
        stats += [F.count(F.when(kept_row, _value(c))).alias(f"n{i}") for i, c in enumerate(feature_cols)]
    row = df.agg(*stats).collect()[0]

    report.rows_in = int(row["rows_in"])
    if report.rows_in == 0:
        raise DataError("data has no rows")
    if tvalue is None:
        raise DataError(f"target column {target!r} is not numeric (type {dtypes[target].simpleString()})")
    if bad_target is not None and row["bad_target"]:
        bad = df.filter(bad_target).select(tcol).limit(3).collect()  # the error message's examples only
        examples = ", ".join(repr(r[0]) for r in bad)
        raise DataError(f"target column {target!r} is not numeric (values such as {examples})")
    report.rows_out = int(row["rows_out"])
    report.dropped_null_target = report.rows_in - report.rows_out
    if report.rows_out == 0:
        raise DataError(f"target column {target!r} has no values (all null/NaN)")
    if not feature_cols:
        raise DataError(f"data has only the target column {target!r}: no features to train on")

    usable = []
    for i, c in enumerate(feature_cols):
        if row[f"n{i}"] == 0:
            report.dropped_all_null_columns.append(c)
        else:
            usable.append(c)
            if not isinstance(dtypes[c], numeric_types):
                report.text_columns.append(c)
    if not usable:
        raise DataError(
            "every feature column is entirely null/NaN: " + ", ".join(report.dropped_all_null_columns)
        )
    report.columns = usable
    table = df.withColumn(TARGET_COL, tvalue).filter(F.col(TARGET_COL).isNotNull())
    return table.select(F.col(ROW_ID_COL), *[_value(c).alias(c) for c in usable], F.col(TARGET_COL)), report


def prepare_report_path(training: str) -> str:
    """Where preprocess_data leaves its row counts for the jobs after it: beside the training table."""
    return str(Path(training).with_name("prepare_report.parquet"))


def write_prepare_report(spark: Any, report: PrepareReport, training: str) -> None:
    """The row counts of `prepare_training`, written through Spark (any path the cluster can write)."""
    row = [(report.rows_in, report.rows_out, report.dropped_null_target)]
    frame = spark.createDataFrame(row, "rows_in long, rows_out long, n_rows_dropped long")
    frame.coalesce(1).write.mode("overwrite").parquet(prepare_report_path(training))


def read_rows_dropped(training: str, spark: Any | None = None) -> int | None:
    """``n_rows_dropped`` of this run's preprocess_data (through Spark if given, else pandas, as is a finished
    report on this machine's disk); None if absent."""
    path = prepare_report_path(training)
    try:
        if spark is not None and not _local_table(path):
            rows = spark.read.parquet(path).collect()
            return int(rows[0]["n_rows_dropped"]) if rows else None
        import pandas as pd

        if not Path(path).exists():
            return None
        return int(pd.read_parquet(path)["n_rows_dropped"].iloc[0])
    except Exception:  # noqa: BLE001 - a training table written without a report: nothing to log
        return None


def write_training(df: Any, path: str) -> None:
    """Write the training table as Parquet, a file per partition of the source: every core types and writes
    its share. The readers put the rows back in source order by ``__row_id__`` (`split_xy`)."""
    df.write.mode("overwrite").parquet(path)


def _missing_table(path: str) -> DataError:
    return DataError(f"training table not found at {path}: did preprocess_data run for this Airflow run?")


def load_training(path: str) -> tuple[Any, Any]:
    """Read the training table written by preprocess_data -> (X DataFrame, y Series), source row order."""
    import pandas as pd

    if not Path(path).exists():
        raise _missing_table(path)
    return split_xy(pd.read_parquet(path))


def read_training(spark: Any, path: str) -> tuple[Any, Any]:
    """The training table -> (X, y), source row order: read straight from the disk where it is a finished
    table on this machine (the local stack: Parquet to pandas in one step, no trip through the Spark server),
    else through Spark (any path the cluster can read)."""
    from pyspark.errors import AnalysisException

    if _local_table(path):
        return load_training(path)
    try:
        pdf = spark.read.parquet(path).toPandas()
    except AnalysisException as exc:
        if exc.getCondition() == "PATH_NOT_FOUND":
            raise _missing_table(path) from None
        raise
    return split_xy(pdf)


def _local_table(path: str) -> bool:
    """True when `path` is a table Spark finished writing on this machine's own disk."""
    return source_kind(path) == "local" and (Path(path) / "_SUCCESS").is_file()


def is_numeric(dtype: Any) -> bool:
    """A pandas column of numbers (the training table's double columns); any other column is text."""
    import pandas as pd

    return pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)


def split_xy(pdf: Any) -> tuple[Any, Any]:
    """Rows of the training table (however they were read: pandas, ``toPandas``, Arrow batches) -> (X, y) in
    source row order. X keeps the input columns under their own names: numbers as float64 (missing: NaN),
    text as Python strings in object columns (missing: NaN, whatever null the reader made of it, so the
    encoder sees one kind of missing value)."""
    import numpy as np

    if ROW_ID_COL in pdf.columns:
        pdf = pdf.sort_values(ROW_ID_COL, kind="mergesort").drop(columns=[ROW_ID_COL])
    pdf = pdf.reset_index(drop=True)
    y = pdf[TARGET_COL].astype("float64")
    X = pdf.drop(columns=[TARGET_COL])
    for name in X.columns:
        col = X[name]
        X[name] = col.astype("float64") if is_numeric(col.dtype) else col.astype(object).where(col.notna(), np.nan)
    return X, y
