"""A session-scoped local SparkSession (local[2], UI off, bound to 127.0.0.1) and the jobs on sys.path."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

JOBS_DIR = Path(__file__).resolve().parents[2] / "spark_jobs"
# The jobs import each other by plain name (as under spark-submit). dags/ holds DAG files with the same
# names (grid_search.py ...), so put spark_jobs/ first and drop any same-named module loaded from elsewhere.
sys.path[:] = [str(JOBS_DIR), *(p for p in sys.path if p != str(JOBS_DIR))]
for _name in ("rf_core", "preprocess_data", "train_model", "grid_search", "grid_search_spark"):
    _mod = sys.modules.get(_name)
    if _mod is not None and Path(getattr(_mod, "__file__", None) or "").resolve().parent != JOBS_DIR:
        del sys.modules[_name]


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    import logging

    from pyspark.sql import SparkSession

    # py4j logs "Closing down clientserver connection" at interpreter exit, after pytest closed its streams
    logging.getLogger("py4j").setLevel(logging.WARNING)

    session = (
        SparkSession.builder.master("local[2]")
        .appName("mlopsctl-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.log.level", "WARN")
        .getOrCreate()
    )
    # executors import rf_core when they unpickle the grid evaluation function
    session.sparkContext.addPyFile(str(JOBS_DIR / "rf_core.py"))
    try:
        yield session
    finally:
        session.stop()


@pytest.fixture(scope="session")
def diabetes_xy() -> tuple[Any, Any]:
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True).frame
    return frame.drop(columns=["target"]).astype("float64"), frame["target"].astype("float64")
