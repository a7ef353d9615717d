"""Parse a folder of DAG files in-process (no running Airflow, no database) and report problems.

Like `astro dev parse`: every file goes through Airflow's own DagBag importer, on a throwaway
AIRFLOW_HOME when none is configured. Checks: import errors, cycles, DAGs without tags, tasks without
retries, Params without a JSON-schema type, Variable/Connection reads at parse time, slow parses.
Beside the import: ruff's Airflow rules (`AIR`, incl. the Airflow 2 -> 3 migration rules AIR3xx) on the
folder, and a scan of each file's syntax tree for code that runs at every parse (clock, randomness,
print, file/network I/O, subprocesses outside tasks).
Airflow is imported lazily, inside `check_dags`, never at CLI import time.
"""

from __future__ import annotations

import ast
import atexit
import contextlib
import json
import logging
import os
import re
import shutil
import subprocess
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
    "airflow3_removed": "error",  # ruff AIR301-AIR303: breaks the DAG (or its tasks) on Airflow 3
    "airflow3_deprecated": "warning",  # ruff AIR311/AIR312/AIR321: still works, moved or renamed
    "airflow_lint": "warning",  # ruff's other AIR rules (AIR0xx, AIR2xx)
    "top_level_code": "warning",  # runs at every parse, outside any task
    "ruff_unavailable": "warning",
    "slow_parse": "warning",
}


@dataclass
class Problem:
    kind: str
    file: str
    message: str
    dag_id: str | None = None
    severity: str = ""
    line: int | None = None
    rule: str | None = None  # ruff's code (AIR301) or the top-level-code rule (clock, print, ...)
    fix: str | None = None  # what to write instead, when known
    explains_import_error: bool = False  # this finding is the cause of the file's import error

    def __post_init__(self) -> None:
        self.severity = self.severity or KINDS[self.kind]


@dataclass
class FileReport:
    """What the check found in one file: its parse time, its DAGs, its problems."""

    file: str
    parse_seconds: float
    dag_ids: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


@dataclass
class CheckReport:
    """A FileReport per DAG file parsed under `path`, and `outside`, the report on `path` itself (nothing
    parsed, no DAGs): it holds the problems no parsed DAG file owns (no DAG files at all, ruff unavailable,
    ruff's findings in helper modules)."""

    path: str
    max_parse_seconds: float
    files: list[FileReport] = field(default_factory=list)
    outside: FileReport = field(init=False)

    def __post_init__(self) -> None:
        self.outside = FileReport(self.path, parse_seconds=0.0)

    @property
    def problems(self) -> list[Problem]:
        return [p for f in (self.outside, *self.files) for p in f.problems]

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


# --- ruff's Airflow rules (AIR) ---------------------------------------------------------------------

RUFF_ARGS = ("check", "--select", "AIR", "--output-format", "json", "--no-cache", "--isolated", "--exit-zero")


def ruff_bin() -> str | None:
    """The ruff the `local` extra installs: the ruff package's own finder, else next to this Python."""
    try:
        from ruff.__main__ import find_ruff_bin

        return str(find_ruff_bin())
    except (ImportError, FileNotFoundError):
        beside = Path(sys.executable).parent / ("ruff.exe" if os.name == "nt" else "ruff")
        return str(beside) if beside.is_file() else None


def ruff_kind(code: str) -> str:
    """AIR30x: removed in Airflow 3 (error); AIR31x/AIR32x: moved or renamed, still works (warning)."""
    if code.startswith("AIR30"):
        return "airflow3_removed"
    if code.startswith(("AIR31", "AIR32")):
        return "airflow3_deprecated"
    return "airflow_lint"


def _source_slice(lines: list[str], start: dict[str, int], end: dict[str, int]) -> str:
    """The text between two ruff locations (1-based row and column)."""

    def offset(loc: dict[str, int]) -> int:
        row = min(loc["row"], len(lines) + 1)
        return sum(len(ln) for ln in lines[: row - 1]) + loc["column"] - 1

    return "".join(lines)[offset(start) : offset(end)]


def _one_line(text: str, limit: int = 120) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def ruff_fix_text(fix: dict[str, Any] | None, lines: list[str]) -> str | None:
    """ruff's fix as a sentence: its message, then each edit as `old` -> `new`, add `new` or remove `old`."""
    if not fix:
        return None
    edits = []
    for edit in fix.get("edits") or []:
        old = _one_line(_source_slice(lines, edit["location"], edit["end_location"]))
        new = _one_line(edit.get("content") or "")
        if old and new:
            edits.append(f"`{old}` -> `{new}`")
        elif new or old:
            edits.append(f"add `{new}`" if new else f"remove `{old}`")
    message = (fix.get("message") or "").strip()
    if message and edits:
        return f"{message} ({'; '.join(edits)})"
    return message or "; ".join(edits) or None


