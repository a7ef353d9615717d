"""Shared, Airflow-free core of the mlopsctl pipelines: data loading/validation, the random-forest
model, k-fold grid evaluation, metrics, and MLflow logging.

Used by every job in this folder. The Python workers of the Spark grid import it too: a Spark Connect
session receives it with ``addArtifacts`` (see `ship_module_to_workers`), ``spark-submit`` with
``--py-files``, and a Databricks task from the jobs' wheel.
Nothing here imports Airflow. Only the Spark Connect API is used (no SparkContext or RDD), so the
jobs run unchanged as Connect clients, under ``spark-submit`` and as Databricks tasks. Heavy
libraries (pyspark, sklearn, pandas, mlflow, matplotlib) are imported inside the functions that need
them, so Python workers running :func:`evaluate_task_batches` only pay for what they use.

The data rules (what a source may be, missing values, validation, cleaning, column names) are
described in docs/data.md.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TARGET_COL = "__target__"
ROW_ID_COL = "__row_id__"
# Exit code for failures that retrying cannot fix (bad data, every grid point failed).
EXIT_NO_RETRY = 3
ERROR_PREFIX = "mlopsctl-error:"
DEFAULT_TRACKING_URI = "http://127.0.0.1:5000"
DEFAULT_REGISTERED_MODEL = "mlopsctl-random-forest"


class DataError(Exception):
    """The input data cannot be used (retrying will not help)."""


class GridError(Exception):
    """Every grid point failed (retrying will not help)."""


# ----------------------------------------------------------------------------------------------
# paths and names
# ----------------------------------------------------------------------------------------------
def run_key(run_id: str) -> str:
    """A filesystem/Hadoop-safe, collision-free key for an Airflow run id (which contains ':' and '+')."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", run_id)[:120]
    digest = hashlib.sha1(run_id.encode("utf-8")).hexdigest()[:8]
    return f"{safe}-{digest}"


def features_path(work_dir: str, dag_id: str, run_id: str) -> str:
    """Where the features table of one Airflow run lives: <work_dir>/<dag_id>/<run key>/features.parquet."""
    return str(Path(work_dir) / dag_id / run_key(run_id) / "features.parquet")


def experiment_name(prefix: str, dag_id: str) -> str:
    return f"{prefix.rstrip('/')}/{dag_id}"


def sanitize_columns(names: Sequence[str], reserved: Iterable[str] = (TARGET_COL, ROW_ID_COL)) -> list[str]:
    """Map column names to unique ``[A-Za-z0-9_]`` names (stable: same input, same output)."""
    taken = set(reserved)
    out: list[str] = []
    for name in names:
        base = re.sub(r"[^A-Za-z0-9_]", "_", str(name)) or "col"
        if base[0].isdigit():
            base = f"c_{base}"
        candidate, i = base, 1
        while candidate in taken:
            i += 1
            candidate = f"{base}_{i}"
        taken.add(candidate)
        out.append(candidate)
    return out


# ----------------------------------------------------------------------------------------------
# loading + preparing (Spark)
# ----------------------------------------------------------------------------------------------
#: Tokens read as missing in CSV sources: pandas' default ``na_values`` (``pandas._libs.parsers.STR_NA_VALUES``),
#: so a file reads here as it does in a notebook. R writes ``NA``, databases ``NULL``, Excel ``#N/A``.
NA_VALUES: tuple[str, ...] = (
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
)


