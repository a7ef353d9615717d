"""Real health of the local stack: Airflow's health JSON, MLflow's /health, the Spark Connect server's gRPC
endpoint, and the DAG files parsed.

Plain httpx/sockets for the unauthenticated probes (they must not retry or raise: they are polled); DAG and
import-error listings go through `mlopsctl.airflow.client.AirflowClient`.
"""

from __future__ import annotations

import functools
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

_PROBE_TIMEOUT = httpx.Timeout(5.0, connect=2.0)


@functools.cache
def _probe_client() -> httpx.Client:
    """The one client every probe uses. Building a client loads the CA bundle into a fresh SSL context (tens of
    milliseconds of CPU, even for plain-HTTP URLs); `dev start` probes several times a second while the stack
    competes for the same cores, so a client per probe would cost seconds of start-up."""
    return httpx.Client(timeout=_PROBE_TIMEOUT)


def airflow_health(
    base_url: str, *, timeout: httpx.Timeout | float = _PROBE_TIMEOUT
) -> dict[str, Any] | None:
    """The JSON of GET /api/v2/monitor/health, or None if the api-server does not answer (yet).

    Airflow answers 200 even when a component is unhealthy: callers read each component's `status`."""
    try:
        resp = _probe_client().get(f"{base_url}/api/v2/monitor/health", timeout=timeout)
    except httpx.HTTPError:
        return None
    if resp.status_code != 200:
        return None
    try:
        data = resp.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


#: the execution API's first request builds its versioned routes (cadwyn), seconds of CPU on a busy machine
EXECUTION_API_TIMEOUT = httpx.Timeout(60.0, connect=2.0)


def execution_api_ready(base_url: str, *, timeout: httpx.Timeout | float = EXECUTION_API_TIMEOUT) -> bool:
    """True once GET /execution/health answers 200: the api-server can start tasks.

    Airflow builds the execution API's versioned routes on that API's first request (seconds of CPU, see
    docs/local-stack.md), so the first task of every api-server would otherwise wait for it."""
    try:
        resp = _probe_client().get(f"{base_url}/execution/health", timeout=timeout)
    except httpx.HTTPError:
        return False
    return resp.status_code == 200


def component_status(health: dict[str, Any] | None, key: str) -> str | None:
    entry = (health or {}).get(key) or {}
    return entry.get("status") if isinstance(entry, dict) else None


def heartbeat(health: dict[str, Any] | None, key: str, field_name: str) -> datetime | None:
    entry = (health or {}).get(key) or {}
    value = entry.get(field_name) if isinstance(entry, dict) else None
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def mlflow_healthy(base_url: str, *, timeout: httpx.Timeout | float = _PROBE_TIMEOUT) -> bool:
    try:
        resp = _probe_client().get(f"{base_url}/health", timeout=timeout)
    except httpx.HTTPError:
        return False
    return resp.status_code == 200


# HTTP/2 connection preface + an empty SETTINGS frame (RFC 9113, 3.4): what every gRPC client sends first
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_H2_SETTINGS = 0x4


def grpc_serving(host: str, port: int, *, timeout: float = 2.0) -> bool:
    """True if a gRPC (HTTP/2) server answers on host:port: it must reply to the connection preface with its
    own SETTINGS frame. Stronger than an accepted TCP connection (the kernel accepts for a hung process too),
    and needs no gRPC library."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(_H2_PREFACE)
            header = b""
            while len(header) < 9:  # frame header: length(3) type(1) flags(1) stream id(4)
                chunk = sock.recv(9 - len(header))
                if not chunk:
                    return False
                header += chunk
    except OSError:
        return False
    return header[3] == _H2_SETTINGS


def tcp_accepts(host: str, port: int, *, timeout: float = 2.0) -> bool:
    """True if host:port accepts a TCP connection (for TLS endpoints, where grpc_serving cannot look)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


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
            if not d.get("is_stale")
            and (_matches(file, d.get("fileloc")) or _matches(file, d.get("relative_fileloc")))
        ]
        trace = next((e.get("stack_trace") or "" for e in errors if _matches(file, e.get("filename"))), None)
        if trace is not None:
            report.import_errors[file.name] = trace
        elif ids:
            report.dags_by_file[file.name] = ids
        else:
            report.pending.append(file.name)
    return report


def dag_parse_report(client: Any, files: list[Path]) -> ParseReport | None:
    """ParseReport for `files` from an AirflowClient, or None if the api-server cannot answer right now."""
    try:
        dags = [d.model_dump() for d in client.list_dags()]
        errors = [e.model_dump() for e in client.import_errors()]
    except Exception:  # noqa: BLE001 - a probe: any failure means "not ready yet"
        return None
    return parse_report(files, dags, errors)


def last_line(trace: str) -> str:
    lines = [line.strip() for line in trace.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "import error"


class BackgroundProbe:
    """A slow probe run in a daemon thread (started again after a failure), so that the poll loop goes on
    looking at the other components meanwhile."""

    def __init__(self, probe: Callable[[], bool]) -> None:
        self._probe = probe
        self._thread: threading.Thread | None = None
        self._ok = False

    def passed(self) -> bool:
        if not self._ok and (self._thread is None or not self._thread.is_alive()):
            self._thread = threading.Thread(target=self._run, name="health-probe", daemon=True)
            self._thread.start()
        return self._ok

    def _run(self) -> None:
        self._ok = self._probe()


@dataclass
class ProbeContext:
    """What a component's probe may look at: the settings and layout, the URL and port of each component
    (``urls`` by URL key, ``ports`` by name), when each component this start launched was spawned
    (``since``), and whether `dev start` is waiting for the stack (then a probe may also wait for what the
    first request would otherwise pay for). Airflow's health JSON is read at most once per round."""

    settings: Any
    layout: Any
    urls: dict[str, str]
    ports: dict[str, int | None]
    waiting: bool = False
    since: dict[str, float] = field(default_factory=dict)
    _airflow: dict[str, Any] | None = None
    _airflow_read: bool = False
    _background: dict[str, BackgroundProbe] = field(default_factory=dict)

    def new_round(self) -> None:
        self._airflow, self._airflow_read = None, False

    def airflow_health(self, url: str) -> dict[str, Any] | None:
        if not self._airflow_read:
            self._airflow, self._airflow_read = airflow_health(url), True
        return self._airflow

    def background(self, key: str, probe: Callable[[], bool]) -> bool:
        """``probe`` run beside the poll loop (`BackgroundProbe`), one per ``key``: True once it passed."""
        if key not in self._background:
            self._background[key] = BackgroundProbe(probe)
        return self._background[key].passed()
