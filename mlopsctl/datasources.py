"""What a --data value names (a path on this machine, a URI, a volume, workspace or DBFS path, a table) and
whether the pipeline's compute can read it, judged from its text before anything is submitted.

The job side's copy of `data_kind` is `source_kind` in the Spark jobs; tests/unit/test_data_sources.py pins
the two together. The rules are described in docs/data.md.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from mlopsctl.errors import InputError

DATA_SUFFIXES = (".csv", ".parquet", ".pq")

#: what a --data value names, judged from its text alone
DataKind = Literal["local", "uri", "volume", "workspace", "dbfs", "table"]
#: a URI with a scheme Spark reads (s3://, s3a://, abfss://, gs://, dbfs:/, file:/ ...); two letters at least,
#: so a Windows drive (C:/) stays a local path
_URI_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")
_IDENTIFIER = r"(?:[A-Za-z_][A-Za-z0-9_]*|`[^`]+`)"
_TABLE_RE = re.compile(rf"^{_IDENTIFIER}(?:\.{_IDENTIFIER}){{1,2}}$")
#: a last dotted part that makes `name.ext` a file name, not a `schema.table`
FILE_EXTENSIONS = frozenset({"csv", "tsv", "txt", "json", "parquet", "pq", "orc", "avro", "xlsx", "xls", "gz", "zip"})
#: the cluster-side forms, as the hint of a refused local path names them
CLUSTER_DATA_FORMS = (
    "a Unity Catalog volume path (/Volumes/<catalog>/<schema>/<volume>/data.csv), a table name "
    "(catalog.schema.table), or a cloud URI (s3://, abfss://, gs://)"
)
COMPUTE_TAG_PREFIX = "compute:"


def data_kind(data: str) -> DataKind:
    """What a --data value names: a URI Spark reads, a Unity Catalog volume path, a workspace file, a DBFS FUSE
    path (/dbfs/...), a table name (`catalog.schema.table` or `schema.table`), or else a path on this machine."""
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


def compute_of(tags: list[Any]) -> str | None:
    """The compute kind a DAG publishes as its `compute:<kind>` tag (`databricks`, `local`, `spark`); None
    when it publishes none (a deployment older than the tag: nothing is known)."""
    for tag in tags:
        name = tag.get("name") if isinstance(tag, dict) else tag
        if isinstance(name, str) and name.startswith(COMPUTE_TAG_PREFIX):
            return name.removeprefix(COMPUTE_TAG_PREFIX) or None
    return None


def check_data(data: str | None, flag: str = "--data", *, compute: str | None = None,
               dag_id: str | None = None) -> str | None:
    """None stays None (bundled diabetes data). A URI, volume, workspace or DBFS path or a table name passes
    through unchanged: the job reads it where it runs. A path on this machine (a table-like name that exists
    here is one) is refused when the pipeline's `compute` is `databricks` (the cluster cannot see this
    machine's files); otherwise it must exist and be CSV/Parquet (file or directory), and is made absolute
    (Airflow workers do not share our cwd)."""
    if data is None:
        return None
    data = str(data).strip()
    if not data:
        raise InputError(f"{flag} must not be empty.")
    kind = data_kind(data)
    if kind == "table" and Path(data).expanduser().exists():
        kind = "local"
    if kind != "local":
        return data
    if compute == "databricks":
        where = f"{dag_id}'s tasks run" if dag_id else "the pipeline runs"
        name = Path(data).name or "data.csv"
        raise InputError(
            f"{flag}: {data} is a path on this machine, but {where} on Databricks, which cannot see this "
            f"machine's files. Give {CLUSTER_DATA_FORMS}.",
            hint=f"Upload it first, e.g. `databricks fs cp {data} dbfs:/Volumes/<catalog>/<schema>/<volume>/{name}`, "
                 f"then pass --data /Volumes/<catalog>/<schema>/<volume>/{name}.",
        )
    path = Path(data).expanduser()
    if not path.exists():
        raise InputError(
            f"{flag}: {data} does not exist.",
            hint="Give a CSV or Parquet file (or directory) on this machine, or data the cluster reads: "
                 f"{CLUSTER_DATA_FORMS}.",
        )
    if path.is_file():
        if not os.access(path, os.R_OK):
            raise InputError(f"{flag}: {data} is not readable (permission denied).")
        if path.suffix.lower() not in DATA_SUFFIXES:
            raise InputError(
                f"{flag}: {data} is not a CSV or Parquet file (expected {', '.join(DATA_SUFFIXES)})."
            )
    elif path.is_dir():
        names = [p.name.lower() for p in path.iterdir()]
        if not any(n.endswith(DATA_SUFFIXES) for n in names):
            raise InputError(f"{flag}: directory {data} holds no .csv or .parquet files.")
    else:
        raise InputError(f"{flag}: {data} is neither a file nor a directory.")
    return str(path.resolve())
