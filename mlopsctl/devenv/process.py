"""Spawning detached components, their PID files, and ending exactly their process trees.

Each component runs in its own session (start_new_session=True), so its session id == its PID and every
process it forks (LocalExecutor workers, task supervisors, spark-submit JVMs) keeps that session id even
after the leader dies. A PID file records PID + create time, so a PID reused by an unrelated process is
never mistaken for ours.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psutil

    from mlopsctl.devenv.stack import ComponentSpec

_CREATE_TIME_TOLERANCE = 0.5  # seconds; psutil's create_time is derived from clock ticks since boot
_SINCE_BOOT_TOLERANCE = 0.05  # seconds; the kernel counts a process's start in clock ticks (10 ms)


def _psutil():
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with the `local` extra (via apache-airflow)
        from mlopsctl.errors import ConfigError

        raise ConfigError(
            "The local stack needs `psutil`, which is not installed.",
            hint="Install the local extra: pip install 'mlopsctl[local]'.",
        ) from None
    return psutil


@dataclass(frozen=True)
class PidRecord:
    component: str
    pid: int
    create_time: float
    argv: list[str]
    started_at: float  # wall clock (time.time()) when spawned
    #: when the process started, in seconds after boot (-1: unknown, a PID file from an older mlopsctl).
    #: Unlike `create_time` (boot time + that offset), a step of the system clock (NTP, a laptop or VM
    #: resumed after a pause) does not move it, so the record keeps matching its own process.
    since_boot: float = -1.0

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def _tolerance(record: PidRecord) -> float:
    return _SINCE_BOOT_TOLERANCE if record.since_boot >= 0 else _CREATE_TIME_TOLERANCE


def _start_key(record: PidRecord) -> float:
    """The record's start time, on the clock `_started` reads for it."""
    return record.since_boot if record.since_boot >= 0 else record.create_time


def _started(pid: int, record: PidRecord) -> float:
    """When process ``pid`` started, on the same clock as `_start_key(record)`. Raises NoSuchProcess."""
    ps = _psutil()
    if record.since_boot >= 0:
        return started_since_boot(pid)
    return ps.Process(pid).create_time()


def started_since_boot(pid: int) -> float:
    """When process ``pid`` started, in seconds after boot (psutil's create_time minus the boot time it is
    derived from, read again now: a clock step between two calls moves both alike). Raises NoSuchProcess."""
    ps = _psutil()
    return ps.Process(pid).create_time() - ps.boot_time()


def write_pid_file(path: Path, record: PidRecord) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".pid.tmp")
    tmp.write_text(record.to_json(), encoding="utf-8")
    tmp.replace(path)


def read_pid_file(path: Path) -> PidRecord | None:
    """The record in a PID file; None if missing or unreadable. A bare integer (hand-written) is accepted."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if isinstance(data, int):
        return PidRecord(path.stem, data, -1.0, [], 0.0)
    if not isinstance(data, dict):
        return None
    try:
        return PidRecord(
            component=str(data.get("component", path.stem)),
            pid=int(data["pid"]),
            create_time=float(data.get("create_time", -1.0)),
            argv=list(data.get("argv", [])),
            started_at=float(data.get("started_at", 0.0)),
            since_boot=float(data.get("since_boot", -1.0)),
        )
    except (KeyError, TypeError, ValueError):
        return None


def remove_pid_file(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def process_of(record: PidRecord | None) -> psutil.Process | None:
    """The live process a record describes, or None (dead, zombie, or the PID now belongs to someone else)."""
    if record is None:
        return None
    ps = _psutil()
    try:
        proc = ps.Process(record.pid)
        if proc.status() == ps.STATUS_ZOMBIE:
            return None
        if record.create_time < 0 and record.since_boot < 0:  # bare-PID file: fall back to the command line
            cmd = " ".join(proc.cmdline())
            return proc if any(word in cmd for word in ("airflow", "mlflow", "spark")) else None
        if abs(_started(record.pid, record) - _start_key(record)) > _tolerance(record):
            return None
        return proc
    except (ps.NoSuchProcess, ps.AccessDenied):
        return None


def _start_log(spec: ComponentSpec, log_file: Path) -> None:
    """Create the component's folders and mark the start in its log."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    spec.cwd.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        log.write(
            f"\n=== mlopsctl: starting {spec.name} at {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n".encode()
        )


