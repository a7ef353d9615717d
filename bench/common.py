"""Shared harness: timing, statistics, processes, ports, memory and the result rows.

Only public tools: `time.perf_counter` for wall time, `resource.getrusage(RUSAGE_CHILDREN)` deltas for the
CPU time of a child process, psutil for RSS/PSS of a process tree.
"""

from __future__ import annotations

import functools
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent  # the project checkout
BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
CACHE_DIR = BENCH_DIR / ".cache"  # throwaway installs (airflowctl), generated data, scratch state
VENV_BIN = Path(sys.executable).parent  # the project venv running the bench


def log(msg: str) -> None:
    """Progress on stderr (stdout carries the tables)."""
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


class NotMeasured(Exception):
    """A row could not be measured; the message becomes the row's reason."""


# --------------------------------------------------------------------------------------------- stats
@dataclass
class Stats:
    values: list[float]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def min(self) -> float:
        return min(self.values)

    @property
    def max(self) -> float:
        return max(self.values)

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "median": self.median, "min": self.min, "max": self.max, "values": self.values}


# --------------------------------------------------------------------------------------------- rows
@dataclass
class Row:
    """One line of a results table.

    `stats` holds the measured figure (median/min/max over `runs`); `value` a derived single number
    (ratio, efficiency, prediction). A row with neither carries `reason` ("not measured: ...").
    """

    bench: str
    key: str  # stable id used by the CI test, e.g. "startup.mlopsctl_help"
    what: str
    unit: str = "s"
    stats: dict[str, Any] | None = None
    value: float | None = None
    peer: str = ""  # e.g. "0.05x airflow version"
    target: str = ""
    verdict: str = ""  # met | missed | ""
    note: str = ""
    reason: str = ""  # set when not measured

    @property
    def measured(self) -> bool:
        return self.stats is not None or self.value is not None


def not_measured(bench: str, key: str, what: str, reason: str, target: str = "") -> Row:
    return Row(bench=bench, key=key, what=what, reason=reason, target=target)


def figure_row(bench: str, key: str, what: str, stats: Stats | None, reason: str, unit: str = "s") -> Row:
    """The row `{bench}.{key}`: the figure's stats, or, when there is no figure, the reason why not."""
    if stats is None:
        return Row(bench, f"{bench}.{key}", what, reason=reason)
    return Row(bench, f"{bench}.{key}", what, unit=unit, stats=stats.as_dict())


@dataclass
class Measurements:
    """One benchmark's figures by row key (`{bench}.{key}`), and why each key that has none has none.

    `take` runs one measurement; `rows` turns the figures into table rows, in the order asked for.
    """

    bench: str
    figures: dict[str, Any] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)

    def take(self, key: str, what: str, measure: Callable[[], Any], *, keep_going: bool = False) -> bool:
        """figures[key] = measure(). A NotMeasured becomes the key's reason instead; so does any other
        error with keep_going (one failing peer must not sink the rows of the others). True if measured."""
        try:
            self.figures[key] = measure()
        except NotMeasured as exc:
            self.reasons[key] = str(exc)
            log(f"{self.bench}: {what}: not measured: {exc}")
        except Exception as exc:
            if not keep_going:
                raise
            self.reasons[key] = f"{type(exc).__name__}: {exc}"
            log(f"{self.bench}: {what}: failed: {self.reasons[key]}")
        else:
            return True
        return False

    def rows(
        self,
        keys: Iterable[tuple[str, str]],
        annotate: Callable[[str, Row, Stats], None] | None = None,
        stats: Callable[[Any], Stats] = lambda figure: figure,
    ) -> list[Row]:
        """A row per (key, what): measured ones carry `stats(figure)` and whatever `annotate(key, row, stats)`
        adds (peer ratio, target, verdict, note); the others their reason ("not run" if none was given)."""
        rows = []
        for key, what in keys:
            s = stats(self.figures[key]) if key in self.figures else None
            row = figure_row(self.bench, key, what, s, self.reasons.get(key, "not run"))
            if s is not None and annotate is not None:
                annotate(key, row, s)
            rows.append(row)
        return rows