def na_values_arg(text: str) -> tuple[str, ...] | None:
    """argparse type of --na-values: comma-separated tokens; empty = the default `NA_VALUES`."""
    tokens = tuple(t.strip() for t in text.split(",") if t.strip())
    return tokens or None


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
    """A cluster path as ``spark.read`` takes it: workspace files through the driver's file system
    (``file:/Workspace/...``), the DBFS FUSE form as the ``dbfs:/`` URI; volumes and URIs as they are."""
    if kind == "workspace":
        return f"file:{data}"
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
    """A URI, volume, workspace or DBFS path, read by its extension: ``.csv`` (typed like a local CSV),
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
    encoded_columns: dict[str, int] = field(default_factory=dict)  # column -> number of categories
    imputed_columns: dict[str, float] = field(default_factory=dict)  # column -> median used
    features: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [
            f"rows read: {self.rows_in}, rows kept: {self.rows_out} (dropped {self.dropped_null_target} with a null target)",
            f"features ({len(self.features)}): {', '.join(self.features)}",
        ]
        if self.dropped_all_null_columns:
            out.append(f"dropped all-null columns: {', '.join(self.dropped_all_null_columns)}")
        if self.encoded_columns:
            out.append("ordinal-encoded: " + ", ".join(f"{k} ({v} categories)" for k, v in self.encoded_columns.items()))
        if self.imputed_columns:
            out.append("median-imputed: " + ", ".join(f"{k}={v:g}" for k, v in self.imputed_columns.items()))
        return out


def prepare_features(df: Any, target: str) -> tuple[Any, PrepareReport]:
    """Validate and clean a raw Spark DataFrame into the features table (the rules: docs/data.md)."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    report = PrepareReport()
    columns = list(df.columns)
    if not columns:
        raise DataError("data has no columns (is the file empty?)")
    if target not in columns:
        shown = ", ".join(columns[:50]) + (" ..." if len(columns) > 50 else "")
        raise DataError(f"target column {target!r} not found; columns are: {shown}")

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
        col = F.col(_quoted(c))
        if isinstance(dtypes[c], (T.FloatType, T.DoubleType)):
            return F.when(F.isnan(col), None).otherwise(col)
        return col

    # ONE pass over the data: row counts, the target check, and per feature (over the rows whose target
    # is kept) its non-null count and its median (numeric) or its sorted categories (anything else).
    # Every Spark action costs a job on the cluster and a round trip; the data is read once.
    numeric = [c for c in feature_cols if isinstance(dtypes[c], numeric_types)]
    stats = [F.count(F.lit(1)).alias("rows_in")]
    if tvalue is not None:
        kept_row = tvalue.isNotNull()
        stats.append(F.count(tvalue).alias("rows_out"))
        if bad_target is not None:
            stats.append(F.count_if(bad_target).alias("bad_target"))
        for i, c in enumerate(feature_cols):
            stats.append(F.count(F.when(kept_row, _value(c))).alias(f"n{i}"))
            if c in numeric:
                stats.append(F.median(F.when(kept_row, _value(c).cast("double"))).alias(f"m{i}"))
            else:
                as_str = F.when(kept_row, F.col(_quoted(c)).cast("string"))
                stats.append(F.collect_set(as_str).alias(f"c{i}"))
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
    df = df.withColumn(TARGET_COL, tvalue).filter(F.col(TARGET_COL).isNotNull())

    if not feature_cols:
        raise DataError(f"data has only the target column {target!r}: no features to train on")

    usable = []
    for i, c in enumerate(feature_cols):
        if row[f"n{i}"] == 0:
            report.dropped_all_null_columns.append(c)
        else:
            usable.append(c)
    if not usable:
        raise DataError(
            "every feature column is entirely null/NaN: " + ", ".join(report.dropped_all_null_columns)
        )

    new_names = sanitize_columns(usable)
    index = {c: i for i, c in enumerate(feature_cols)}
    selects = [F.col(ROW_ID_COL)]
    for c, new in zip(usable, new_names):
        i = index[c]
        if c in numeric:
            median = float(row[f"m{i}"])
            if row[f"n{i}"] < report.rows_out:
                report.imputed_columns[new] = median
            selects.append(F.coalesce(_value(c).cast("double"), F.lit(median)).alias(new))
        else:
            as_str = F.col(_quoted(c)).cast("string")
            categories = sorted(row[f"c{i}"])
            report.encoded_columns[new] = len(categories)
            mapping = F.create_map(*[x for j, v in enumerate(categories) for x in (F.lit(v), F.lit(float(j)))])
            selects.append(F.coalesce(mapping[as_str], F.lit(-1.0)).alias(new))
    selects.append(F.col(TARGET_COL))
    report.features = new_names
    return df.select(*selects), report


def prepare_report_path(features: str) -> str:
    """Where preprocess_data leaves its row counts for the jobs after it: beside the features table."""
    return str(Path(features).with_name("prepare_report.parquet"))


def write_prepare_report(spark: Any, report: PrepareReport, features: str) -> None:
    """The row counts of `prepare_features`, written through Spark (any path the cluster can write)."""
    row = [(report.rows_in, report.rows_out, report.dropped_null_target)]
    frame = spark.createDataFrame(row, "rows_in long, rows_out long, n_rows_dropped long")
    frame.coalesce(1).write.mode("overwrite").parquet(prepare_report_path(features))


def read_rows_dropped(features: str, spark: Any | None = None) -> int | None:
    """``n_rows_dropped`` of this run's preprocess_data (through Spark if given, else pandas); None if absent."""
    path = prepare_report_path(features)
    try:
        if spark is not None:
            rows = spark.read.parquet(path).collect()
            return int(rows[0]["n_rows_dropped"]) if rows else None
        import pandas as pd

        if not Path(path).exists():
            return None
        return int(pd.read_parquet(path)["n_rows_dropped"].iloc[0])
    except Exception:  # noqa: BLE001 - a features table written without a report: nothing to log
        return None


