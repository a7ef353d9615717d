"""mlopsctl_jobs.session.release_session: on Databricks the job leaves the session alone (`stop()` is unsupported in standard
access mode, and on a shared all-purpose cluster the session is not the job's to end); elsewhere it stops it.

Each test makes a Connect session of its own on the session-scoped server, so stopping it ends nothing else."""

from __future__ import annotations

from typing import Any

import pytest
from mlopsctl_jobs import session as job_session

from tests.fixtures.spark_connect import SparkConnectServer


def _own_session(server: SparkConnectServer) -> Any:
    from pyspark.sql import SparkSession

    session = SparkSession.builder.remote(server.url).create()
    assert session.range(3).count() == 3
    return session


def test_on_databricks_the_session_stays_usable(connect_server: SparkConnectServer, monkeypatch) -> None:
    session = _own_session(connect_server)
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "17.3")
    try:
        job_session.release_session(session)
        assert not session.is_stopped
        assert session.range(5).count() == 5  # the compute's session still serves its next user
    finally:
        session.stop()


def test_elsewhere_the_session_is_stopped(connect_server: SparkConnectServer, monkeypatch) -> None:
    session = _own_session(connect_server)
    monkeypatch.delenv("DATABRICKS_RUNTIME_VERSION", raising=False)
    job_session.release_session(session)
    assert session.is_stopped
    with pytest.raises(Exception):  # noqa: B017 - a closed client refuses any further request
        session.range(1).count()


def test_each_session_runs_its_python_workers_under_the_stack_daemon(connect_server: SparkConnectServer) -> None:
    """A Connect session's Python workers get a daemon of the session's own (Spark isolates each session's
    artifacts): on the stack's server that daemon is `mlopsctl.devenv.sparkdaemon`, which ends once idle
    (tests/unit/test_sparkdaemon.py), so no session leaves one behind for good."""
    import psutil

    def parent(batches):
        import os

        import pandas as pd

        for _ in batches:
            pass
        yield pd.DataFrame({"daemon": [os.getppid()]})

    daemons = []
    for _ in range(2):
        session = _own_session(connect_server)
        try:
            (row,) = session.range(0, 1, 1, 1).mapInPandas(parent, "daemon long").collect()
        finally:
            session.stop()
        daemons.append(row.daemon)
        assert "mlopsctl.devenv.sparkdaemon" in psutil.Process(row.daemon).cmdline()
    assert daemons[0] != daemons[1]
