"""Exception hierarchy and the exit codes they map to.

README.md lists the exit codes for users; docs/architecture.md explains how errors become exit codes.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """Process exit codes. Stable: scripts depend on them."""

    OK = 0
    ERROR = 1  # unexpected internal error (a bug: re-run with --debug)
    USAGE = 2  # bad flag/argument (click's own usage errors too)
    CONFIG = 3  # bad settings/.env/context
    UNREACHABLE = 4  # Airflow/MLflow/Databricks not reachable (connection refused, DNS, timeout)
    AUTH = 5  # 401/403: wrong or expired credentials
    NOT_FOUND = 6  # unknown DAG, run id, connection, pipeline
    REJECTED = 7  # the server refused the request (400/409/422), e.g. conf failing a Param schema
    RUN_FAILED = 8  # the pipeline run ended failed
    TIMEOUT = 9  # --timeout elapsed while waiting (the run keeps going)
    SERVER = 10  # 5xx from a server after retries
    STACK = 11  # the embedded local stack failed to start/stop (port taken, component crashed)
    DAG_ERROR = 12  # a DAG failed to import / `check` found problems
    GATE_FAILED = 13  # `promote`: a gate failed; the alias and the version were left as they were
    INTERRUPTED = 130  # Ctrl-C (the run, if any, keeps going)


class MlopsctlError(Exception):
    """Base error: one clear message, an optional hint, an exit code.

    A subclass names its exit code in its class statement: `class XError(MlopsctlError, exit_code=...)`.
    """

    exit_code: ExitCode = ExitCode.ERROR

    def __init_subclass__(cls, *, exit_code: ExitCode | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if exit_code is not None:
            cls.exit_code = exit_code

    def __init__(self, message: str, *, hint: str | None = None, exit_code: ExitCode | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.message


class InputError(MlopsctlError, exit_code=ExitCode.USAGE):
    """Bad user input judged locally, before any request is sent."""


class ConfigError(MlopsctlError, exit_code=ExitCode.CONFIG):
    """Bad or missing settings, .env values or context."""


class UnreachableError(MlopsctlError, exit_code=ExitCode.UNREACHABLE):
    """A server did not answer: connection refused, DNS failure or timeout."""


class AuthError(MlopsctlError, exit_code=ExitCode.AUTH):
    """401/403: the server refused the credentials."""


class NotFoundError(MlopsctlError, exit_code=ExitCode.NOT_FOUND):
    """The named DAG, run, connection, context or pipeline does not exist."""


class RejectedError(MlopsctlError, exit_code=ExitCode.REJECTED):
    """400/422: the server validated the request and refused it (message carries the server's reason)."""


class ConflictError(RejectedError):
    """409: the resource already exists (e.g. same dag_run_id)."""


class ServerError(MlopsctlError, exit_code=ExitCode.SERVER):
    """A 5xx answer that outlasted the retries."""


class RunFailedError(MlopsctlError, exit_code=ExitCode.RUN_FAILED):
    """The pipeline run ended in a failed state."""


class WaitTimeoutError(MlopsctlError, exit_code=ExitCode.TIMEOUT):
    """--timeout elapsed while waiting on a run (the run keeps going)."""


class StackError(MlopsctlError, exit_code=ExitCode.STACK):
    """The embedded local stack failed to start or stop (port taken, component crashed)."""


class DagError(MlopsctlError, exit_code=ExitCode.DAG_ERROR):
    """A DAG failed to import, or `check` found problems."""


class GateFailedError(MlopsctlError, exit_code=ExitCode.GATE_FAILED):
    """`promote`: the candidate failed a gate; nothing was changed."""
