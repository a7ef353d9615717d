"""Airflow plugin + connect args for the embedded stack's SQLite metadata DB (loaded by Airflow, not by mlopsctl).

`mlopsctl dev start` points Airflow's `[core] plugins_folder` at this directory and
`[database] sql_alchemy_connect_args` at `mlopsctl_sqlite.CONNECT_ARGS`. Nothing here is used with a
server database (a hosted Airflow on Postgres/MySQL never sees this file).

Why (found by tests/reliability/test_load.py, 20 concurrent triggers): Airflow's audit-log dependency of
the REST API (`action_logging`) is an `async` function that commits a synchronous SQLAlchemy session on
the event loop. On SQLite (one writer at a time) that commit can wait for the write lock held by another
request of the same api-server, whose own commit runs in the thread pool and needs the (now blocked)
event loop to finish: both wait until SQLite's busy timeout, the request fails with "database is locked"
and the scheduler, dag-processor and triggerer (waiting on the same lock) crash. Letting one mutating
request at a time through the api-server removes that cycle; reads (GET) are untouched and SQLite's WAL
lets them run beside a writer. The longer busy timeout lets every component ride out normal write
contention on a loaded laptop instead of crashing after SQLite's default 5 s.
"""

from __future__ import annotations

import asyncio
from typing import Any

from airflow.plugins_manager import AirflowPlugin

# sqlite3.connect(**CONNECT_ARGS): seconds a writer waits for the lock before "database is locked"
CONNECT_ARGS: dict[str, Any] = {"timeout": 60.0}

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class OneWriterMiddleware:
    """Pure ASGI middleware: HTTP requests with a mutating method pass one at a time (reads pass freely)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._lock: asyncio.Lock | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or scope.get("method", "GET") in _SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        if self._lock is None:  # created on first use, inside the server's event loop
            self._lock = asyncio.Lock()
        async with self._lock:
            await self.app(scope, receive, send)


class MlopsctlSqlitePlugin(AirflowPlugin):
    name = "mlopsctl_sqlite"
    fastapi_root_middlewares = [  # noqa: RUF012 (the attribute Airflow reads)
        {"middleware": OneWriterMiddleware, "args": [], "kwargs": {}, "name": "mlopsctl: one writer at a time"}
    ]
