"""The jobs' command line: the argv every job takes (`base_parser`, `add_model_args`, `add_grid_args`), the
argparse types, and the process's end (`run_main` turns bad data and running out of memory into one
``mlopsctl-error:`` line and exit `EXIT_NO_RETRY`; `run_script` is each entry script's ``__main__``). A job given ``--jobs-version`` stops the
same way, right after parsing, when the installed jobs' wheel is another version (`mlopsctl_jobs.installed`).

`EXIT_NO_RETRY` and `ERROR_PREFIX` are the contract with the DAGs' backends (dags/common/), which keep their own
copies (tests/unit/test_contract_copies.py pins them).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from typing import Any

from mlopsctl_jobs.data import DataError
from mlopsctl_jobs.grid import GridError
from mlopsctl_jobs.installed import StaleJobsError, mismatch
from mlopsctl_jobs.memory import OutOfMemory, out_of_memory

# Exit code for failures that retrying cannot fix (bad data, every grid point failed).
EXIT_NO_RETRY = 3
ERROR_PREFIX = "mlopsctl-error:"


def na_values_arg(text: str) -> tuple[str, ...] | None:
    """argparse type of --na-values: comma-separated tokens; empty = the default `data.NA_VALUES`."""
    tokens = tuple(t.strip() for t in text.split(",") if t.strip())
    return tokens or None


def int_arg(text: str) -> int:
    """argparse type: an integer ('80'; '80.0' too, as JSON may carry it)."""
    try:
        return int(text)  # exact, however large (float() would round 2**60 + 1)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}")
    return int(value)


def int_list_arg(text: str) -> list[int]:
    """argparse type: comma-separated integers ('80,90,100'; JSON '[80, 90]' too)."""
    items = [p for p in re.split(r"[,\s\[\]]+", text) if p]
    if not items:
        raise argparse.ArgumentTypeError(f"empty list: {text!r}")
    return [int_arg(p) for p in items]


def optional_str(text: str) -> str | None:
    """Empty = not set. (The DAG templates render None as ''; a model really named 'None' stays 'None'.)"""
    return text if text != "" else None


class JobArgumentParser(argparse.ArgumentParser):
    """The jobs' argv is built as [--flag, value, ...] pairs. Plain argparse takes a value that starts with
    '-' (a target column '-x', a model name '--v2') for an option and fails; here every value that follows
    a one-value option is bound to it (as if written --flag=value), so user strings arrive verbatim.

    A job whose argv names the jobs' version it expects (``--jobs-version``) stops here, before any work,
    when the installed one differs: one ``mlopsctl-error:`` line and exit `EXIT_NO_RETRY`."""

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        args = list(sys.argv[1:] if args is None else args)
        takes_value = {
            opt
            for action in self._actions
            if isinstance(action, argparse._StoreAction) and action.nargs is None
            for opt in action.option_strings
        }
        joined: list[str] = []
        i = 0
        while i < len(args):
            if args[i] in takes_value and i + 1 < len(args):
                joined.append(f"{args[i]}={args[i + 1]}")
                i += 2
            else:
                joined.append(args[i])
                i += 1
        parsed, extras = super().parse_known_args(joined, namespace)
        stale = mismatch(getattr(parsed, "jobs_version", None))
        if stale:
            _stop(stale)
        return parsed, extras


def base_parser(description: str) -> argparse.ArgumentParser:
    p = JobArgumentParser(description=description)
    p.add_argument("--dag-id", required=True)
    p.add_argument("--run-id", required=True, help="Airflow dag_run_id (keys the training table and MLflow runs)")
    p.add_argument("--try-number", type=int_arg, default=None)
    p.add_argument("--work-dir", required=True, help="where training tables live")
    p.add_argument("--data", type=optional_str, default=None,
                   help="CSV/Parquet path, URI, /Volumes/... path or table name; empty = bundled diabetes data")
    p.add_argument("--target", default="target")
    p.add_argument("--na-values", type=na_values_arg, default=None,
                   help="comma-separated tokens read as missing in CSV sources; empty = the default NA_VALUES")
    p.add_argument("--tracking-uri", type=optional_str, default=None)
    p.add_argument("--registry-uri", type=optional_str, default=None)
    p.add_argument("--experiment-prefix", default="/mlopsctl")
    p.add_argument("--jobs-version", type=optional_str, default=None,
                   help="the mlopsctl-jobs version the task was deployed with (Databricks); empty = not checked")
    return p


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--test-size", type=float, default=0.2)
    p.add_argument("--random-state", type=int_arg, default=42)
    p.add_argument("--register-model", type=optional_str, default=None, help="registered model name; empty = none")


def add_grid_args(p: argparse.ArgumentParser) -> None:
    """The grid-search jobs' own arguments (grid_search and grid_search_spark), then `add_model_args`."""
    p.add_argument("--max-depth", type=int_list_arg, required=True, help="e.g. 80,90,100")
    p.add_argument("--n-estimators", type=int_list_arg, required=True, help="e.g. 100,200")
    p.add_argument("--cv", type=int_arg, default=3)
    add_model_args(p)


def run_main(fn: Callable[[], Any], data: str | None = None) -> None:
    """Run a job's body; turn non-retryable failures into one clear line + EXIT_NO_RETRY: bad data, and
    running out of memory on ``data`` (the job's ``--data``: `mlopsctl_jobs.memory`)."""
    try:
        fn()
    except (DataError, GridError, StaleJobsError, OutOfMemory) as exc:
        _stop(str(exc))
    except Exception as exc:
        failure = out_of_memory(exc, data)
        if failure is None:
            raise
        _stop(str(failure))


def _stop(message: str) -> None:
    print(f"{ERROR_PREFIX} {message}", file=sys.stderr, flush=True)
    sys.exit(EXIT_NO_RETRY)


def run_script(main: Callable[[], Any]) -> None:
    """A job file's ``__main__`` entry: run ``main``, then end the process as soon as its output is flushed.

    Everything the job does (Spark writes, MLflow logging, the session's release) is finished when ``main``
    returns; what is left is the interpreter's teardown of mlflow, scikit-learn, pandas, pyarrow and the
    gRPC client, which took 2-8 s of CPU per job here and does nothing the caller can see. Exit codes are
    kept (0, or 3 for bad data). An uncaught exception takes the normal path (traceback, exit 1). On
    Databricks the runtime owns the process, so the job ends normally there."""
    try:
        main()
        code = 0
    except SystemExit as exc:
        if not isinstance(exc.code, int | None):
            raise
        code = exc.code or 0
    if os.environ.get("DATABRICKS_RUNTIME_VERSION"):
        sys.exit(code)
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
