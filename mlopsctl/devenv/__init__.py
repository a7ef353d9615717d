"""The embedded local stack: Airflow 3 components, an MLflow tracking server and a Spark Connect server on
127.0.0.1, no Docker.

Public entry points (used by `mlopsctl dev ...` and by the test-session fixture):
`start_stack`, `stop_stack`, `stack_status`, `spark_server_down` in `mlopsctl.devenv.manager`; layout and
component specs in `mlopsctl.devenv.stack`. Nothing here prints: progress is reported through a callback.
How the stack is built, and what its design choices measured: docs/local-stack.md.
"""

from __future__ import annotations

from mlopsctl.devenv.stack import AIRFLOW_COMPONENTS, COMPONENTS, StackLayout

__all__ = ["AIRFLOW_COMPONENTS", "COMPONENTS", "StackLayout"]