def write_features(df: Any, path: str) -> None:
    """Write the features table as one Parquet file set (single partition keeps the row order)."""
    df.coalesce(1).write.mode("overwrite").parquet(path)


# ----------------------------------------------------------------------------------------------
# model + metrics (pandas / scikit-learn)
# ----------------------------------------------------------------------------------------------
def load_features(path: str) -> tuple[Any, Any]:
    """Read the features table written by preprocess_data -> (X DataFrame, y Series), source row order."""
    import pandas as pd

    if not Path(path).exists():
        raise DataError(f"features table not found at {path}: did preprocess_data run for this Airflow run?")
    pdf = pd.read_parquet(path)
    return split_xy(pdf)


def read_features(spark: Any, path: str) -> tuple[Any, Any]:
    """The features table read through Spark (any path the cluster can read) -> (X, y), source row order."""
    from pyspark.errors import AnalysisException

    try:
        pdf = spark.read.parquet(path).toPandas()
    except AnalysisException as exc:
        if exc.getCondition() == "PATH_NOT_FOUND":
            raise DataError(f"features table not found at {path}: did preprocess_data run for this Airflow run?") from None
        raise
    return split_xy(pdf)


def split_xy(pdf: Any) -> tuple[Any, Any]:
    if ROW_ID_COL in pdf.columns:
        pdf = pdf.sort_values(ROW_ID_COL, kind="mergesort").drop(columns=[ROW_ID_COL])
    pdf = pdf.reset_index(drop=True)
    y = pdf[TARGET_COL].astype("float64")
    X = pdf.drop(columns=[TARGET_COL]).astype("float64")
    return X, y


def holdout_split(X: Any, y: Any, test_size: float, random_state: int) -> tuple[Any, Any, Any, Any]:
    from sklearn.model_selection import train_test_split

    if len(X) < 4:
        raise DataError(f"too few rows to split for evaluation ({len(X)}); need at least 4")
    return train_test_split(X, y, test_size=test_size, random_state=random_state, shuffle=True)


def import_sklearn() -> None:
    """Import the scikit-learn modules the model code uses (they are otherwise imported on first use)."""
    import sklearn.ensemble
    import sklearn.metrics
    import sklearn.model_selection  # noqa: F401


def make_model(max_depth: int, n_estimators: int, random_state: int, n_jobs: int = 1) -> Any:
    from sklearn.ensemble import RandomForestRegressor

    return RandomForestRegressor(
        max_depth=max_depth, n_estimators=n_estimators, random_state=random_state, n_jobs=n_jobs
    )


def train_model(X: Any, y: Any, max_depth: int, n_estimators: int, random_state: int, n_jobs: int = 1) -> Any:
    model = make_model(max_depth, n_estimators, random_state, n_jobs)
    model.fit(X, y)
    return model


def regression_metrics(y_true: Any, y_pred: Any) -> dict[str, float]:
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    return {
        "rmse": float(math.sqrt(mean_squared_error(y_true, y_pred))),
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "r2": float(r2_score(y_true, y_pred)),
    }


def evaluate_model(model: Any, X: Any, y: Any) -> dict[str, float]:
    return regression_metrics(y, model.predict(X))


# ----------------------------------------------------------------------------------------------
# grid search: the same evaluation function whether joblib or Spark executors run it
# ----------------------------------------------------------------------------------------------
def grid_points(max_depths: Sequence[int], n_estimators: Sequence[int]) -> list[tuple[int, int]]:
    return [(int(d), int(n)) for d in max_depths for n in n_estimators]


def fold_indices(n_rows: int, cv: int, random_state: int) -> list[tuple[Any, Any]]:
    from sklearn.model_selection import KFold

    if n_rows < cv:
        raise DataError(f"too few training rows ({n_rows}) for {cv}-fold cross-validation")
    return list(KFold(n_splits=cv, shuffle=True, random_state=random_state).split(range(n_rows)))


