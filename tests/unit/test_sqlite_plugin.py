"""The embedded stack's Airflow plugin (mlopsctl/devenv/airflow_plugins/mlopsctl_sqlite.py): mutating requests
pass the api-server one at a time, reads are never held back. The live proof is tests/reliability/test_load.py."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from mlopsctl.devenv.layout import StackLayout
from mlopsctl.devenv.stack import AIRFLOW_PLUGINS_DIR, airflow_env
from mlopsctl.settings import Settings


def _plugin_module():
    spec = importlib.util.spec_from_file_location("mlopsctl_sqlite", AIRFLOW_PLUGINS_DIR / "mlopsctl_sqlite.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _App:
    """An ASGI app whose requests take a while; records the peak number of concurrent requests per kind."""

    def __init__(self) -> None:
        self.active = {"read": 0, "write": 0}
        self.peak = {"read": 0, "write": 0}

    async def __call__(self, scope, receive, send) -> None:
        kind = "read" if scope["method"] == "GET" else "write"
        self.active[kind] += 1
        self.peak[kind] = max(self.peak[kind], self.active[kind])
        await asyncio.sleep(0.05)
        self.active[kind] -= 1
        await send({"type": "http.response.start", "status": 200, "headers": []})


async def _drive(middleware, methods: list[str]) -> list[dict]:
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    await asyncio.gather(*(middleware({"type": "http", "method": m, "path": "/"}, receive, send) for m in methods))
    return sent


def test_writes_pass_one_at_a_time_reads_concurrently() -> None:
    module = _plugin_module()
    app = _App()
    middleware = module.OneWriterMiddleware(app)
    sent = asyncio.run(_drive(middleware, ["POST", "PATCH", "PUT", "DELETE", "POST"] + ["GET"] * 5))
    assert len(sent) == 10  # every request answered
    assert app.peak == {"read": 5, "write": 1}


def test_non_http_scopes_pass_through() -> None:
    module = _plugin_module()
    seen: list[str] = []

    async def app(scope, receive, send) -> None:
        seen.append(scope["type"])

    asyncio.run(module.OneWriterMiddleware(app)({"type": "lifespan"}, None, None))
    assert seen == ["lifespan"]


def test_plugin_registers_the_middleware_and_a_busy_timeout() -> None:
    pytest.importorskip("airflow")
    module = _plugin_module()
    [entry] = module.MlopsctlSqlitePlugin.fastapi_root_middlewares
    assert entry["middleware"] is module.OneWriterMiddleware
    assert module.CONNECT_ARGS["timeout"] >= 30


def test_stack_env_points_airflow_at_the_plugin(tmp_path) -> None:
    settings = Settings(project_dir=tmp_path, state_dir=tmp_path / "state")
    env = airflow_env(settings, StackLayout.from_settings(settings))
    assert env["AIRFLOW__CORE__PLUGINS_FOLDER"] == str(AIRFLOW_PLUGINS_DIR)
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS"] == "mlopsctl_sqlite.CONNECT_ARGS"
    assert (AIRFLOW_PLUGINS_DIR / "mlopsctl_sqlite.py").is_file()


def test_a_tasks_execution_api_calls_outwait_the_write_lock(tmp_path) -> None:
    """A heartbeat queued behind the one-writer lock may wait as long as SQLite's busy timeout; the worker's
    request timeout must be at least that, or three slow heartbeats kill a healthy task."""
    pytest.importorskip("airflow")
    module = _plugin_module()
    settings = Settings(project_dir=tmp_path, state_dir=tmp_path / "state")
    env = airflow_env(settings, StackLayout.from_settings(settings))
    assert float(env["AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT"]) >= module.CONNECT_ARGS["timeout"]
