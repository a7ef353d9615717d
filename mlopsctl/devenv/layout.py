"""Where the local stack keeps its files under the state dir, and its generated admin password.

Standard library only, and no import of the settings: the CLI-only install reads the local password through
this module (`Settings.local_airflow_password`) without the `local` extra.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mlopsctl.errors import ConfigError

ADMIN_USER = "admin"
_MAX_SOCKET_PATH = 100  # bytes; sun_path holds 108 on Linux, 104 on macOS


class _HasState(Protocol):
    @property
    def state(self) -> Path: ...


@dataclass(frozen=True)
class StackLayout:
    """Files and folders of the local stack under the state dir."""

    state: Path

    @classmethod
    def from_settings(cls, settings: _HasState) -> StackLayout:
        return cls(settings.state)

    @property
    def airflow_home(self) -> Path:
        return self.state / "airflow"

    @property
    def airflow_db(self) -> Path:
        return self.airflow_home / "airflow.db"

    @property
    def airflow_cfg(self) -> Path:
        return self.airflow_home / "airflow.cfg"

    @property
    def passwords_file(self) -> Path:
        return self.airflow_home / "passwords.json"

    @property
    def migrate_stamp(self) -> Path:
        return self.airflow_home / ".mlopsctl-db-migrated"

    @property
    def mlflow_dir(self) -> Path:
        return self.state / "mlflow"

    @property
    def mlflow_db(self) -> Path:
        return self.mlflow_dir / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.mlflow_dir / "artifacts"

    @property
    def spark_dir(self) -> Path:
        """Working dir of the Spark Connect server: its scratch space and SQL warehouse."""
        return self.state / "spark"

    @property
    def launcher_socket(self) -> Path:
        """The job launcher's Unix socket: in the state dir, unless that path is too long for a socket address
        (about 100 bytes), then in a private per-user folder of the temp dir, named after the state dir."""
        path = self.state / "launcher.sock"
        if len(os.fsencode(path)) <= _MAX_SOCKET_PATH:
            return path
        import hashlib
        import tempfile

        digest = hashlib.sha256(os.fsencode(self.state.resolve())).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"mlopsctl-{os.getuid()}" / f"{digest}.sock"

    @property
    def logs_dir(self) -> Path:
        return self.state / "logs"

    @property
    def pids_dir(self) -> Path:
        return self.state / "pids"

    @property
    def work_dir(self) -> Path:
        return self.state / "work"

    def log_file(self, component: str) -> Path:
        return self.logs_dir / f"{component}.log"

    def pid_file(self, component: str) -> Path:
        return self.pids_dir / f"{component}.pid"

    def ensure(self) -> None:
        """Create the layout; the state dir itself is private (0700)."""
        self.state.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state, 0o700)
        for path in (
            self.airflow_home,
            self.mlflow_dir,
            self.mlflow_artifacts,
            self.spark_dir,
            self.logs_dir,
            self.pids_dir,
            self.work_dir,
        ):
            path.mkdir(parents=True, exist_ok=True)
        socket_dir = self.launcher_socket.parent
        if socket_dir != self.state:
            socket_dir.mkdir(mode=0o700, exist_ok=True)
            if socket_dir.stat().st_uid != os.getuid():
                raise ConfigError(f"{socket_dir} belongs to another user; the job launcher cannot use it.",
                                  hint="Remove it, or use a shorter MLOPSCTL_STATE_DIR.")
            os.chmod(socket_dir, 0o700)


def ensure_admin_password(layout: StackLayout) -> str:
    """Return the local admin password, generating the passwords file (0600) on first use."""
    path = layout.passwords_file
    password = read_admin_password(layout)
    if password is not None:
        os.chmod(path, 0o600)
        return password
    path.parent.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(18)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({ADMIN_USER: password}, fh)
    os.chmod(path, 0o600)
    return password


def read_admin_password(layout: StackLayout, username: str = ADMIN_USER) -> str | None:
    """The password of `username` in the passwords file; None if there is none."""
    try:
        return admin_password(layout, username)
    except ConfigError:
        return None


def admin_password(layout: StackLayout, username: str = ADMIN_USER) -> str:
    """The password of `username` in the passwords file; ConfigError saying what is missing otherwise."""
    path = layout.passwords_file
    hint = "Start the local stack with `mlopsctl dev start` (it generates the password), or set MLOPSCTL_AIRFLOW_PASSWORD."
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"No Airflow password is set and the local stack's password file {path} does not exist.", hint=hint
        ) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"Cannot read the local stack's password file {path}: {type(exc).__name__}.", hint=hint
        ) from None
    value = data.get(username) if isinstance(data, dict) else None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"The local stack's password file {path} has no entry for user {username!r}.", hint=hint)
    return value
