"""Each error class carries the exit code README.md documents for it; a raise site may override it."""

from __future__ import annotations

import pytest

from mlopsctl import errors
from mlopsctl.errors import ExitCode

CODES = {
    errors.MlopsctlError: ExitCode.ERROR,
    errors.InputError: ExitCode.USAGE,
    errors.ConfigError: ExitCode.CONFIG,
    errors.UnreachableError: ExitCode.UNREACHABLE,
    errors.AuthError: ExitCode.AUTH,
    errors.NotFoundError: ExitCode.NOT_FOUND,
    errors.RejectedError: ExitCode.REJECTED,
    errors.ConflictError: ExitCode.REJECTED,
    errors.ServerError: ExitCode.SERVER,
    errors.RunFailedError: ExitCode.RUN_FAILED,
    errors.WaitTimeoutError: ExitCode.TIMEOUT,
    errors.StackError: ExitCode.STACK,
    errors.DagError: ExitCode.DAG_ERROR,
}


@pytest.mark.parametrize(("cls", "code"), CODES.items(), ids=lambda v: getattr(v, "__name__", str(v)))
def test_error_class_exit_code(cls: type[errors.MlopsctlError], code: ExitCode) -> None:
    assert cls.exit_code == code
    err = cls("boom", hint="try again")
    assert (err.exit_code, str(err), err.hint) == (code, "boom", "try again")


def test_raise_site_overrides_the_exit_code_of_one_instance_only() -> None:
    assert errors.ConfigError("x", exit_code=ExitCode.USAGE).exit_code == ExitCode.USAGE
    assert errors.ConfigError("y").exit_code == ExitCode.CONFIG
