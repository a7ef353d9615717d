"""Reliability suite fixtures.

`local_stack` is the session stack of tests/fixtures/stack.py. For local iteration only, an already
running stack can be reused by setting
MLOPSCTL_TEST_REUSE_STACK=<project dir>,<airflow port>,<mlflow port>[,<spark connect port, default 15002>]
(CI never sets it: the suite then starts and stops its own stack like every other integration test).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

_REUSE = os.environ.get("MLOPSCTL_TEST_REUSE_STACK")

if _REUSE:

    @pytest.fixture(scope="session")
    def local_stack() -> Iterator[object]:
        from mlopsctl.settings import CONNECT_DEFAULT_PORT
        from tests.fixtures.stack import LocalStack, stack_settings

        project, airflow_port, mlflow_port, *spark = _REUSE.split(",")
        spark_port = int(spark[0]) if spark else CONNECT_DEFAULT_PORT
        yield LocalStack(
            stack_settings(Path(project), airflow_port=int(airflow_port), mlflow_port=int(mlflow_port),
                           spark_connect_port=spark_port)
        )


@pytest.fixture
def stack_healthy(local_stack) -> Iterator[object]:
    """For tests that stop, kill or overload a component: afterwards, bring the whole stack back to healthy
    with the code of `mlopsctl dev start` (it restarts only what is not running). A component that is
    running but unhealthy (e.g. a scheduler hung after a crash) is stopped first, so it gets restarted."""
    try:
        yield local_stack
    finally:
        from mlopsctl.devenv.layout import StackLayout
        from mlopsctl.devenv.process import read_pid_file, terminate
        from mlopsctl.devenv.start import start_stack
        from mlopsctl.devenv.status import stack_status

        layout = StackLayout.from_settings(local_stack.settings)
        for comp in stack_status(local_stack.settings).components:
            if comp.running and comp.health == "unhealthy":
                record = read_pid_file(layout.pid_file(comp.name))
                if record is not None:
                    terminate([record], grace=20.0)
        start_stack(local_stack.settings)