def _record(spec: ComponentSpec, pid: int, pid_file: Path) -> PidRecord:
    """Write and return the PID file of a component just started as ``pid``."""
    ps = _psutil()
    try:
        since_boot = started_since_boot(pid)
        create_time = since_boot + ps.boot_time()
    except ps.NoSuchProcess:
        since_boot, create_time = -1.0, time.time()
    record = PidRecord(spec.name, pid, create_time, list(spec.argv), time.time(), since_boot)
    write_pid_file(pid_file, record)
    return record


def spawn(spec: ComponentSpec, log_file: Path, pid_file: Path) -> tuple[subprocess.Popen, PidRecord]:
    """Start a component detached in its own session, stdout+stderr appended to its log file."""
    _start_log(spec, log_file)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            spec.argv,
            env=spec.env,
            cwd=str(spec.cwd),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    return proc, _record(spec, proc.pid, pid_file)


class ForkError(Exception):
    """The zygote did not fork the components; the message says why (its error output, or its timeout)."""


def spawn_forks(
    zygote: ComponentSpec, specs: list[ComponentSpec], logs: dict[str, Path], pid_files: dict[str, Path],
    timeout: float,
) -> dict[str, PidRecord]:
    """Start components as forks of `mlopsctl.devenv.zygote` (``zygote``: its command, environment and working
    dir), each detached in its own session like `spawn`'s, stdout+stderr appended to ``logs[name]``. A fork
    has the zygote's environment, so every spec must have that one."""
    for spec in specs:
        if spec.env != zygote.env:
            raise ValueError(f"{spec.name} cannot be forked by {zygote.name}: their environments differ")
        _start_log(spec, logs[spec.name])
    request = [
        {"name": spec.name, "argv": spec.argv, "cwd": str(spec.cwd), "log": str(logs[spec.name])} for spec in specs
    ]
    proc = subprocess.Popen(
        zygote.argv,
        env=zygote.env,
        cwd=str(zygote.cwd),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        close_fds=True,
    )
    try:
        out, err = proc.communicate(json.dumps(request).encode(), timeout=timeout)
    except BaseException as exc:  # a timeout or Ctrl-C: end the zygote and whatever it has forked so far
        proc.kill()
        out, _err = proc.communicate()
        _kill_groups(_forked(out).values())
        if isinstance(exc, subprocess.TimeoutExpired):
            raise ForkError(f"it had not forked them after {timeout:.0f} s") from None
        raise
    pids = _forked(out)
    if proc.returncode != 0 or set(pids) != {spec.name for spec in specs}:
        _kill_groups(pids.values())
        detail = err.decode("utf-8", errors="replace").strip() or out.decode("utf-8", errors="replace").strip()
        raise ForkError(f"it exited with code {proc.returncode}: {detail or 'no output'}")
    return {spec.name: _record(spec, pids[spec.name], pid_files[spec.name]) for spec in specs}


