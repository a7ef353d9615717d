"""The local Spark Connect server's class-data archive: a warm `dev start` maps the ~10,000 classes the server
loads at start instead of loading and verifying them again.

This is HotSpot's dynamic AppCDS (JDK 13 and newer). A JVM started with ``-XX:ArchiveClassesAtExit`` writes
the classes it loaded into an archive when it exits; a JVM started with ``-XX:SharedArchiveFile`` maps them.
The serving server never writes the archive (a JVM in dump mode runs Spark work slower). Once `dev start` has
seen the stack healthy, and while no archive exists, it starts the writer (`main`, below) in the background at
the lowest CPU priority: a second server, the same command on a free port, that it stops as soon as it
answers, so that it writes the archive on its way out. `dev stop` kills a writer still at work; the next
`dev start` starts another.

The JVM writes the archive in place and maps it without checking its length: a truncated archive (a writer
killed while writing it) would crash the next server. So the writer's JVM writes ``<name>.jsa.partial`` and
logs the end of its dump to ``<name>.dump.log``, and the partial file becomes the archive only if that log says
it was written whole. The JVM checks the rest itself (its own build, the classpath, the jars' sizes and dates)
and, on a mismatch, logs a warning and runs without the archive. The archive's name carries the java binary,
the Spark jars and the heap size, so an upgrade starts a new one and the old one is removed.

The options use paths relative to the server's working directory (the stack's Spark dir): they are passed in
``spark.driver.extraJavaOptions``, which Spark splits on spaces, and a state dir's path may contain some.
Design and measurements: docs/local-stack.md.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

#: what the JVM logs (``-Xlog:cds+dynamic=info``) once it has written the whole archive
WRITTEN = "Written dynamic archive"
FOLDER = "cds"
#: how long the writer waits for its server to answer, then to write the archive and exit (at nice 19 on a
#: busy machine both take far longer than on an idle one)
START_LIMIT = 600.0
WRITE_LIMIT = 300.0


def java_binary() -> Path | None:
    """The java that Spark's launch scripts run: ``$JAVA_HOME/bin/java``, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home:
        return Path(home) / "bin" / "java"
    found = shutil.which("java")
    return Path(found) if found else None


@dataclass(frozen=True)
class ClassArchive:
    folder: Path  # <spark dir>/cds
    name: str  # server-<key>

    @classmethod
    def for_server(cls, spark_dir: Path, spark_home: Path, driver_memory: str) -> ClassArchive | None:
        """The archive for a server run by this java on this Spark with this heap; None without a java."""
        java = java_binary()
        if java is None or not java.exists():
            return None
        real = java.resolve()
        stat = real.stat()
        jars = spark_home / "jars"
        jars_stamp = jars.stat().st_mtime_ns if jars.is_dir() else 0
        key = f"{real}|{stat.st_size}|{stat.st_mtime_ns}|{spark_home.resolve()}|{jars_stamp}|{driver_memory}"
        return cls(spark_dir / FOLDER, "server-" + hashlib.sha256(key.encode()).hexdigest()[:16])

    @property
    def path(self) -> Path:
        return self.folder / f"{self.name}.jsa"

    @property
    def partial(self) -> Path:
        return self.folder / f"{self.name}.jsa.partial"

    @property
    def dump_log(self) -> Path:
        return self.folder / f"{self.name}.dump.log"

    def keep_if_written(self) -> bool:
        """Make the partial file the archive if its JVM logged that it wrote it whole; whether it did."""
        try:
            written = WRITTEN in self.dump_log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False
        if not written:
            return False
        try:
            os.replace(self.partial, self.path)
        except FileNotFoundError:
            return False
        self.dump_log.unlink(missing_ok=True)
        return True

    def prepare(self) -> None:
        """Before a server starts, with no writer at work: keep a dump written whole, drop anything else
        (a dump cut short, archives of other javas, Sparks or heap sizes)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.keep_if_written()
        for stale in self.folder.iterdir():
            if stale != self.path:
                stale.unlink(missing_ok=True)

    def map_options(self) -> list[str]:
        """The serving server's options: map the archive if there is one."""
        return [f"-XX:SharedArchiveFile={Path(FOLDER) / self.path.name}"] if self.path.is_file() else []

    def write_options(self) -> list[str]:
        """The writer's options: write the archive at exit, and log when it is whole."""
        rel = Path(FOLDER)
        return [
            f"-XX:ArchiveClassesAtExit={rel / self.partial.name}",
            "-Xlog:cds=off",  # not one warning per class it leaves out
            f"-Xlog:cds+dynamic=info:file={rel / self.dump_log.name}",
        ]


def write(archive: ClassArchive, server_argv: list[str], port: int) -> bool:
    """Run a server with the archive's write options (``server_argv``, in its Spark dir, listening on
    ``port``) until it answers, then stop it so that it writes the archive; whether the archive was kept.
    A server that exits or hangs before it answers leaves nothing behind: its classes are not the ones a
    serving server loads."""
    from mlopsctl.devenv.health import grpc_serving

    archive.folder.mkdir(parents=True, exist_ok=True)
    archive.partial.unlink(missing_ok=True)
    archive.dump_log.unlink(missing_ok=True)
    kept = False
    # spark-submit execs down to the JVM, so this process is the server itself
    server = subprocess.Popen(server_argv, cwd=archive.folder.parent, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + START_LIMIT
        while server.poll() is None and not grpc_serving("127.0.0.1", port) and time.monotonic() < deadline:
            time.sleep(0.5)
        if server.poll() is None and time.monotonic() < deadline:
            server.terminate()
            server.wait(timeout=WRITE_LIMIT)
            kept = archive.keep_if_written()
    except subprocess.TimeoutExpired:
        pass
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        if not kept:
            archive.partial.unlink(missing_ok=True)
            archive.dump_log.unlink(missing_ok=True)
    return kept


def lowest_priority() -> None:
    """Nice 19 for this process and what it starts. Under Linux's autogroup scheduling (``sched_autogroup``,
    on by default in many kernels) CPU time is first shared between sessions, and a nice value only ranks a
    process within its own: this writer leads a session of its own, so the session is lowered too. Without
    that, the writer's JVM takes an equal share of the CPU against each of the stack's components and slows
    the first runs after a cold `dev start` (measured in docs/local-stack.md)."""
    os.nice(19)
    if os.getsid(0) != os.getpid():
        return  # the session is someone else's
    try:
        Path("/proc/self/autogroup").write_text("19")
    except OSError:  # not Linux, or autogroup scheduling compiled out
        pass


def main(argv: list[str] | None = None) -> int:
    """``python -m mlopsctl.devenv.classarchive --archive <spark dir>/cds/<name> --port P -- <server argv>``"""
    parser = argparse.ArgumentParser(prog="python -m mlopsctl.devenv.classarchive", description=main.__doc__)
    parser.add_argument("--archive", type=Path, required=True, help="<spark dir>/cds/<name>, without suffix")
    parser.add_argument("--port", type=int, required=True, help="the gRPC port in the server's argv")
    parser.add_argument("server_argv", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    server_argv = args.server_argv[1:] if args.server_argv[:1] == ["--"] else args.server_argv
    lowest_priority()  # inherited by the JVM: the stack and its jobs come first
    archive = ClassArchive(args.archive.parent, args.archive.name)
    kept = write(archive, server_argv, args.port)
    print(f"class-data archive {'written: ' + str(archive.path) if kept else 'not written'}", flush=True)
    return 0 if kept else 1


if __name__ == "__main__":
    sys.exit(main())