def quick_omissions(mod: Any) -> dict[str, str]:
    """Rows a benchmark module leaves out of --quick (`NOT_IN_QUICK`: row key -> why), declared in the module."""
    return dict(getattr(mod, "NOT_IN_QUICK", {}))


def planned_rows(mod: Any, ctx: BenchContext) -> list[tuple[str, str]]:
    """The rows a run of `mod` must measure: all its rows (or those --rows picks), less those it leaves out of
    --quick."""
    omitted = quick_omissions(mod) if ctx.quick else {}
    return [(key, what) for key, what in mod.expected_rows(ctx) if key not in omitted and ctx.wants(key)]


@dataclass
class BenchContext:
    quick: bool
    runs: int  # timed runs per figure after one warm-up
    work: Path  # scratch dir for this invocation
    shared: dict[str, Any] = field(default_factory=dict)  # extra results (written to latest.json, used by plots)
    objects: dict[str, Any] = field(default_factory=dict)  # live things shared between benchmarks (the stack)
    cleanups: list[Callable[[], None]] = field(default_factory=list)
    deadline: float | None = None  # perf_counter() after which no new measurement starts (--budget)
    rows: tuple[str, ...] = ()  # --rows: key prefixes of the rows to measure; empty = every row

    def wants(self, key: str) -> bool:
        """Whether --rows picks the row `key`, or (a prefix such as ``scale.1000000.``) some row under it."""
        return not self.rows or any(key.startswith(r) or r.startswith(key) for r in self.rows)

    def time_left(self) -> float:
        return float("inf") if self.deadline is None else self.deadline - time.perf_counter()

    def check_budget(self, what: str) -> None:
        """NotMeasured if the --budget is used up (rows then say so instead of running past it)."""
        if self.time_left() <= 0:
            raise NotMeasured(f"time budget (--budget) used up before {what}")


# --------------------------------------------------------------------------------------------- processes
@dataclass
class CmdResult:
    wall: float
    cpu: float  # user+sys of the child (and its reaped descendants)
    returncode: int
    stdout: str
    stderr: str


def bench_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for child processes: the venv first on PATH, no colours, no user MLOPSCTL_* leaking in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPSCTL_", "AIRFLOW__", "AIRFLOW_CONN_"))}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["NO_COLOR"] = "1"
    env["TERM"] = "dumb"
    env.setdefault("COLUMNS", "120")
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONWARNINGS"] = "ignore"
    if extra:
        env.update(extra)
    return env


