"""Facts about the Spark installed on this machine, which the local backend's tasks (compute.py) and mlopsctl's
embedded stack both need. Standard library only: mlopsctl loads this file from its bundled DAG folder, since the
DAG package imports nothing from mlopsctl."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from urllib.parse import urlparse


def spark_home() -> Path | None:
    """The installed pyspark folder when it is a full Spark distribution (bin/spark-submit, jars/), found without
    importing pyspark; None without pyspark, or with the Connect client alone (pyspark-client)."""
    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.submodule_search_locations:
        return None
    home = Path(next(iter(spec.submodule_search_locations)))
    return home if (home / "bin" / "spark-submit").is_file() and (home / "jars").is_dir() else None


def is_loopback_master(master: str) -> bool:
    """local[...] or a cluster manager on this machine: the driver can then bind to 127.0.0.1 only."""
    if master.startswith("local"):
        return True
    return urlparse(master).hostname in ("127.0.0.1", "localhost")
