"""What `dev start`, `dev status` and `dev stop` return; their JSON (`--json`) is derived from the fields
(`as_dict`), with the few renamed or computed keys declared on the fields themselves."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_serializer, model_serializer

from mlopsctl.devenv.health import last_line
from mlopsctl.devenv.layout import ADMIN_USER


class _Result(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


def _with_urls(data: dict[str, Any], urls: dict[str, str], after: str) -> dict[str, Any]:
    """``data`` with the URL keys (`airflow_url`, ...) inserted after key ``after``."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key != "urls":
            out[key] = value
        if key == after:
            out.update(urls)
    return out


class ComponentState(_Result):
    name: str = Field(serialization_alias="component")
    pid: int | None
    running: bool
    port: int | None
    health: str  # healthy | unhealthy | starting | stopped | unknown
    rss_bytes: int = 0
    pss_bytes: int = 0
    processes: int = 0
    started_at: float | None = None
    log_file: str = ""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def rss_mb(self) -> float:
        return round(self.rss_bytes / 1e6, 1)

    @field_serializer("started_at")
    def _iso(self, value: float | None) -> str | None:
        return datetime.fromtimestamp(value, UTC).isoformat() if value else None


class StackStatus(_Result):
    state_dir: Path
    urls: dict[str, str]
    username: str = ADMIN_USER
    passwords_file: Path
    components: list[ComponentState]

    @property
    def running(self) -> list[str]:
        return [c.name for c in self.components if c.running]

    @computed_field(alias="running")  # type: ignore[prop-decorator]
    @property
    def all_running(self) -> bool:
        return len(self.running) == len(self.components)

    @computed_field(alias="healthy")  # type: ignore[prop-decorator]
    @property
    def all_healthy(self) -> bool:
        return all(c.health == "healthy" for c in self.components)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_rss_bytes(self) -> int:
        return sum(c.rss_bytes for c in self.components)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_rss_mb(self) -> float:
        return round(self.total_rss_bytes / 1e6, 1)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_pss_bytes(self) -> int:
        return sum(c.pss_bytes for c in self.components)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_pss_mb(self) -> float:
        return round(self.total_pss_bytes / 1e6, 1)

    @model_serializer(mode="wrap")
    def _flat_urls(self, handler: Any) -> dict[str, Any]:
        return _with_urls(handler(self), self.urls, "state_dir")


class StartResult(_Result):
    already_running: bool
    started: list[str]
    seconds: float
    migrated: bool
    urls: dict[str, str]
    username: str = ADMIN_USER
    passwords_file: Path
    dags_folder: Path
    dags: dict[str, list[str]] = Field(default_factory=dict)
    import_errors: dict[str, str] = Field(default_factory=dict)  # file name -> stack trace (JSON: its last line)

    @field_serializer("seconds")
    def _round(self, value: float) -> float:
        return round(value, 1)

    @field_serializer("import_errors")
    def _last_lines(self, value: dict[str, str]) -> dict[str, str]:
        return {name: last_line(trace) for name, trace in value.items()}

    @model_serializer(mode="wrap")
    def _flat_urls(self, handler: Any) -> dict[str, Any]:
        return _with_urls(handler(self), self.urls, "migrated")


class StopResult(_Result):
    stopped: list[str]
    stale: list[str] = Field(serialization_alias="stale_pid_files")
    seconds: float
    leftover: list[int] = Field(default_factory=list, serialization_alias="leftover_pids")

    @field_serializer("seconds")
    def _round(self, value: float) -> float:
        return round(value, 1)
