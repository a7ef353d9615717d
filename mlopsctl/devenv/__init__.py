"""The embedded local stack: Airflow 3 components, an MLflow tracking server and a Spark Connect server on
127.0.0.1, no Docker.

Public entry points (used by `mlopsctl dev ...` and by the test-session fixture):
`start_stack` (`mlopsctl.devenv.start`), `stop_stack` (`.stop`), `stack_status` (`.status`),
`spark_server_down` (`.preflight`); the components in `mlopsctl.devenv.components`, the layout in `.layout`.
Nothing here prints: progress is reported through a callback.
How the stack is built, and what its design choices measured: docs/local-stack.md.
"""