def evaluate_fold(
    X: Any, y: Any, max_depth: int, n_estimators: int, fold: int, train_idx: Any, test_idx: Any, random_state: int
) -> dict[str, Any]:
    """Fit one grid point on one fold; never raises (errors are returned, so other points survive)."""
    out: dict[str, Any] = {"max_depth": max_depth, "n_estimators": n_estimators, "fold": fold}
    try:
        model = train_model(X.iloc[train_idx], y.iloc[train_idx], max_depth, n_estimators, random_state)
        m = evaluate_model(model, X.iloc[test_idx], y.iloc[test_idx])
        out.update(rmse=m["rmse"], r2=m["r2"], error=None)
    except Exception as exc:  # noqa: BLE001 - recorded per grid point
        out.update(rmse=None, r2=None, error=f"{type(exc).__name__}: {exc}"[:500])
    return out


@dataclass
class PointResult:
    max_depth: int
    n_estimators: int
    cv_rmse_mean: float | None = None
    cv_rmse_std: float | None = None
    cv_r2_mean: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def aggregate(points: Sequence[tuple[int, int]], fold_results: Iterable[dict[str, Any]]) -> list[PointResult]:
    """Fold results -> one PointResult per grid point, in grid order (a point fails if any fold failed)."""
    import numpy as np

    by_point: dict[tuple[int, int], list[dict[str, Any]]] = {p: [] for p in points}
    for r in fold_results:
        by_point[(r["max_depth"], r["n_estimators"])].append(r)
    out = []
    for p in points:
        rs = sorted(by_point[p], key=lambda r: r["fold"])
        errors = [r["error"] for r in rs if r["error"]]
        if errors or not rs:
            out.append(PointResult(p[0], p[1], error=errors[0] if errors else "no fold results"))
            continue
        rmse = np.array([r["rmse"] for r in rs], dtype="float64")
        r2 = np.array([r["r2"] for r in rs], dtype="float64")
        out.append(
            PointResult(p[0], p[1], float(rmse.mean()), float(rmse.std()), float(r2.mean()))
        )
    return out


def choose_best(results: Sequence[PointResult]) -> PointResult:
    ok = [r for r in results if r.ok]
    if not ok:
        first = results[0].error if results else "empty grid"
        raise GridError(f"all {len(results)} grid points failed; first error: {first}")
    # ties broken by grid order (min is stable)
    return min(ok, key=lambda r: r.cv_rmse_mean)


def grid_tasks(points: Sequence[tuple[int, int]], folds: Sequence[tuple[Any, Any]]) -> list[tuple[int, int, int]]:
    """Every (max_depth, n_estimators, fold), the costliest fits first.

    A forest's fit grows with its tree count times its depth, and a pool of workers that takes tasks in list
    order finishes together only if the short ones come last (longest-processing-time-first scheduling):
    in grid order the deepest, largest forests would run last, one worker idle while another finishes them.
    Ties keep grid order; the order changes no result (`aggregate` groups by point)."""
    tasks = [(d, n, k) for (d, n) in points for k in range(len(folds))]
    return sorted(tasks, key=lambda t: -(t[0] * t[1]))


def run_grid_joblib(
    X: Any, y: Any, points: Sequence[tuple[int, int]], cv: int, random_state: int, n_jobs: int = -1
) -> list[PointResult]:
    """Evaluate every (point, fold) with joblib, in threads of this process.

    scikit-learn builds and applies its trees without the GIL (RandomForest's own ``n_jobs`` uses threads
    for that reason), so threads fit in parallel with no worker processes to start, no copy of the data per
    worker, and nothing left to stop afterwards, where worker processes (joblib's default) cost each search
    their start-up for the same results (measured in docs/architecture.md)."""
    from joblib import Parallel, delayed

    folds = fold_indices(len(X), cv, random_state)
    results = Parallel(n_jobs=n_jobs, prefer="threads")(
        delayed(evaluate_fold)(X, y, d, n, k, folds[k][0], folds[k][1], random_state)
        for (d, n, k) in grid_tasks(points, folds)
    )
    return aggregate(points, results)


#: One (grid point, fold) fit, as `evaluate_task_batches` returns it to Spark.
FOLD_RESULT_SCHEMA = "max_depth long, n_estimators long, fold long, rmse double, r2 double, error string"
TASK_COL = "__task__"


