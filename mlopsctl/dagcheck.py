"""Parse a folder of DAG files in-process (no running Airflow, no database) and report problems.

Like `astro dev parse`: every file goes through Airflow's own DagBag importer, on a throwaway
AIRFLOW_HOME when none is configured. Checks: import errors, cycles, DAGs without tags, tasks without
retries, Params without a JSON-schema type, Variable/Connection reads at parse time, slow parses.
Airflow is imported lazily, inside `check_dags`, never at CLI import time.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_MAX_PARSE_SECONDS = 2.0
SCHEMA_KEYS = ("type", "enum", "const", "anyOf", "oneOf", "allOf", "$ref")

# kind -> severity. Errors fail `check`; warnings fail it only with --strict.
KINDS: dict[str, str] = {
    "no_dag_files": "error",
    "import_error": "error",
    "cycle": "error",
    "missing_tags": "error",
    "missing_retries": "error",
    "param_without_schema": "error",
    "parse_time_io": "error",
    "slow_parse": "warning",
}


@dataclass
class Problem:
    kind: str
    file: str
    message: str
    dag_id: str | None = None
    severity: str = ""

    def __post_init__(self) -> None:
        self.severity = self.severity or KINDS[self.kind]


@dataclass
class FileReport:
    file: str
    parse_seconds: float
    dag_ids: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


@dataclass
class CheckReport:
    path: str
    max_parse_seconds: float
    files: list[FileReport] = field(default_factory=list)
    problems_outside_files: list[Problem] = field(default_factory=list)

    @property
    def problems(self) -> list[Problem]:
        return self.problems_outside_files + [p for f in self.files for p in f.problems]

    def failed(self, strict: bool = False) -> bool:
        return any(p.severity == "error" or strict for p in self.problems)

    def to_dict(self, strict: bool = False) -> dict[str, Any]:
        return {
            "path": self.path,
            "ok": not self.failed(strict),
            "max_parse_seconds": self.max_parse_seconds,
            "dag_count": sum(len(f.dag_ids) for f in self.files),
            "files": [asdict(f) for f in self.files],
            "problems": [asdict(p) for p in self.problems],
        }


class ParseTimeAccessError(RuntimeError):
    """Raised (and recorded) when a DAG file reads a Variable or Connection while being parsed."""


# --- airflow environment ----------------------------------------------------------------------------


def _prepare_airflow_env() -> None:
    """Point Airflow at a throwaway home unless one is configured (must run before `import airflow`)."""
    if "airflow" not in sys.modules and not os.environ.get("AIRFLOW_HOME"):
        home = tempfile.mkdtemp(prefix="mlopsctl-check-airflow-")
        atexit.register(shutil.rmtree, home, ignore_errors=True)
        os.environ["AIRFLOW_HOME"] = home
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "CRITICAL")


@contextlib.contextmanager
def _quiet_logging() -> Iterator[None]:
    """Airflow logs every import error with a traceback; the report says it once, shorter."""
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(previous)


@contextlib.contextmanager
def _record_parse_time_access(accesses: list[tuple[str, str]]) -> Iterator[None]:
    """Patch the getters every Variable/Connection read goes through (Task SDK and legacy models)."""
    import importlib

    def recorder(kind: str):
        def _blocked(key: Any = None, *args: Any, **kwargs: Any):
            key = kwargs.get("key", kwargs.get("conn_id", key))
            accesses.append((kind, str(key)))
            raise ParseTimeAccessError(f"{kind} {key!r} read at parse time")

        return _blocked

    targets = [
        ("airflow.sdk.execution_time.context", "_get_variable", "Variable", False),
        ("airflow.sdk.execution_time.context", "_get_connection", "Connection", False),
        ("airflow.sdk.execution_time.context", "_async_get_connection", "Connection", False),
        ("airflow.models.variable", "Variable.get", "Variable", True),
        ("airflow.models.connection", "Connection.get_connection_from_secrets", "Connection", True),
    ]
    restore: list[tuple[Any, str, Any]] = []
    try:
        for module_name, attr, kind, is_classmethod in targets:
            try:
                owner: Any = importlib.import_module(module_name)
            except ImportError:
                continue
            *parents, name = attr.split(".")
            for parent in parents:
                owner = getattr(owner, parent, None)
            if owner is None or not hasattr(owner, name):
                continue
            original = owner.__dict__.get(name, getattr(owner, name))
            replacement = recorder(kind)
            setattr(
                owner,
                name,
                classmethod(lambda cls, *a, _f=replacement, **k: _f(*a, **k))
                if is_classmethod
                else replacement,
            )
            restore.append((owner, name, original))
        yield
    finally:
        for owner, name, original in reversed(restore):
            setattr(owner, name, original)


@contextlib.contextmanager
def _dags_on_sys_path(folder: Path) -> Iterator[None]:
    """Like Airflow's dag-processor: the DAGs folder is importable (`from common import ...`). Modules
    imported from it are dropped afterwards so a second check of another folder starts clean."""
    entry = str(folder)
    sys.path.insert(0, entry)
    before = set(sys.modules)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)
        for mod_name in set(sys.modules) - before:
            mod_file = getattr(sys.modules.get(mod_name), "__file__", None) or ""
            if mod_file.startswith(entry + os.sep):
                sys.modules.pop(mod_name, None)


# --- error text -------------------------------------------------------------------------------------

_FRAME_RE = re.compile(r'File "([^"]+)", line (\d+)')


def short_error(text: str, filepath: str) -> str:
    """One line: `line N: ErrorType: message` (the last frame in the DAG file, the final line)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    last = lines[-1] if lines else "unknown error"
    where = ""
    for path, lineno in _FRAME_RE.findall(text):
        if os.path.abspath(path) == os.path.abspath(filepath):
            where = f"line {lineno}: "
    return f"{where}{last}"[:500]


