"""The local stack's job launcher: a warm Python that starts each local job as a fork of itself.

A job is a plain Python process (a Spark Connect client). Started fresh, each one spends seconds of CPU
importing pyspark, pandas, scikit-learn and MLflow before its first line of work; in the embedded stack
that was most of `run build-model`'s time. The launcher listens on a Unix socket at once, and imports those
libraries (`PRELOAD`) only when asked: `mlopsctl dev start` asks once the whole stack is healthy, so the
imports' CPU and disk reads do not slow the start of Airflow, MLflow and Spark. They run in a background
thread of the lowest CPU priority; a job asked for before they have run waits for them (and has them run at
once, at the launcher's priority, if nobody asked yet); with no request at all they start on their own after
``--preload-after`` seconds. For each request it forks (after the imports have ended); the child becomes
the job: its own session (so the task can signal the job's process
group), the requester's pipe as stdout and stderr, the requested environment, working directory and argv,
and the script run as ``__main__``. Modules the job imports from its own folder (``mlopsctl_jobs``) are never
preloaded, so an edited job is always run as it is on disk.

Only the local backend of the DAGs uses it (``dags/common/compute.py``, when ``MLOPSCTL_JOB_LAUNCHER``
names the socket), and only for jobs run with the launcher's own interpreter; anything else, or a launcher
that does not answer, gets a fresh process as before. Upgrading a preloaded package needs a restart of the
stack (`mlopsctl dev stop && mlopsctl dev start`), as for every other long-running component.

Protocol (one request per connection; JSON, each message prefixed with its length as 4 bytes big-endian):

* ``{"op": "ping"}`` -> ``{"ok": true, "pid": ..., "python": ..., "preloaded": [...], "ready": bool}``
  (``ready``: the preload has ended; a job asked for before then waits for it)
* ``{"op": "preload"}``: start the preload in the background now, if it has not started -> as ``ping``
* ``{"op": "run", "argv": [python, script, *args], "env": {...}, "cwd": "..."}``, with two file
  descriptors attached (SCM_RIGHTS): the job's stdin, then its stdout+stderr.
  -> ``{"pid": N}`` once forked (or ``{"error": "..."}``), later ``{"exit": code}`` when the job ends
  (``code`` as `subprocess.Popen.returncode`: negative for a signal). A requester that disconnects
  before then ends the job (SIGTERM to its process group).

Run by `mlopsctl dev start` as ``python -m mlopsctl.devenv.launcher --socket PATH``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import runpy
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

#: what a job's fresh interpreter would spend its first seconds importing
PRELOAD: tuple[str, ...] = (
    "pyspark.sql.connect.session",
    "pandas",
    "pyarrow.parquet",
    "sklearn.datasets",
    "sklearn.ensemble",
    "sklearn.metrics",
    "sklearn.model_selection",
    "mlflow.sklearn",
    "mlflow.models",
)
#: set before MLflow is imported: no telemetry thread (a thread does not survive a fork) and quiet logs
PRELOAD_ENV: dict[str, str] = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "TQDM_DISABLE": "1",
}
_HEADER = struct.Struct("!I")
_MAX_MESSAGE = 16 << 20
_REQUEST_TIMEOUT = 10.0
#: with nobody asking for it, the preload starts this long after the launcher
PRELOAD_AFTER = 60.0


class ProtocolError(Exception):
    pass


def encode(message: dict) -> bytes:
    body = json.dumps(message).encode()
    return _HEADER.pack(len(body)) + body


def read_message(sock: socket.socket, *, max_fds: int = 0) -> tuple[dict | None, list[int]]:
    """One length-prefixed JSON message (None at a clean end of stream) and the descriptors sent with it."""
    buf = b""
    fds: list[int] = []
    while len(buf) < _HEADER.size or len(buf) < _HEADER.size + _HEADER.unpack_from(buf)[0]:
        if max_fds and not fds:
            chunk, got, _flags, _addr = socket.recv_fds(sock, 1 << 16, max_fds)
            fds.extend(got)
        else:
            chunk = sock.recv(1 << 16)
        if not chunk:
            if buf:
                raise ProtocolError("connection closed in the middle of a message")
            return None, fds
        buf += chunk
        if len(buf) >= _HEADER.size and _HEADER.unpack_from(buf)[0] > _MAX_MESSAGE:
            raise ProtocolError("message too large")
    size = _HEADER.unpack_from(buf)[0]
    return json.loads(buf[_HEADER.size:_HEADER.size + size]), fds


@dataclass
class Job:
    """What a forked child runs."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    stdin: int
    output: int