def evaluate_task_batches(
    batches: Iterable[Any], tasks: Sequence[tuple[int, int, int]], cv: int, random_state: int
) -> Iterable[Any]:
    """The ``mapInPandas`` function of the Spark grid: one partition holds one task id, joined to every
    training row (``TASK_COL``, ``ROW_ID_COL``, the features and ``TARGET_COL``), as Arrow batches.

    It rebuilds the training frame in its original row order, recomputes the same folds the driver would
    (``fold_indices`` is deterministic), and fits each task's (max_depth, n_estimators, fold) with
    `evaluate_fold`, which records errors instead of raising, so one failed point spares the others.
    """
    import pandas as pd

    frames = list(batches)
    if not frames:
        return
    rows = pd.concat(frames, ignore_index=True)
    for task_id, part in rows.groupby(TASK_COL, sort=True):
        X, y = split_xy(part.drop(columns=[TASK_COL]))
        folds = fold_indices(len(X), cv, random_state)
        d, n, k = tasks[int(task_id)]
        yield pd.DataFrame([evaluate_fold(X, y, d, n, k, folds[k][0], folds[k][1], random_state)])


# ----------------------------------------------------------------------------------------------
# MLflow
# ----------------------------------------------------------------------------------------------
def quiet_mlflow_env() -> None:
    """Set before MLflow is imported: no progress bars in task logs, and no usage telemetry.

    MLflow's telemetry client sets and unsets ``_MLFLOW_TELEMETRY_SESSION_ID`` in ``os.environ`` from its
    own thread; a request being made at that moment iterates ``os.environ`` (for proxy settings) and fails
    with KeyError, which failed whole tasks. A batch job has no use for it either."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def warn_if_tracking_unreachable(tracking_uri: str, timeout: float = 5.0) -> bool:
    """One clear log line when an http(s) tracking server does not answer at all: MLflow's own client then
    retries silently for minutes before failing. True if it answered (any HTTP status counts)."""
    from urllib.error import HTTPError, URLError
    from urllib.parse import urlparse
    from urllib.request import urlopen

    parsed = urlparse(tracking_uri)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return True
    where = f"{parsed.scheme}://{parsed.hostname}" + (f":{parsed.port}" if parsed.port else "")  # no user:pw@
    try:
        urlopen(f"{where}/health", timeout=timeout).close()  # http(s) only, checked above
    except HTTPError:
        return True
    except (URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"mlopsctl: MLflow tracking server {where} is not reachable ({reason}); MLflow retries its "
              "requests for a few minutes, then this task fails (and Airflow retries it).", flush=True)
        return False
    return True


def setup_mlflow(tracking_uri: str, experiment: str, registry_uri: str | None = None) -> str:
    """Point MLflow at the tracking server and return the experiment id (created if missing)."""
    quiet_mlflow_env()
    warn_if_tracking_unreachable(tracking_uri)
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    if registry_uri:
        mlflow.set_registry_uri(registry_uri)
    client = mlflow.MlflowClient()
    last_error: Exception | None = None
    for _ in range(3):  # two runs may create the experiment at the same time
        exp = client.get_experiment_by_name(experiment)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                client.restore_experiment(exp.experiment_id)
            return exp.experiment_id
        try:
            return client.create_experiment(experiment)
        except Exception as exc:  # noqa: BLE001 - RESOURCE_ALREADY_EXISTS race; re-read
            last_error = exc
    raise RuntimeError(f"could not get or create MLflow experiment {experiment!r}: {last_error}")


@contextmanager
def beside(fn: Callable[..., Any], *args: Any, name: str, **kwargs: Any) -> Iterator[Future]:
    """Run ``fn`` in a thread beside the ``with`` block, which gets its future. A block that ends normally
    waits for the thread; one that raises does not, so a failing job exits at once: one that fails on its data,
    say, while MLflow's client in the thread still retries an unreachable tracking server."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
    future = pool.submit(fn, *args, **kwargs)
    try:
        yield future
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def prepare_tracking(args: argparse.Namespace, *, figures: bool = False) -> str:
    """Import what logging a model (and, with ``figures``, a matplotlib figure) needs, get or create the
    run's experiment and close the runs of a crashed earlier try; returns the experiment id.

    Nothing here depends on the model, so the jobs run it in a thread beside their Spark read, fit or
    search: MLflow's import alone takes seconds of a job's critical path otherwise. Callers import
    scikit-learn first (`import_sklearn`), so the two threads never import the same packages at once."""
    quiet_mlflow_env()
    import mlflow.sklearn  # noqa: F401 - used by `log_model`
    from mlflow.models import infer_signature  # noqa: F401

    if figures:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot  # used by `heatmap_figure`; imported here, off the critical path
    exp_id = setup_mlflow(tracking_uri(args), experiment_name(args.experiment_prefix, args.dag_id), args.registry_uri)
    close_stale_runs(exp_id, args.run_id)
    return exp_id


