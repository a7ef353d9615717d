"""Typed views of the Airflow REST API v2 payloads mlopsctl uses (extra fields are kept, not validated)."""

from __future__ import annotations

from datetime import datetime
from pathlib import PurePath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

TERMINAL_RUN_STATES = frozenset({"success", "failed"})


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class ComponentHealth(_Model):
    status: str | None = None
    latest_scheduler_heartbeat: datetime | None = None
    latest_triggerer_heartbeat: datetime | None = None
    latest_dag_processor_heartbeat: datetime | None = None


class Health(_Model):
    metadatabase: ComponentHealth = Field(default_factory=ComponentHealth)
    scheduler: ComponentHealth = Field(default_factory=ComponentHealth)
    triggerer: ComponentHealth = Field(default_factory=ComponentHealth)
    dag_processor: ComponentHealth | None = None

    def unhealthy(
        self, require: tuple[str, ...] = ("metadatabase", "scheduler", "triggerer", "dag_processor")
    ) -> list[str]:
        """Names of required components whose status is not 'healthy'."""
        bad = []
        for name in require:
            comp = getattr(self, name, None)
            if comp is None or comp.status != "healthy":
                bad.append(name)
        return bad


class Dag(_Model):
    dag_id: str
    is_paused: bool | None = None
    is_stale: bool | None = None
    tags: list[dict[str, Any]] = Field(default_factory=list)
    description: str | None = None
    fileloc: str | None = None
    relative_fileloc: str | None = None
    bundle_name: str | None = None
    has_import_errors: bool | None = None


class DagDetails(Dag):
    params: dict[str, Any] = Field(default_factory=dict)
    doc_md: str | None = None


class ImportError_(_Model):
    import_error_id: int | None = None
    filename: str | None = None
    bundle_name: str | None = None
    stack_trace: str | None = None
    timestamp: datetime | None = None


def import_errors_of(errors: list[ImportError_], dag_id: str, dag: Dag | None = None) -> list[ImportError_]:
    """The import errors of one DAG's own file, matched exactly, never by substring (a broken
    grid_search_spark.py is not grid_search's).

    Airflow records an import error under the file's path relative to its bundle (the DAG's
    `relative_fileloc`); older servers give absolute paths (the DAG's `fileloc`). A DAG that is not
    loaded has neither: its file is then `<dag_id>.py`, the one-DAG-per-file layout of the bundled DAGs."""
    own = {f for f in (dag.relative_fileloc, dag.fileloc) if f} if dag is not None else set()
    out = []
    for e in errors:
        if not e.filename:
            continue
        if own:
            mine = e.filename in own and (not dag.bundle_name or not e.bundle_name or e.bundle_name == dag.bundle_name)
        else:
            mine = PurePath(e.filename).name == f"{dag_id}.py"
        if mine:
            out.append(e)
    return out


def run_duration(start: datetime | None, end: datetime | None, now: datetime | None = None) -> float | None:
    """Seconds from start to end (or to `now` while it runs); None before it starts."""
    if start is None:
        return None
    end = end or now
    if end is None:
        return None
    return max(0.0, (end - start).total_seconds())


class DagRun(_Model):
    dag_run_id: str
    dag_id: str
    state: str
    logical_date: datetime | None = None
    queued_at: datetime | None = None
    start_date: datetime | None = None
    end_date: datetime | None = None
    run_type: str | None = None
    conf: dict[str, Any] | None = None
    note: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_RUN_STATES


class TaskInstance(_Model):
    task_id: str
    dag_id: str | None = None
    dag_run_id: str | None = None
    map_index: int = -1
    state: str | None = None
    try_number: int = 0
    start_date: datetime | None = None
    end_date: datetime | None = None
    duration: float | None = None
    operator: str | None = None


class LogChunk(_Model):
    """One page of a task log: structured events plus a continuation token."""

    content: list[dict[str, Any]] | str = Field(default_factory=list)
    continuation_token: str | None = None

    def lines(self) -> list[str]:
        """The page as text lines.

        `print()` output (logger task.stdout) stays as is, other events get `[level]`, an exception's
        `error_detail` adds `ExcType: message` lines, and the `::group::`/`::endgroup::` markers are dropped.
        """
        if isinstance(self.content, str):
            return self.content.splitlines()
        out: list[str] = []
        for ev in self.content:
            if not isinstance(ev, dict):
                out.append(str(ev))
                continue
            event = str(ev.get("event", ""))
            if event == "::endgroup::":
                continue
            if event.startswith("::group::"):
                event = event.removeprefix("::group::")
                if not event or event.startswith("Log message source"):
                    continue
            level = ev.get("level")
            prefix = f"[{level}] " if level and ev.get("logger") != "task.stdout" else ""
            out.extend(f"{prefix}{line}" if i == 0 else line for i, line in enumerate(event.splitlines() or [""]))
            for err in ev.get("error_detail") or []:
                if isinstance(err, dict) and err.get("exc_type"):
                    out.append(f"  {err['exc_type']}: {err.get('exc_value', '')}")
        return out


class Connection(_Model):
    connection_id: str
    conn_type: str
    description: str | None = None
    host: str | None = None
    login: str | None = None
    schema_: str | None = Field(default=None, alias="schema")
    port: int | None = None
    password: str | None = None  # always '***' when read back
    extra: str | None = None  # a JSON *string*


class Variable(_Model):
    key: str
    value: str | None = None
    description: str | None = None