class Launcher:
    """The launcher's accept loop. It forks only from its main thread, and only once the preload thread has
    ended, so a fork never copies another thread's half-held lock."""

    def __init__(self, path: Path, modules: list[str], preload_after: float = PRELOAD_AFTER) -> None:
        self.path = path
        self.modules = modules
        self.preload_after = preload_after
        self.preloaded: list[str] = []
        self._preload_started = False
        self._preloading: threading.Thread | None = None
        #: job pid -> the connection of the task that asked for it (None once that task is gone)
        self.jobs: dict[int, socket.socket | None] = {}
        self.stopping = False
        self.sel = selectors.DefaultSelector()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.wake_r, self.wake_w = os.pipe()

    def serve(self) -> Job | None:
        """Accept requests until SIGTERM/SIGINT. Returns None in the launcher when it stops, and the `Job` to
        run in each forked child."""
        for fd in (self.wake_r, self.wake_w):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so SIGCHLD writes to the wakeup fd
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)

        self.path.unlink(missing_ok=True)
        old_umask = os.umask(0o177)  # the socket is created 0600: only this user may start jobs
        try:
            self.listener.bind(str(self.path))
        finally:
            os.umask(old_umask)
        self.listener.listen(16)
        self.sel.register(self.listener, selectors.EVENT_READ, "accept")
        self.sel.register(self.wake_r, selectors.EVENT_READ, "wake")
        print(f"mlopsctl job launcher: pid {os.getpid()}, listening on {self.path}", flush=True)
        os.environ.update(PRELOAD_ENV)
        preload_at = time.monotonic() + self.preload_after

        while not self.stopping:
            for key, _ in self.sel.select(timeout=1.0):
                if key.data == "wake":
                    self._drain()
                elif key.data == "accept":
                    conn, _ = self.listener.accept()
                    job = self._handle(conn)
                    if job is not None:  # in the forked child
                        return job
                else:  # a requester's connection: it sends nothing after its request, so this is its end
                    self._requester_gone(key.fileobj)  # type: ignore[arg-type]
            self._reap()
            if not self._preload_started and time.monotonic() >= preload_at:
                self._start_preload()
        self._shutdown()
        return None

    # --- requests
    def _handle(self, conn: socket.socket) -> Job | None:
        conn.settimeout(_REQUEST_TIMEOUT)
        fds: list[int] = []
        try:
            message, fds = read_message(conn, max_fds=2)
            if message is None:
                conn.close()
                return None
            op = message.get("op")
            if op in ("ping", "preload"):
                if op == "preload":
                    self._start_preload()
                conn.sendall(encode(self._status()))
                conn.close()
                return None
            if op != "run":
                raise ProtocolError(f"unknown op {op!r}")
            job = self._job(message, fds)
        except (OSError, ValueError, ProtocolError) as exc:
            self._refuse(conn, fds, str(exc))
            return None
        self._finish_preload()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            self._become_child(conn)
            return job
        for fd in fds:
            os.close(fd)
        self.jobs[pid] = conn
        print(f"job {pid}: {job.argv[1]}", flush=True)
        try:
            conn.sendall(encode({"pid": pid}))
        except OSError:
            self._requester_gone(conn)
            return None
        conn.setblocking(False)
        self.sel.register(conn, selectors.EVENT_READ, pid)
        return None

    def _job(self, message: dict, fds: list[int]) -> Job:
        argv, env, cwd = message.get("argv"), message.get("env"), message.get("cwd")
        if len(fds) != 2:
            raise ProtocolError("a run request carries two file descriptors (stdin, output)")
        if not (isinstance(argv, list) and len(argv) >= 2 and all(isinstance(a, str) for a in argv)):
            raise ProtocolError("argv must be [python, script, *arguments]")
        if os.path.realpath(argv[0]) != os.path.realpath(sys.executable):
            raise ProtocolError(f"this launcher runs {sys.executable}, not {argv[0]}")
        if not isinstance(env, dict) or not isinstance(cwd, str):
            raise ProtocolError("env must be an object and cwd a string")
        return Job(argv, {str(k): str(v) for k, v in env.items()}, cwd, fds[0], fds[1])

    @staticmethod
    def _refuse(conn: socket.socket, fds: list[int], why: str) -> None:
        for fd in fds:
            os.close(fd)
        try:
            conn.settimeout(_REQUEST_TIMEOUT)
            conn.sendall(encode({"error": why}))
        except OSError:
            pass
        conn.close()

    # --- children
    def _become_child(self, conn: socket.socket) -> None:
        """In the forked child: drop what belongs to the launcher (its sockets, selector, wakeup pipe and signal
        handlers), so that what is left is a process like the one ``python script.py`` would start. Closing
        this process's copies leaves the launcher's own untouched."""
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        self.sel.close()
        self.listener.close()
        for c in (conn, *[c for c in self.jobs.values() if c is not None]):
            c.close()
        self.jobs.clear()
        os.close(self.wake_r)
        os.close(self.wake_w)

    def _reap(self) -> None:
        while self.jobs:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = os.waitstatus_to_exitcode(status)
            print(f"job {pid}: exit {code}", flush=True)
            conn = self.jobs.pop(pid, None)
            if conn is not None:
                try:
                    conn.setblocking(True)
                    conn.settimeout(_REQUEST_TIMEOUT)
                    conn.sendall(encode({"exit": code}))
                except OSError:
                    pass
                self._close(conn)

    def _requester_gone(self, conn: socket.socket) -> None:
        """The task that asked for a job closed its connection before the job ended: end the job too."""
        for pid, c in self.jobs.items():
            if c is conn:
                self.jobs[pid] = None
                print(f"job {pid}: its task went away; ending it", flush=True)
                try:
                    os.killpg(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                break
        self._close(conn)

    def _close(self, conn: socket.socket) -> None:
        try:
            self.sel.unregister(conn)
        except (KeyError, ValueError):
            pass
        conn.close()

    def _drain(self) -> None:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    # --- the preload
    def _status(self) -> dict:
        ready = self._preload_started and (self._preloading is None or not self._preloading.is_alive())
        return {"ok": True, "pid": os.getpid(), "python": sys.executable, "preloaded": list(self.preloaded),
                "ready": ready}

    def _start_preload(self) -> None:
        if not self._preload_started:
            self._preload_started = True
            self._preloading = threading.Thread(target=self._preload_in_background, name="preload", daemon=True)
            self._preloading.start()

    def _finish_preload(self) -> None:
        """Before a fork: a job waits for a running preload, and has one nobody asked for yet run now, in this
        thread, at the launcher's own priority."""
        if not self._preload_started:
            self._preload_started = True
            preload(self.modules, self.preloaded)
        elif self._preloading is not None:
            self._preloading.join()
            self._preloading = None

    def _preload_in_background(self) -> None:
        """The imports, in a thread of the lowest CPU priority, so that they take only the CPU the stack's other
        components leave. On Linux the nice value is per thread: the main thread, and every job it forks, keeps
        the launcher's own priority."""
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except (OSError, AttributeError):  # not Linux: the imports run at the launcher's priority
            pass
        preload(self.modules, self.preloaded)

    def _stop(self, *_: object) -> None:
        self.stopping = True

    def _shutdown(self) -> None:
        self.listener.close()
        self.path.unlink(missing_ok=True)
        for pid in list(self.jobs):
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while self.jobs and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.05)
        self.sel.close()