def close_stale_runs(experiment_id: str, dag_run_id: str) -> list[str]:
    """Mark runs of an earlier, crashed try of the same Airflow run (still RUNNING) as FAILED.

    A retried task then leaves exactly one live run per Airflow run; returns the ids it closed.
    """
    import mlflow

    client = mlflow.MlflowClient()
    stale = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`airflow.dag_run_id` = '{dag_run_id.replace(chr(39), '')}' and attributes.status = 'RUNNING'",
    )
    for run in stale:
        client.set_tag(run.info.run_id, "mlopsctl.error", "superseded by a retry of the Airflow task")
        client.set_terminated(run.info.run_id, status="FAILED")
    return [r.info.run_id for r in stale]


def run_tags(dag_id: str, run_id: str, role: str, engine: str, try_number: int | None = None) -> dict[str, str]:
    tags = {
        "airflow.dag_id": dag_id,
        "airflow.dag_run_id": run_id,
        "mlopsctl.pipeline": dag_id,
        "mlopsctl.role": role,
        "mlopsctl.engine": engine,
    }
    if try_number is not None:
        tags["airflow.try_number"] = str(try_number)
    return tags


def model_requirements() -> list[str]:
    """Pinned requirements of the logged model: the versions this job trained with."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for dist in ("mlflow", "scikit-learn", "cloudpickle", "numpy", "pandas", "scipy"):
        try:
            out.append(f"{dist}=={version(dist)}")
        except PackageNotFoundError:
            continue
    return out


def log_model(
    model: Any, X_sample: Any, register_as: str | None, run_id: str, hyperparams: dict[str, Any], dag_run_id: str
) -> tuple[str | None, str | None]:
    """Log the sklearn model (cloudpickle; signature + input example); register it when asked.

    Returns (registered name, version) or (None, None). Must be called inside an active run.
    """
    import mlflow
    from mlflow.models import infer_signature

    example = X_sample.head(5)
    signature = infer_signature(example, model.predict(example))
    info = mlflow.sklearn.log_model(
        model,
        name="model",
        serialization_format="cloudpickle",
        signature=signature,
        input_example=example,
        registered_model_name=register_as or None,
        pip_requirements=model_requirements(),  # explicit: skips MLflow's slow requirement inference
    )
    if not register_as:
        return None, None
    version = str(info.registered_model_version) if info.registered_model_version is not None else None
    if version is None:
        return register_as, None
    client = mlflow.MlflowClient()
    tags = {"mlflow_run_id": run_id, "airflow.dag_run_id": dag_run_id, **{k: str(v) for k, v in hyperparams.items()}}
    for k, v in tags.items():
        client.set_model_version_tag(register_as, version, k, v)
    mlflow.set_tags({"mlopsctl.registered_model_name": register_as, "mlopsctl.registered_model_version": version})
    return register_as, version


def heatmap_figure(results: Sequence[PointResult]) -> Any:
    """max_depth x n_estimators -> mean CV rmse (failed points left blank)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    depths = sorted({r.max_depth for r in results})
    trees = sorted({r.n_estimators for r in results})
    grid = np.full((len(depths), len(trees)), np.nan)
    for r in results:
        if r.ok:
            grid[depths.index(r.max_depth), trees.index(r.n_estimators)] = r.cv_rmse_mean
    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(trees), 1.2 + 0.7 * len(depths)))
    im = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis_r", aspect="auto")
    ax.set_xticks(range(len(trees)), [str(t) for t in trees])
    ax.set_yticks(range(len(depths)), [str(d) for d in depths])
    ax.set_xlabel("n_estimators")
    ax.set_ylabel("max_depth")
    ax.set_title("mean CV rmse (lower is better)")
    for i in range(len(depths)):
        for j in range(len(trees)):
            text = "failed" if np.isnan(grid[i, j]) else f"{grid[i, j]:.2f}"
            ax.text(j, i, text, ha="center", va="center", color="white", fontsize=8)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return fig


@dataclass
class GridOutcome:
    parent_run_id: str
    best: PointResult
    holdout: dict[str, float]
    child_run_ids: list[str]
    registered: tuple[str | None, str | None]