def run_cmd(
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 600,
    check: bool = True,
) -> CmdResult:
    """Run a command to completion; wall by perf_counter, CPU by the RUSAGE_CHILDREN delta."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [str(a) for a in argv],
        env=env or bench_env(),
        cwd=str(cwd) if cwd else None,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
        raise NotMeasured(f"`{_short(argv)}` timed out after {timeout:.0f} s") from None
    except BaseException:  # interrupted (SIGTERM/Ctrl-C): take the child's process group down too
        kill_group(proc)
        raise
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    res = CmdResult(wall, cpu, proc.returncode, out, err)
    if check and proc.returncode != 0:
        raise NotMeasured(f"`{_short(argv)}` exited {proc.returncode}: {tail(err or out)}")
    return res


def _short(argv: Sequence[Any]) -> str:
    parts = [Path(str(a)).name if i == 0 else str(a) for i, a in enumerate(argv)]
    text = " ".join(parts)
    return text if len(text) < 100 else text[:97] + "..."


def tail(text: str, n: int = 300) -> str:
    text = " ".join((text or "").strip().split())
    return text[-n:] if text else "(no output)"


def repeat(fn: Callable[[], float], runs: int, warmup: int = 1) -> Stats:
    """Call fn warmup times (discarded), then `runs` times; fn returns the figure of one run."""
    for _ in range(warmup):
        fn()
    return Stats([fn() for _ in range(runs)])


def interleaved(ctx: BenchContext, m: Measurements, engines: Sequence[tuple[str, str]],
                once: Callable[[str], float], runs: int, warmup: bool, prefix: str = "") -> None:
    """`runs` rounds, each running every engine once in turn (the machine's speed drifts within minutes, so the
    two sides of a ratio take turns), after one untimed round unless not `warmup`; m's figures get a Stats of
    each engine's walls, keyed `{prefix}.{engine}` (`engine` without a prefix). An engine that fails keeps its
    reason and leaves the round to the others."""
    walls: dict[str, list[float]] = {key: [] for key, _ in engines}
    failed: dict[str, str] = {}
    for i in range(runs + (1 if warmup else 0)):
        for key, what in engines:
            if key in failed:
                continue
            ctx.check_budget(f"{what} ({prefix})" if prefix else what)
            log(f"{m.bench}: {prefix + ' ' if prefix else ''}{key}, round {i + 1}")
            try:
                wall = once(key)
            except NotMeasured as exc:
                failed[key] = str(exc)
                continue
            if i >= (1 if warmup else 0):
                walls[key].append(wall)
    for key, what in engines:
        m.take(f"{prefix}.{key}" if prefix else key, what,
               functools.partial(_walls_figure, walls[key], failed.get(key)))


def _walls_figure(walls: list[float], reason: str | None) -> Stats:
    if reason or not walls:
        raise NotMeasured(reason or "no run finished")
    return Stats(walls)


def kill_group(proc: subprocess.Popen[Any] | int, timeout: float = 20) -> None:
    """SIGTERM the process group (started with start_new_session=True), then SIGKILL what is left."""
    pid = proc if isinstance(proc, int) else proc.pid
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    import psutil

    members = [p for p in psutil.process_iter(["pid"]) if _pgid(p.pid) == pgid]
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    _gone, alive = psutil.wait_procs(members, timeout=timeout)
    if alive:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        psutil.wait_procs(alive, timeout=5)
    if not isinstance(proc, int):
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return None


def tree_memory(root_pids: Iterable[int]) -> tuple[float, float, int]:
    """(RSS MB, PSS MB, process count) of the given processes and all their descendants."""
    import psutil

    procs: dict[int, Any] = {}
    for pid in root_pids:
        try:
            p = psutil.Process(pid)
        except psutil.NoSuchProcess:
            continue
        procs[p.pid] = p
        for c in p.children(recursive=True):
            procs[c.pid] = c
    from mlopsctl.devenv.process import memory_bytes

    rss, pss = memory_bytes(procs.values())
    return rss / 2**20, pss / 2**20, len(procs)


def free_port(preferred: int | None = None) -> int:
    """A free TCP port on 127.0.0.1 (the preferred one if it is free)."""
    if preferred:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", preferred))
                return preferred
            except OSError:
                pass
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_until(pred: Callable[[], bool], timeout: float, interval: float = 0.25, what: str = "condition") -> float:
    """Poll pred until true; return the seconds waited. NotMeasured on timeout."""
    t0 = time.perf_counter()
    while True:
        try:
            if pred():
                return time.perf_counter() - t0
        except NotMeasured:
            raise
        except Exception:  # noqa: BLE001, S110 - not up yet
            pass
        if time.perf_counter() - t0 > timeout:
            raise NotMeasured(f"{what} not reached within {timeout:.0f} s")
        time.sleep(interval)


@functools.cache
def http() -> Any:
    """One httpx client for every poll: a new client per request builds a fresh SSL context (tens of ms of CPU),
    which a 4-per-second poll would take from whatever start-up is being timed."""
    import httpx

    return httpx.Client(timeout=2)


def airflow_healthy(base_url: str) -> bool:
    """All components in /api/v2/monitor/health report healthy (the endpoint says 200 regardless)."""
    r = http().get(f"{base_url}/api/v2/monitor/health")
    if r.status_code != 200:
        return False
    body = r.json()
    comps = [v for v in body.values() if isinstance(v, dict)]
    return bool(comps) and all(c.get("status") == "healthy" for c in comps)


def fmt(x: float | None, unit: str = "s") -> str:
    if x is None:
        return "-"
    if unit in ("MB", "count"):
        return f"{x:,.0f}"
    if unit == "%":
        return f"{x:.1f}%"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)


def rows_to_json(rows: list[Row]) -> list[dict[str, Any]]:
    return [asdict(r) | {"measured": r.measured} for r in rows]


def which(name: str) -> str | None:
    cand = VENV_BIN / name
    return str(cand) if cand.exists() else shutil.which(name)