# --- the requesting side (a task of the local backend)
class LaunchRefused(Exception):
    """The launcher answered but will not run this job (the reason is the message)."""


class LaunchedJob:
    """A job started by the launcher, with the part of `subprocess.Popen`'s interface a task uses: ``pid``
    (also its process group), ``stdout`` (text, its stdout and stderr), `poll`, `wait` and ``returncode``."""

    def __init__(self, conn: socket.socket, pid: int, stdout_fd: int) -> None:
        self._conn = conn
        self._lock = threading.Lock()  # one reader of the connection at a time (on_kill polls beside a wait)
        self.pid = pid
        self.stdout = open(stdout_fd, encoding="utf-8", errors="replace", buffering=1)  # noqa: SIM115
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and self._lock.acquire(blocking=False):  # else another thread is waiting
            try:
                if self.returncode is None:
                    self._conn.setblocking(False)
                    try:
                        self._receive()
                    except BlockingIOError:
                        pass
            finally:
                self._lock.release()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.returncode is None:
            if not self._lock.acquire(timeout=-1 if timeout is None else timeout):
                raise subprocess.TimeoutExpired(f"job {self.pid}", timeout or 0)
            try:
                if self.returncode is None:
                    self._conn.settimeout(None if deadline is None else max(0.0, deadline - time.monotonic()))
                    try:
                        self._receive()
                    except TimeoutError:
                        raise subprocess.TimeoutExpired(f"job {self.pid}", timeout or 0) from None
            finally:
                self._lock.release()
        return self.returncode  # type: ignore[return-value]

    def _receive(self) -> None:
        message, _ = read_message(self._conn)
        # no message: the launcher itself went away (its job was ended with it)
        self.returncode = int(message["exit"]) if message and "exit" in message else -int(signal.SIGKILL)
        self._conn.close()


