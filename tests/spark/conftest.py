"""The Spark job tests run their jobs as Spark Connect clients of a session-scoped local Connect server
(local[2], UI off, every port on 127.0.0.1), so any classic-only call (SparkContext, RDD, addPyFile...)
fails the suite. spark_jobs/ is put on sys.path as a task's job finds it: the entry scripts by plain module
name, and the package mlopsctl_jobs beside them."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.spark_connect import SparkConnectServer

JOBS_DIR = Path(__file__).resolve().parents[2] / "spark_jobs"
# The tests import the entry scripts by plain name. dags/ holds DAG files with the same names (grid_search.py
# ...), so put spark_jobs/ first and drop any same-named module loaded from elsewhere.
sys.path[:] = [str(JOBS_DIR), *(p for p in sys.path if p != str(JOBS_DIR))]
for _name in ("preprocess_data", "train_model", "grid_search", "grid_search_spark"):
    _mod = sys.modules.get(_name)
    if _mod is not None and Path(getattr(_mod, "__file__", None) or "").resolve().parent != JOBS_DIR:
        del sys.modules[_name]


@pytest.fixture(scope="session")
def spark(connect_server: SparkConnectServer) -> Iterator[Any]:
    """A Connect session the way a job gets it: `mlopsctl_jobs.session.spark_session` with SPARK_REMOTE set."""
    from mlopsctl_jobs import session as job_session

    with pytest.MonkeyPatch.context() as mp:  # set for the session's creation only: other tests must not see it
        mp.setenv("SPARK_REMOTE", connect_server.url)
        session = job_session.spark_session("mlopsctl-tests")
    assert job_session.is_connect(session)
    try:
        yield session
    finally:
        session.stop()


@pytest.fixture(scope="session")
def diabetes_xy() -> tuple[Any, Any]:
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True).frame
    return frame.drop(columns=["target"]).astype("float64"), frame["target"].astype("float64")
