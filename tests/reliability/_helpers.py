"""Shared helpers of the reliability suite: run the CLI like a user, read MLflow/Airflow state directly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
CLI_TIMEOUT = 1500  # bounds a hang so it fails the test, not the CI job; asserts nothing about speed


def cli_env(stack: Any = None, **extra: str) -> dict[str, str]:
    """The caller's env without MLOPSCTL_*/DATABRICKS_*, pointed at `stack` (if given), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPSCTL_", "DATABRICKS_"))}
    if stack is not None:
        env.update(stack.env)
    env.update(NO_COLOR="1", COLUMNS="200", PYTHONPATH=str(REPO))
    env.update(extra)
    return env


def cli(*argv: str, stack: Any = None, env: dict[str, str] | None = None, cwd: Path | None = None,
        timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess:
    """`mlopsctl ARGV` in a subprocess, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "mlopsctl", *argv],
        env=env if env is not None else cli_env(stack),
        cwd=str(cwd or (stack.project_dir if stack is not None else Path.cwd())),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def json_out(res: subprocess.CompletedProcess) -> dict[str, Any]:
    try:
        return json.loads(res.stdout)
    except ValueError as exc:
        raise AssertionError(f"stdout is not one JSON document (exit {res.returncode}):\n{res.stdout}\n{res.stderr}") \
            from exc


def mlflow_runs(stack: Any, dag_id: str, dag_run_id: str | None = None) -> list[dict[str, Any]]:
    """Runs MLflow itself holds in /mlopsctl/<dag_id> (optionally only those of one Airflow run)."""
    base = f"{stack.mlflow_url}/api/2.0/mlflow"
    with httpx.Client(timeout=60) as http:
        exp = http.get(f"{base}/experiments/get-by-name", params={"experiment_name": f"/mlopsctl/{dag_id}"})
        if exp.status_code == 404:
            return []
        exp.raise_for_status()
        body: dict[str, Any] = {"experiment_ids": [exp.json()["experiment"]["experiment_id"]], "max_results": 1000}
        if dag_run_id is not None:
            body["filter"] = f"tags.`airflow.dag_run_id` = '{dag_run_id}'"
        runs: list[dict[str, Any]] = []
        while True:
            resp = http.post(f"{base}/runs/search", json=body)
            resp.raise_for_status()
            data = resp.json()
            runs += data.get("runs", [])
            if not data.get("next_page_token"):
                return runs
            body["page_token"] = data["next_page_token"]


def tags(run: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def params(run: dict[str, Any]) -> dict[str, str]:
    return {p["key"]: p["value"] for p in run["data"].get("params", [])}


def metrics(run: dict[str, Any]) -> dict[str, float]:
    return {m["key"]: m["value"] for m in run["data"].get("metrics", [])}


def airflow_runs(stack: Any, dag_id: str, dag_run_id: str | None = None) -> list[Any]:
    """Every dag run of `dag_id` Airflow holds (optionally only those with this dag_run_id)."""
    with stack.client() as client:
        runs = client.list_runs(dag_id, limit=1000)
    return [r for r in runs if dag_run_id is None or r.dag_run_id == dag_run_id]


def assert_clean_error(res: subprocess.CompletedProcess) -> None:
    """A user-facing failure: no Python traceback on either stream."""
    assert "Traceback (most recent call last)" not in res.stderr, res.stderr
    assert "Traceback (most recent call last)" not in res.stdout, res.stdout


def stack_processes(stack: Any) -> list[Any]:
    """Every live process of the stack (see `LocalStack.processes`)."""
    return stack.processes()