def launch(path: str, argv: list[str], env: dict[str, str], cwd: str, *, timeout: float = 10.0) -> LaunchedJob:
    """Ask the launcher at ``path`` to start ``argv`` (``[python, script, *args]``). Raises OSError when it does
    not answer and `LaunchRefused` when it will not run the job; the caller then starts a fresh process."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(timeout)
    read_fd, write_fd = os.pipe()
    stdin = os.open(os.devnull, os.O_RDONLY)
    try:
        conn.connect(path)
        request = encode({"op": "run", "argv": argv, "env": env, "cwd": cwd})
        sent = socket.send_fds(conn, [request], [stdin, write_fd])
        if sent < len(request):
            conn.sendall(request[sent:])
        reply, _ = read_message(conn)
    except BaseException:
        conn.close()
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
        os.close(stdin)
    if not reply or "pid" not in reply:
        conn.close()
        os.close(read_fd)
        raise LaunchRefused((reply or {}).get("error") or "the launcher closed the connection")
    return LaunchedJob(conn, int(reply["pid"]), read_fd)


def ping(path: str | Path, timeout: float = 2.0) -> dict | None:
    """The launcher's answer to a ping, or None when nothing answers at ``path``."""
    return _ask(path, "ping", timeout)


def start_preload(path: str | Path, timeout: float = 2.0) -> dict | None:
    """Have the launcher at ``path`` start its preload in the background (if it has not started); its answer
    as for `ping`, or None when nothing answers."""
    return _ask(path, "preload", timeout)


def _ask(path: str | Path, op: str, timeout: float) -> dict | None:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(str(path))
            conn.sendall(encode({"op": op}))
            reply, _ = read_message(conn)
    except (OSError, ValueError, ProtocolError):
        return None
    return reply if reply and reply.get("ok") else None


def run_job(job: Job) -> None:
    """In the forked child: become ``python <script> <args>`` with the job's stdio, env and cwd, and run it."""
    os.setsid()
    os.dup2(job.stdin, 0)
    os.dup2(job.output, 1)
    os.dup2(job.output, 2)
    for fd in (job.stdin, job.output):
        if fd > 2:
            os.close(fd)
    os.chdir(job.cwd)
    os.environ.clear()
    os.environ.update(job.env)
    unbuffered = bool(job.env.get("PYTHONUNBUFFERED"))
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(line_buffering=True, write_through=unbuffered)  # type: ignore[attr-defined]
    script = job.argv[1]
    sys.argv = job.argv[1:]
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    runpy.run_path(script, run_name="__main__")


def preload(modules: list[str], done: list[str]) -> None:
    """Import what the jobs import, appending each to ``done``; a module that fails to import is reported and
    skipped (the jobs then import it themselves)."""
    for name in modules:
        started = time.monotonic()
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - the jobs then import it themselves
            print(f"preload {name}: not available ({type(exc).__name__}: {exc})", flush=True)
            continue
        done.append(name)
        print(f"preload {name}: {time.monotonic() - started:.2f}s", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True, type=Path)
    parser.add_argument("--preload", default=",".join(PRELOAD),
                        help="comma-separated modules the jobs would import (default: %(default)s)")
    parser.add_argument("--preload-after", type=float, default=PRELOAD_AFTER, metavar="SECONDS",
                        help="start the preload this long after starting, if nobody has asked (default: %(default)s)")
    args = parser.parse_args(argv)
    launcher = Launcher(args.socket, [m for m in args.preload.split(",") if m], args.preload_after)
    job = launcher.serve()
    if job is None:
        return 0
    run_job(job)
    return 0


if __name__ == "__main__":
    sys.exit(main())