def log_grid(
    *,
    experiment_id: str,
    dag_id: str,
    dag_run_id: str,
    try_number: int | None,
    engine: str,
    results: Sequence[PointResult],
    cv: int,
    common_params: dict[str, Any],
    refit: Callable[[PointResult], tuple[Any, dict[str, float]]],
    X_sample: Any,
    register_as: str | None,
    extra_metrics: dict[str, float] | None = None,
) -> GridOutcome:
    """One parent run + one child per grid point; best point refit (``refit``) and logged on the parent.
    Runs of a crashed earlier try are closed beforehand (`prepare_tracking`).

    The refit runs in a thread while the child runs are logged: it fits in native code without the GIL, and
    the logging mostly waits on the tracking server."""
    import mlflow

    best = choose_best(results)  # raises GridError before anything is logged if every point failed
    with beside(refit, best, name="refit") as fitted, mlflow.start_run(
        experiment_id=experiment_id,
        run_name=f"{dag_id} {dag_run_id}",
        tags=run_tags(dag_id, dag_run_id, "parent", engine, try_number),
    ) as parent:
        mlflow.log_params({**common_params, "cv": cv, "grid_size": len(results)})
        child_ids = []
        for r in results:
            with mlflow.start_run(
                experiment_id=experiment_id,
                run_name=f"max_depth={r.max_depth} n_estimators={r.n_estimators}",
                nested=True,
                tags=run_tags(dag_id, dag_run_id, "child", engine, try_number),
            ) as child:
                child_ids.append(child.info.run_id)
                mlflow.log_params({"max_depth": r.max_depth, "n_estimators": r.n_estimators})
                if r.ok:
                    mlflow.log_metrics(
                        {"cv_rmse_mean": r.cv_rmse_mean, "cv_rmse_std": r.cv_rmse_std, "cv_r2_mean": r.cv_r2_mean}
                    )
                else:
                    mlflow.set_tag("mlopsctl.error", r.error or "unknown error")
            if not r.ok:
                mlflow.MlflowClient().set_terminated(child.info.run_id, status="FAILED")
            if r is best:
                best_child = child.info.run_id
        model, holdout = fitted.result()
        mlflow.set_tag("mlopsctl.best_child_run_id", best_child)
        mlflow.log_params({"best_max_depth": best.max_depth, "best_n_estimators": best.n_estimators})
        mlflow.log_metrics({"best_cv_rmse": best.cv_rmse_mean, **holdout, **(extra_metrics or {})})
        mlflow.log_figure(heatmap_figure(results), "heatmap.png")
        registered = log_model(
            model,
            X_sample,
            register_as,
            parent.info.run_id,
            {"max_depth": best.max_depth, "n_estimators": best.n_estimators, "cv": cv},
            dag_run_id,
        )
    return GridOutcome(parent.info.run_id, best, holdout, child_ids, registered)


# ----------------------------------------------------------------------------------------------
# command line shared by the jobs
# ----------------------------------------------------------------------------------------------
def int_arg(text: str) -> int:
    """argparse type: an integer ('80'; '80.0' too, as JSON may carry it)."""
    try:
        return int(text)  # exact, however large (float() would round 2**60 + 1)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}")
    return int(value)


def int_list_arg(text: str) -> list[int]:
    """argparse type: comma-separated integers ('80,90,100'; JSON '[80, 90]' too)."""
    items = [p for p in re.split(r"[,\s\[\]]+", text) if p]
    if not items:
        raise argparse.ArgumentTypeError(f"empty list: {text!r}")
    return [int_arg(p) for p in items]


def optional_str(text: str) -> str | None:
    """Empty = not set. (The DAG templates render None as ''; a model really named 'None' stays 'None'.)"""
    return text if text != "" else None


class JobArgumentParser(argparse.ArgumentParser):
    """The jobs' argv is built as [--flag, value, ...] pairs. Plain argparse takes a value that starts with
    '-' (a target column '-x', a model name '--v2') for an option and fails; here every value that follows
    a one-value option is bound to it (as if written --flag=value), so user strings arrive verbatim."""

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        args = list(sys.argv[1:] if args is None else args)
        takes_value = {
            opt
            for action in self._actions
            if isinstance(action, argparse._StoreAction) and action.nargs is None
            for opt in action.option_strings
        }
        joined: list[str] = []
        i = 0
        while i < len(args):
            if args[i] in takes_value and i + 1 < len(args):
                joined.append(f"{args[i]}={args[i + 1]}")
                i += 2
            else:
                joined.append(args[i])
                i += 1
        return super().parse_known_args(joined, namespace)


