"""A job that runs out of memory ends with one ``mlopsctl-error:`` line that names the bound it hit and the
data's size (`out_of_memory`), instead of a JVM stack trace, a lost connection or a traceback. Retrying on the
same memory cannot help, so the job exits `mlopsctl_jobs.cli.EXIT_NO_RETRY` (`mlopsctl_jobs.cli.run_main`).

Two bounds: the Spark server's heap (the local stack's ``MLOPSCTL_SPARK_DRIVER_MEMORY``; in local mode the
executors live in that JVM too), recognised from Spark's own error text over Connect, or, when the error says
the server stopped (an out-of-memory error ends its JVM), from the server's log since its last start; and the job's own process (a Python `MemoryError`).
The limits measured on the local stack: docs/local-stack.md.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from mlopsctl_jobs.session import server_gone

#: the setting that sizes the local stack's Spark server heap
DRIVER_MEMORY_SETTING = "MLOPSCTL_SPARK_DRIVER_MEMORY"
#: the text by which the JVM and Spark say a heap or an execution memory pool is exhausted; a task's result
#: "lost from block manager" is what a client is told when the driver ran out of heap while fetching results
#: (``toPandas`` of a table larger than the heap: the out-of-memory error stays in the server's log)
JVM_OOM = re.compile(
    r"java\.lang\.OutOfMemoryError|SparkOutOfMemoryError|UNABLE_TO_ACQUIRE_MEMORY|GC overhead limit exceeded"
    r"|TaskResultLost \(result lost from block manager\)"
)
#: what a Connect client is told when the server's JVM is stopping or gone: an out-of-memory error in a task
#: thread ends the whole JVM (Spark's uncaught-exception handler, exit 52), and the request in flight gets
#: "Cannot call methods on a stopped SparkContext"; the next ones cannot connect
SERVER_STOPPED = re.compile(r"stopped SparkContext|StatusCode\.UNAVAILABLE|failed to connect|Connection refused")
#: what the stack's Spark server writes to its log as it starts: the log before it is an earlier server's
SERVER_START = "Running Spark version"
#: how much of the end of the server's log is read
LOG_TAIL_BYTES = 1 << 20


class OutOfMemory(Exception):
    """A step of the job ran out of memory (retrying on the same memory will not help)."""


def out_of_memory(exc: BaseException, data: str | None) -> OutOfMemory | None:
    """The clear failure `exc` stands for when it is an out-of-memory failure of the Spark server or of the
    job's own process; None for any other failure."""
    if isinstance(exc, MemoryError):
        return OutOfMemory(
            f"the job's Python process ran out of memory on {describe_data(data)}: it holds the training "
            "table and the model in memory, so this data needs a machine with more free memory"
        )
    if not _is_spark_error(exc):
        return None
    text = _chain_text(exc)
    reason = _jvm_oom_line(text)
    if reason is None and (SERVER_STOPPED.search(text) or server_gone()):
        reason = _jvm_oom_line(_server_log_since_start())
    if reason is None:
        return None
    return OutOfMemory(
        f"the Spark server ran out of memory ({reason}) on {describe_data(data)}: raise {DRIVER_MEMORY_SETTING} "
        f"(the local Spark server's heap{_current_heap()}; `mlopsctl dev stop` then `mlopsctl dev start` applies "
        "it), or on another Spark server its spark.driver.memory"
    )


def describe_data(data: str | None) -> str:
    """The data as the message names it: its path and, for a file or folder on this machine, its size."""
    if not data:
        return "the bundled diabetes data"
    path = Path(data).expanduser()
    try:
        if path.is_file():
            size = path.stat().st_size
        elif path.is_dir():
            size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        else:
            return data
    except OSError:
        return data
    return f"{data} ({_human(size)})"


def _human(size: int) -> str:
    """Bytes in decimal units: 36.1 MB, 1.2 GB."""
    if size < 1000:
        return f"{size} bytes"
    value = float(size)
    for unit in ("KB", "MB", "GB"):
        value /= 1000
        if value < 1000 or unit == "GB":
            break
    return f"{value:.1f} {unit}"


def _current_heap() -> str:
    value = (os.environ.get(DRIVER_MEMORY_SETTING) or "").strip()
    return f", now {value}" if value else ""


def _is_spark_error(exc: BaseException) -> bool:
    return any(type(e).__module__.startswith(("pyspark.", "grpc")) for e in _chain(exc))


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _chain_text(exc: BaseException) -> str:
    return "\n".join(str(e) for e in _chain(exc))


def _jvm_oom_line(text: str) -> str | None:
    """The line that names the out-of-memory error, without its Java class path noise."""
    for line in text.splitlines():
        found = JVM_OOM.search(line)
        if found:
            tail = line[found.start():].strip()
            return tail[:200]
    return None


def _server_log_since_start() -> str:
    """The end of the stack's Spark server log (``MLOPSCTL_SPARK_SERVER_LOG``) since the server's last start."""
    path = (os.environ.get("MLOPSCTL_SPARK_SERVER_LOG") or "").strip()
    if not path:
        return ""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - LOG_TAIL_BYTES))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    start = text.rfind(SERVER_START)
    return text[start:] if start >= 0 else text