def ruff_problems(path: Path, folder: Path, binary: str | None) -> list[Problem]:
    """Run `ruff check --select AIR` on `path` and turn each finding into a Problem (file, line, fix)."""
    if binary is None:
        return [
            Problem(
                "ruff_unavailable",
                str(path),
                "ruff is not installed: the Airflow 3 migration rules (AIR3xx) were skipped.",
                fix="pip install 'mlopsctl[local]'",
            )
        ]
    try:
        proc = subprocess.run(
            [binary, *RUFF_ARGS, str(path)], capture_output=True, text=True, check=False, timeout=300
        )
        diagnostics = json.loads(proc.stdout) if proc.returncode == 0 else None
        reason = _one_line(proc.stderr, 300)
    except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
        diagnostics, reason = None, str(exc)
    if not isinstance(diagnostics, list):
        return [Problem("ruff_unavailable", str(path), f"ruff failed, AIR rules skipped: {reason}")]
    problems: list[Problem] = []
    sources: dict[str, list[str]] = {}
    for diag in diagnostics:
        code = diag.get("code")
        if not code:  # a syntax error: the import reports it
            continue
        filename = diag["filename"]
        if filename not in sources:
            sources[filename] = Path(filename).read_text(encoding="utf-8", errors="replace").splitlines(True)
        problems.append(
            Problem(
                ruff_kind(code),
                os.path.relpath(filename, folder),
                diag["message"],
                line=diag["location"]["row"],
                rule=code,
                fix=ruff_fix_text(diag.get("fix"), sources[filename]),
            )
        )
    return problems


def explains(finding: Problem, import_error: Problem) -> bool:
    """A removed name (AIR30x) is the cause of an import error that names it, or fails on its line."""
    if finding.kind != "airflow3_removed":
        return False
    if finding.line is not None and finding.line == import_error.line:
        return True
    for name in re.findall(r"`([^`]+)`", finding.message):
        parts = name.split(".")
        candidates = {parts[-1]} | {".".join(parts[:n]) for n in range(2, len(parts) + 1)}
        if any(f"'{c}'" in import_error.message for c in candidates):
            return True
    return False


def link_import_errors(problems: list[Problem]) -> None:
    """Mark the AIR30x findings that cause a file's import error; the error's fix says what to write."""
    for error in (p for p in problems if p.kind == "import_error"):
        causes = [p for p in problems if p.file == error.file and explains(p, error)]
        for cause in causes:
            cause.explains_import_error = True
        if causes:
            error.fix = "; ".join(f"{c.rule} line {c.line}: {c.fix or c.message}" for c in causes)


# --- code that runs at every parse (the file's syntax tree, not the modules it imports) --------------

# rule -> (why it is a problem, what to do instead)
TOP_LEVEL_RULES: dict[str, tuple[str, str]] = {
    "clock": (
        "the value follows the clock, so the DAG changes at every parse",
        "use the run's dates ({{ ds }}, {{ data_interval_start }}) or {{ run_id }}, or compute it in a task",
    ),
    "random": ("a new random value at every parse changes the DAG each time", "draw it inside a task"),
    "print": ("prints into the dag-processor's log, not a task's", "log inside a task"),
    "file_io": (
        "file I/O on every dag-processor every few seconds, where the file may not exist",
        "read or write it inside a task",
    ),
    "network": ("a network call at every parse slows or breaks parsing", "make the call inside a task"),
    "subprocess": ("starts a process at every parse", "run it inside a task"),
    "sleep": ("slows every parse", "wait inside a task or with a sensor"),
}
_HTTP_VERBS = ("get", "post", "put", "patch", "delete", "head", "options", "request", "stream")
_CLOCK = (
    "datetime.datetime.now datetime.datetime.utcnow datetime.datetime.today datetime.date.today time.time "
    "time.time_ns time.localtime time.gmtime time.ctime time.strftime pendulum.now pendulum.today "
    "pendulum.yesterday pendulum.tomorrow pendulum.DateTime.now airflow.utils.timezone.utcnow "
    "pandas.Timestamp.now pandas.Timestamp.today pandas.Timestamp.utcnow"
)
_NETWORK = "urllib.request.urlopen urllib.request.urlretrieve socket.create_connection " + " ".join(
    f"{mod}.{verb}" for mod in ("requests", "httpx") for verb in _HTTP_VERBS
)
# qualified name of the called function (after resolving the file's imports) -> rule
_CALLS: dict[str, str] = {
    **dict.fromkeys(_CLOCK.split(), "clock"),
    **dict.fromkeys(("uuid.uuid1", "uuid.uuid4", "uuid.uuid6", "uuid.uuid7", "os.urandom"), "random"),
    **dict.fromkeys(("print", "pprint.pprint"), "print"),
    **dict.fromkeys(("open", "io.open", "codecs.open"), "file_io"),
    **dict.fromkeys(_NETWORK.split(), "network"),
    **dict.fromkeys(("os.system", "os.popen"), "subprocess"),
    "time.sleep": "sleep",
}
_CALL_PREFIXES = {
    "random.": "random",
    "secrets.": "random",
    "numpy.random.": "random",
    "subprocess.": "subprocess",
    "shutil.": "file_io",
    "pandas.read_": "file_io",
}
# seeded or side-effect-free members of the modules above
_HARMLESS = {
    "random.seed",
    "random.Random",
    "numpy.random.seed",
    "numpy.random.default_rng",
    "numpy.random.RandomState",
    "shutil.which",
    "subprocess.list2cmdline",
}
_PATH_METHODS = ("read_text", "read_bytes", "write_text", "write_bytes")