def _kill_groups(pids: Iterable[int]) -> None:
    """SIGKILL the process groups led by ``pids`` (components just forked, which have nothing to save yet)."""
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _forked(out: bytes) -> dict[str, int]:
    """The zygote's report, one ``{"name", "pid"}`` line per child forked: name -> PID."""
    pids = {}
    for line in out.decode("utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
            pids[str(entry["name"])] = int(entry["pid"])
        except (ValueError, KeyError, TypeError):
            continue
    return pids


def _session_id(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


def tree_of(record: PidRecord) -> list[psutil.Process]:
    """Every live process belonging to a component: the leader, its descendants, and any process left in
    its session (workers orphaned by a `kill -9` of the leader keep the session id)."""
    ps = _psutil()
    found: dict[int, psutil.Process] = {}
    leader = process_of(record)
    if leader is not None:
        found[leader.pid] = leader
        try:
            for child in leader.children(recursive=True):
                found[child.pid] = child
        except ps.NoSuchProcess:
            pass
    sid = record.pid
    # If the PID was reused by a foreign session leader, the session id no longer identifies our processes.
    if leader is None:
        try:
            squatter = ps.Process(sid)
            if _session_id(sid) == sid and _started(squatter.pid, record) > _start_key(record) + _tolerance(record):
                sid = -1
        except ps.NoSuchProcess:
            pass
    if sid > 0 and (record.create_time >= 0 or record.since_boot >= 0):
        me = os.getpid()
        for proc in ps.process_iter(["pid"]):
            pid = proc.info["pid"]
            if pid in found or pid == me:
                continue
            if _session_id(pid) == sid:
                try:
                    if _started(pid, record) + _tolerance(record) >= _start_key(record):
                        found[pid] = proc
                except ps.NoSuchProcess:
                    continue
    # extend with descendants of anything found via the session (they may have started their own session)
    for proc in list(found.values()):
        try:
            for child in proc.children(recursive=True):
                found.setdefault(child.pid, child)
        except ps.NoSuchProcess:
            pass
    alive = []
    for proc in found.values():
        try:
            if proc.is_running() and proc.status() != ps.STATUS_ZOMBIE:
                alive.append(proc)
        except ps.NoSuchProcess:
            continue
    return alive


def kill_all(procs: list[psutil.Process], grace: float = 5.0) -> list[psutil.Process]:
    """SIGTERM, wait, SIGKILL; returns survivors."""
    ps = _psutil()
    for proc in procs:
        _signal(proc, signal.SIGTERM)
    _, alive = ps.wait_procs(procs, timeout=grace)
    for proc in alive:
        _signal(proc, signal.SIGKILL)
    _, still = ps.wait_procs(alive, timeout=5)
    return still


def memory_bytes(procs: Iterable[psutil.Process]) -> tuple[int, int]:
    """(RSS, PSS) summed over the processes, in one read per process. PSS (Linux) splits shared pages between
    the processes sharing them; RSS counts the copy-on-write pages of forked workers once per worker. PSS is
    0 where unavailable."""
    ps = _psutil()
    rss = pss = 0
    for proc in procs:
        try:
            info = proc.memory_full_info()
        except (ps.NoSuchProcess, ps.AccessDenied, OSError):
            continue
        rss += info.rss
        pss += getattr(info, "pss", 0)
    return rss, pss


def _signal(proc: psutil.Process, sig: int) -> None:
    ps = _psutil()
    try:
        proc.send_signal(sig)
    except (ps.NoSuchProcess, ps.AccessDenied):
        pass


#: seconds a component gets between SIGTERM and SIGKILL
STOP_GRACE = 20.0


def terminate(records: Iterable[PidRecord], *, grace: float = STOP_GRACE) -> list[psutil.Process]:
    """End every process of the given components: SIGTERM to each leader's process group and to any stray
    member, wait up to `grace` seconds, then SIGKILL what is left. Returns processes still alive (should be
    none)."""
    ps = _psutil()
    records = list(records)
    members: dict[int, psutil.Process] = {}
    leaders: list[psutil.Process] = []
    for record in records:
        leader = process_of(record)
        if leader is not None:
            leaders.append(leader)
        for proc in tree_of(record):
            members[proc.pid] = proc
    if not members:
        return []
    signalled: set[int] = set()
    for leader in leaders:
        try:
            os.killpg(leader.pid, signal.SIGTERM)  # session leader == group leader
            signalled.update(p.pid for p in members.values() if _pgid(p.pid) == leader.pid)
        except (ProcessLookupError, PermissionError):
            pass
        _signal(leader, signal.SIGTERM)
        signalled.add(leader.pid)
    for pid, proc in members.items():
        if pid not in signalled:
            _signal(proc, signal.SIGTERM)
    _, alive = ps.wait_procs(list(members.values()), timeout=grace)
    # processes forked while we waited (e.g. a worker respawned during shutdown)
    for record in records:
        for proc in tree_of(record):
            if proc.pid not in {p.pid for p in alive}:
                alive.append(proc)
    for proc in alive:
        _signal(proc, signal.SIGKILL)
    _, still = ps.wait_procs(alive, timeout=5)
    return still


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None
