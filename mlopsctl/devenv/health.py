"""Real health of the local stack: Airflow's health JSON, MLflow's /health, and the DAG files parsed.

Plain httpx for the unauthenticated probes (health, /auth/token); DAG and import-error listings go through
`mlopsctl.airflow.client.AirflowClient` when it is available, else a minimal httpx fallback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

_PROBE_TIMEOUT = httpx.Timeout(5.0, connect=2.0)


def airflow_health(base_url: str, *, timeout: httpx.Timeout | float = _PROBE_TIMEOUT) -> dict[str, Any] | None:
    """The JSON of GET /api/v2/monitor/health, or None if the api-server does not answer (yet).

    Airflow answers 200 even when a component is unhealthy: callers read each component's `status`."""
    try:
        resp = httpx.get(f"{base_url}/api/v2/monitor/health", timeout=timeout)
    except httpx.HTTPError:
        return None
    if resp.status_code != 200:
        return None
    try:
        data = resp.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def component_status(health: dict[str, Any] | None, key: str) -> str | None:
    entry = (health or {}).get(key) or {}
    return entry.get("status") if isinstance(entry, dict) else None


def heartbeat(health: dict[str, Any] | None, key: str, field_name: str) -> datetime | None:
    entry = (health or {}).get(key) or {}
    value = entry.get(field_name) if isinstance(entry, dict) else None
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def mlflow_healthy(base_url: str, *, timeout: httpx.Timeout | float = _PROBE_TIMEOUT) -> bool:
    try:
        resp = httpx.get(f"{base_url}/health", timeout=timeout)
    except httpx.HTTPError:
        return False
    return resp.status_code == 200


def airflow_token(base_url: str, username: str, password: str, *, timeout: float = 10.0) -> str | None:
    """JWT from POST /auth/token (None if the server refuses or is not up yet)."""
    try:
        resp = httpx.post(f"{base_url}/auth/token", json={"username": username, "password": password},
                          timeout=timeout)
    except httpx.HTTPError:
        return None
    if resp.status_code not in (200, 201):
        return None
    try:
        return resp.json().get("access_token")
    except (ValueError, AttributeError):
        return None


def expected_dag_files(folder: Path) -> list[Path]:
    """Top-level .py files of the DAGs folder that Airflow's safe mode would parse (mention 'airflow' and
    'dag'); helpers in sub-packages such as dags/common/ are not DAG files."""
    files = []
    if not folder.is_dir():
        return files
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith((".", "_")):
            continue
        try:
            text = path.read_text(encoding="utf-8", errors="replace").lower()
        except OSError:
            continue
        if "airflow" in text and "dag" in text:
            files.append(path)
    return files


@dataclass
class ParseReport:
    """Which DAG files are known to Airflow: by a DAG, by an import error, or not yet."""

    dags_by_file: dict[str, list[str]] = field(default_factory=dict)
    import_errors: dict[str, str] = field(default_factory=dict)  # file name -> stack trace
    pending: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.pending


def _paged(client: httpx.Client, path: str, key: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    offset = 0
    while True:
        resp = client.get(path, params={"limit": 100, "offset": offset})
        resp.raise_for_status()
        data = resp.json()
        page = data.get(key) or []
        items.extend(page)
        total = data.get("total_entries", len(items))
        if not page or len(items) >= total:
            return items
        offset += len(page)


def _fetch_with_httpx(base_url: str, token: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=_PROBE_TIMEOUT) as client:
        dags = _paged(client, "/api/v2/dags", "dags")
        errors = _paged(client, "/api/v2/importErrors", "import_errors")
    return dags, errors


def _fetch_with_client(client: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
    """Use the shared AirflowClient if it is implemented (returns None while it is still a stub)."""
    dags = client.list_dags()
    errors = client.import_errors()
    if dags is None or errors is None:
        return None
    return [d.model_dump() for d in dags], [e.model_dump() for e in errors]


def _matches(file: Path, recorded: str | None) -> bool:
    if not recorded:
        return False
    recorded = recorded.replace("\\", "/")
    return recorded == str(file) or recorded == file.name or recorded.endswith("/" + file.name)


def parse_report(files: list[Path], dags: list[dict[str, Any]], errors: list[dict[str, Any]]) -> ParseReport:
    report = ParseReport()
    for file in files:
        ids = [
            d.get("dag_id", "?")
            for d in dags
            if not d.get("is_stale") and (_matches(file, d.get("fileloc")) or _matches(file, d.get("relative_fileloc")))
        ]
        trace = next((e.get("stack_trace") or "" for e in errors if _matches(file, e.get("filename"))), None)
        if trace is not None:
            report.import_errors[file.name] = trace
        elif ids:
            report.dags_by_file[file.name] = ids
        else:
            report.pending.append(file.name)
    return report


def dag_parse_report(base_url: str, token: str, files: list[Path], *, client: Any = None) -> ParseReport | None:
    """ParseReport for `files`, or None if the api-server could not be asked right now."""
    try:
        fetched = _fetch_with_client(client) if client is not None else None
        if fetched is None:
            fetched = _fetch_with_httpx(base_url, token)
    except Exception:  # noqa: BLE001 - a probe: any failure means "not ready yet"
        return None
    dags, errors = fetched
    return parse_report(files, dags, errors)


def last_line(trace: str) -> str:
    lines = [line.strip() for line in trace.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "import error"