def _dotted(node: ast.AST) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _import_aliases(tree: ast.Module) -> dict[str, str]:
    """Local name -> qualified name, from every import in the file (`dt` -> `datetime.datetime`)."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    aliases[a.asname] = a.name
                else:
                    head = a.name.split(".")[0]
                    aliases[head] = head
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    return aliases


def _is_main_guard(test: ast.expr) -> bool:
    return (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in test.comparators)
    )


@dataclass
class ParseTimeRead:
    kind: str  # Variable | Connection
    key: str | None
    line: int


class _ParseTimeScan:
    """Finds the calls a DAG file makes while it is parsed: the module body, class bodies, the bodies of
    @dag/@task_group functions, of functions holding a `DAG(...)`, and of the file's functions they call.
    Bodies of @task functions, other functions that are only passed around, and lambdas run later."""

    def __init__(self, tree: ast.Module, rel: str):
        self.rel = rel
        self.aliases = _import_aliases(tree)
        self.problems: list[Problem] = []
        self.reads: list[ParseTimeRead] = []
        self.functions: dict[str, list[ast.FunctionDef | ast.AsyncFunctionDef]] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                self.functions.setdefault(node.name, []).append(node)
        self.queue: list[ast.FunctionDef | ast.AsyncFunctionDef] = [
            f for fs in self.functions.values() for f in fs if self._runs_at_parse(f)
        ]
        self.scanned: set[int] = set()
        self.seen: set[tuple[int, str]] = set()
        self._scan_body(tree.body)
        while self.queue:
            func = self.queue.pop()
            if id(func) not in self.scanned:
                self.scanned.add(id(func))
                self._scan_body(func.body)

    def qualified(self, node: ast.AST) -> str | None:
        name = _dotted(node)
        if name is None:
            return None
        head, _, rest = name.partition(".")
        head = self.aliases.get(head, head)
        return f"{head}.{rest}" if rest else head

    def _decorator_role(self, func: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
        """dag / task_group (body runs at parse), task (runs later), or plain."""
        for deco in func.decorator_list:
            name = self.qualified(deco.func if isinstance(deco, ast.Call) else deco) or ""
            parts = name.split(".")
            if "task_group" in parts:
                return "task_group"
            if parts[-1] == "dag":
                return "dag"
            if parts[0] == "airflow" or "task" in parts:
                return "task"
        return "plain"

    def _is_dag_call(self, node: ast.AST) -> bool:
        return isinstance(node, ast.Call) and (self.qualified(node.func) or "").split(".")[-1] == "DAG"

    def _runs_at_parse(self, func: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
        role = self._decorator_role(func)
        if role in ("dag", "task_group"):
            return True
        return role == "plain" and any(self._is_dag_call(n) for n in self._own_nodes(func.body))

    @staticmethod
    def _own_nodes(body: list[ast.stmt]) -> Iterator[ast.AST]:
        """Every node of `body` that runs with it: not the bodies of nested functions and lambdas (their
        decorators and default values do run), annotations, nor an `if __name__ == "__main__":` block
        (the dag-processor imports the file under another name)."""
        stack: list[ast.AST] = list(reversed(body))
        while stack:
            node = stack.pop()
            yield node
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                children: list[ast.AST] = [
                    *node.decorator_list,
                    *node.args.defaults,
                    *(d for d in node.args.kw_defaults if d),
                ]
            elif isinstance(node, ast.Lambda):
                children = [*node.args.defaults, *(d for d in node.args.kw_defaults if d)]
            elif isinstance(node, ast.AnnAssign):
                children = [node.target, node.value] if node.value else []
            elif isinstance(node, ast.If) and _is_main_guard(node.test):
                children = list(node.orelse)
            else:
                children = list(ast.iter_child_nodes(node))
            stack.extend(reversed(children))

    def _scan_body(self, body: list[ast.stmt]) -> None:
        for node in self._own_nodes(body):
            if isinstance(node, ast.Call):
                self._check_call(node)

    def _check_call(self, call: ast.Call) -> None:
        name = self.qualified(call.func)
        if isinstance(call.func, ast.Name) and call.func.id in self.functions:
            self.queue.extend(f for f in self.functions[call.func.id] if self._decorator_role(f) == "plain")
        self._record_read(call, name)
        rule = self._rule(call, name)
        if rule is None or (call.lineno, rule) in self.seen:
            return
        self.seen.add((call.lineno, rule))
        shown = _one_line(ast.unparse(call.func), 60)
        self.problems.append(
            Problem(
                "top_level_code",
                self.rel,
                f"`{shown}()` runs at every parse, outside any task: {TOP_LEVEL_RULES[rule][0]}.",
                line=call.lineno,
                rule=rule,
                fix=TOP_LEVEL_RULES[rule][1],
            )
        )

    @staticmethod
    def _rule(call: ast.Call, name: str | None) -> str | None:
        if name is not None and name not in _HARMLESS:
            if name in _CALLS:
                return _CALLS[name]
            for prefix, rule in _CALL_PREFIXES.items():
                if name.startswith(prefix):
                    return rule
        func = call.func
        if isinstance(func, ast.Attribute) and func.attr in _PATH_METHODS:
            return "file_io"
        return None

    def _record_read(self, call: ast.Call, name: str | None) -> None:
        """Variable/Connection reads: the import reports them as errors; this gives their line."""
        if not isinstance(call.func, ast.Attribute):
            return
        owner = (self.qualified(call.func.value) or "").split(".")[-1]
        attr = call.func.attr
        kind = None
        if owner == "Variable" and attr == "get":
            kind = "Variable"
        elif attr in ("get_connection", "get_connection_from_secrets") or (
            owner == "Connection" and attr == "get"
        ):
            kind = "Connection"
        if kind is None:
            return
        first = (
            call.args[0]
            if call.args
            else next((k.value for k in call.keywords if k.arg in ("key", "conn_id")), None)
        )
        key = first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None
        self.reads.append(ParseTimeRead(kind, key, call.lineno))


def scan_parse_time_code(source: str, rel: str) -> tuple[list[Problem], list[ParseTimeRead]]:
    """The top-level-code findings of one DAG file, and where it reads Variables/Connections at parse
    time. A file that does not parse has none (the import reports its syntax error)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return [], []
    scan = _ParseTimeScan(tree, rel)
    return sorted(scan.problems, key=lambda p: (p.line or 0, p.rule or "")), scan.reads


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
            report.outside.problems.append(
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
    by_file = {f.file: f for f in report.files}
    for problem in ruff_problems(path, folder, ruff_bin()):
        by_file.get(problem.file, report.outside).problems.append(problem)
    for f in report.files:
        link_import_errors(f.problems)
    return report


def _check_file(bag: Any, filepath: str, folder: Path, max_parse_seconds: float) -> FileReport:
    rel = os.path.relpath(filepath, folder)
    accesses: list[tuple[str, str]] = []
    errors_before = set(bag.import_errors)
    # what the file prints while parsed goes to stderr: stdout carries the report (--json)
    with _record_parse_time_access(accesses), contextlib.redirect_stdout(sys.stderr):
        started = time.perf_counter()
        dags = bag.process_file(filepath, only_if_updated=False, safe_mode=True)
        elapsed = time.perf_counter() - started
    result = FileReport(file=rel, parse_seconds=round(elapsed, 4), dag_ids=sorted(d.dag_id for d in dags))
    top_level, reads = scan_parse_time_code(Path(filepath).read_text(encoding="utf-8", errors="replace"), rel)

    for kind, key in dict.fromkeys(accesses):
        line = next((r.line for r in reads if r.kind == kind and r.key in (key, None)), None)
        result.problems.append(
            Problem(
                "parse_time_io",
                rel,
                f"{kind}.get({key!r}) runs at parse time (every parse, every few seconds, on every "
                "dag-processor): read it inside a task or use a Jinja template.",
                line=line,
            )
        )
    new_errors = set(bag.import_errors) - errors_before
    for key in new_errors:
        text = bag.import_errors.pop(key)
        if "ParseTimeAccessError" in text:
            continue  # reported above as parse_time_io
        message = short_error(text, filepath)
        at = re.match(r"line (\d+): ", message)
        kind = "cycle" if "AirflowDagCycleException" in text else "import_error"
        result.problems.append(Problem(kind, rel, message, line=int(at.group(1)) if at else None))
    # a DAG file's own code only: a helper module beside the DAGs (dags/common/) is not a DAG file
    if dags or new_errors:
        result.problems.extend(top_level)
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
