"""The tasks' side of a job launcher: ask a warm Python listening on a Unix socket to fork a job for the task.

The embedded stack of mlopsctl runs one (its server side is ``mlopsctl/devenv/launcher.py``) and names its
socket in ``MLOPSCTL_JOB_LAUNCHER``; `compute.LocalJobOperator` starts a fresh process wherever there is none.
Standard library only: a hosted Airflow has no mlopsctl, and mlopsctl loads this file for the framing.

Protocol: one request per connection; each message is JSON prefixed with its length (4 bytes, big-endian).

* ``{"op": "run", "argv": [python, script, *args], "env": {...}, "cwd": "..."}``, sent with two file
  descriptors attached (SCM_RIGHTS): the job's stdin, then its stdout+stderr.
  -> ``{"pid": N}`` once forked, or ``{"error": "..."}``; later ``{"exit": code}`` when the job ends (``code``
  as `subprocess.Popen.returncode`: negative for a signal). Closing the connection before then ends the job.
* ``{"op": "ping"}`` and ``{"op": "preload"}`` -> ``{"ok": true, "pid": N, "python": "...", "preloaded": [...],
  "ready": bool}``: the launcher's own state, asked by the stack that runs it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import threading
import time

_HEADER = struct.Struct("!I")
_MAX_MESSAGE = 16 << 20


class ProtocolError(Exception):
    pass


class LaunchRefused(Exception):
    """The launcher answered but will not run this job (the reason is the message)."""


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