# --- checks -----------------------------------------------------------------------------------------


def _dag_problems(dag: Any, rel: str) -> list[Problem]:
    problems: list[Problem] = []
    if not dag.tags:
        problems.append(Problem("missing_tags", rel, "DAG has no tags (tags=[...]).", dag.dag_id))
    no_retries = sorted(t.task_id for t in dag.tasks if not getattr(t, "retries", 0))
    if no_retries:
        problems.append(
            Problem(
                "missing_retries",
                rel,
                f"tasks without retries: {', '.join(no_retries)} (set default_args={{'retries': N}}).",
                dag.dag_id,
            )
        )
    params = getattr(dag, "params", None) or {}
    for name, param in params.items():
        schema = getattr(param, "schema", None) or {}
        if not any(key in schema for key in SCHEMA_KEYS):
            problems.append(
                Problem(
                    "param_without_schema",
                    rel,
                    f"Param {name!r} has no JSON-schema type: Airflow cannot reject bad values at trigger time.",
                    dag.dag_id,
                )
            )
    return problems


def _dag_files(path: Path, safe_mode: bool) -> list[str]:
    from airflow.utils.file import list_py_file_paths

    return sorted(list_py_file_paths(str(path), safe_mode=safe_mode))


def check_dags(
    path: Path, *, max_parse_seconds: float = DEFAULT_MAX_PARSE_SECONDS, safe_mode: bool = True
) -> CheckReport:
    """Parse every DAG file under `path` (a folder or one file) and return what is wrong."""
    path = path.expanduser().resolve()
    report = CheckReport(path=str(path), max_parse_seconds=max_parse_seconds)
    folder = path if path.is_dir() else path.parent

    _prepare_airflow_env()
    with _quiet_logging():
        import airflow.sdk  # noqa: F401 - warm imports so the first file's parse time is its own
        from airflow.dag_processing.dagbag import DagBag

        files = _dag_files(path, safe_mode)
        if not files:
            report.problems_outside_files.append(
                Problem(
                    "no_dag_files",
                    str(path),
                    "no DAG files found (files need to mention 'airflow' and 'dag').",
                )
            )
            return report
        bag = DagBag(dag_folder=str(folder), collect_dags=False, bundle_path=folder)
        with _dags_on_sys_path(folder):
            for filepath in files:
                report.files.append(_check_file(bag, filepath, folder, max_parse_seconds))
    return report


def _check_file(bag: Any, filepath: str, folder: Path, max_parse_seconds: float) -> FileReport:
    rel = os.path.relpath(filepath, folder)
    accesses: list[tuple[str, str]] = []
    errors_before = set(bag.import_errors)
    with _record_parse_time_access(accesses):
        started = time.perf_counter()
        dags = bag.process_file(filepath, only_if_updated=False, safe_mode=True)
        elapsed = time.perf_counter() - started
    result = FileReport(file=rel, parse_seconds=round(elapsed, 4), dag_ids=sorted(d.dag_id for d in dags))

    for kind, key in dict.fromkeys(accesses):
        result.problems.append(
            Problem(
                "parse_time_io",
                rel,
                f"{kind}.get({key!r}) runs at parse time (every parse, every few seconds, on every "
                "dag-processor): read it inside a task or use a Jinja template.",
            )
        )
    for key in set(bag.import_errors) - errors_before:
        text = bag.import_errors.pop(key)
        if "ParseTimeAccessError" in text:
            continue  # reported above as parse_time_io
        if "AirflowDagCycleException" in text:
            result.problems.append(Problem("cycle", rel, short_error(text, filepath)))
        else:
            result.problems.append(Problem("import_error", rel, short_error(text, filepath)))
    for dag in dags:
        result.problems.extend(_dag_problems(dag, rel))
    if elapsed > max_parse_seconds:
        result.problems.append(
            Problem(
                "slow_parse",
                rel,
                f"parse took {elapsed:.2f}s (> {max_parse_seconds:g}s): move heavy imports and work into tasks.",
            )
        )
    return result