def base_parser(description: str) -> argparse.ArgumentParser:
    p = JobArgumentParser(description=description)
    p.add_argument("--dag-id", required=True)
    p.add_argument("--run-id", required=True, help="Airflow dag_run_id (keys the features table and MLflow runs)")
    p.add_argument("--try-number", type=int_arg, default=None)
    p.add_argument("--work-dir", required=True, help="where features tables live")
    p.add_argument("--data", type=optional_str, default=None,
                   help="CSV/Parquet path, URI, /Volumes/... path or table name; empty = bundled diabetes data")
    p.add_argument("--target", default="target")
    p.add_argument("--na-values", type=na_values_arg, default=None,
                   help="comma-separated tokens read as missing in CSV sources; empty = the default NA_VALUES")
    p.add_argument("--tracking-uri", type=optional_str, default=None)
    p.add_argument("--registry-uri", type=optional_str, default=None)
    p.add_argument("--experiment-prefix", default="/mlopsctl")
    return p


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--test-size", type=float, default=0.2)
    p.add_argument("--random-state", type=int_arg, default=42)
    p.add_argument("--register-model", type=optional_str, default=None, help="registered model name; empty = none")


def tracking_uri(args: argparse.Namespace) -> str:
    return args.tracking_uri or os.environ.get("MLOPSCTL_MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def run_main(fn: Callable[[], Any]) -> None:
    """Run a job's body; turn non-retryable failures into one clear line + EXIT_NO_RETRY."""
    try:
        fn()
    except (DataError, GridError) as exc:
        print(f"{ERROR_PREFIX} {exc}", file=sys.stderr, flush=True)
        sys.exit(EXIT_NO_RETRY)


def run_script(main: Callable[[], Any]) -> None:
    """A job file's ``__main__`` entry: run ``main``, then end the process as soon as its output is flushed.

    Everything the job does (Spark writes, MLflow logging, the session's release) is finished when ``main``
    returns; what is left is the interpreter's teardown of mlflow, scikit-learn, pandas, pyarrow and the
    gRPC client, which costs seconds of CPU (docs/architecture.md) and does nothing the caller can see. Exit codes are
    kept (0, or 3 for bad data). An uncaught exception takes the normal path (traceback, exit 1). On
    Databricks the runtime owns the process, so the job ends normally there."""
    try:
        main()
        code = 0
    except SystemExit as exc:
        if not isinstance(exc.code, int | None):
            raise
        code = exc.code or 0
    if os.environ.get("DATABRICKS_RUNTIME_VERSION"):
        sys.exit(code)
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def spark_session(app_name: str) -> Any:
    """The job's SparkSession, the one way every job gets it.

    With ``SPARK_REMOTE`` set (``sc://host:port``), a Spark Connect client of that server; otherwise the
    classic ``getOrCreate()`` (under ``spark-submit``, or a Databricks task's own session). The jobs use
    only the Spark Connect API (DataFrames, SQL, ``mapInPandas``), so the same file runs under both.
    """
    from pyspark.sql import SparkSession

    remote = os.environ.get("SPARK_REMOTE")
    builder = SparkSession.builder.appName(app_name)
    spark = builder.remote(remote).getOrCreate() if remote else builder.getOrCreate()
    if remote:
        ship_module_to_workers(spark)
    print(f"spark: {engine_name(spark)}", flush=True)
    return spark


def is_connect(spark: Any) -> bool:
    return type(spark).__module__.startswith("pyspark.sql.connect")


def engine_name(spark: Any) -> str:
    """``spark-connect(sc://host:port)`` or ``spark(<master>)``, for logs and MLflow tags (no credentials)."""
    remote = os.environ.get("SPARK_REMOTE")
    if is_connect(spark) and remote:
        return f"spark-connect({remote.split(';', 1)[0]})"  # `;token=...` parameters are never shown
    try:
        master = spark.conf.get("spark.master")
    except Exception:  # noqa: BLE001 - a server that hides its master (Databricks serverless)
        master = "connect" if is_connect(spark) else "unknown"
    return f"spark({master})"


def ship_module_to_workers(spark: Any) -> bool:
    """Make this module importable by the Python workers of a Spark Connect session.

    `evaluate_task_batches` runs inside ``mapInPandas`` on the workers and is pickled by reference to
    ``rf_core``. Where the jobs are installed as a package (the wheel on Databricks), the workers import it
    from there; where they run from a folder, Connect's ``addArtifacts(pyfile=True)`` puts this file on the
    session's worker path. Under classic ``spark-submit``, ``--py-files`` does the same.
    """
    import sysconfig

    here = Path(__file__).resolve()
    installed = {Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib")}
    if any(here.is_relative_to(p) for p in installed):
        return False
    spark.addArtifacts(str(here), pyfile=True)
    return True


def release_session(spark: Any) -> None:
    """End the job's use of the session: on Databricks the session belongs to the compute and is left alone;
    elsewhere ``stop()`` ends a classic application or releases the Connect session on the server."""
    if os.environ.get("DATABRICKS_RUNTIME_VERSION"):
        return
    spark.stop()
