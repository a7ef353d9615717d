"""The local Spark Connect server's class-data archive: a warm `dev start` maps the ~10,000 classes the server
loads instead of loading and verifying them again.

This is HotSpot's dynamic AppCDS (JDK 13 and newer). A server started with ``-XX:ArchiveClassesAtExit`` writes
the classes it loaded into an archive when it exits (on `mlopsctl dev stop`); a server started with
``-XX:SharedArchiveFile`` maps them. On a 2-core machine the server took 9.1-9.9 s (10.7-11.6 s of CPU) to
answer without the archive and 4.2-4.4 s (5.4-5.6 s of CPU) with it. The server that writes the archive pays,
once: about 20 s of CPU to answer, Spark work about 1.4x slower until it stops, and 15-20 s at its exit
(`WRITE_GRACE`).

The JVM writes the archive in place and maps it without checking its length: a truncated archive (a server
killed while writing it) would crash the next server. So a server writes to ``<name>.jsa.partial`` and logs the
end of its dump to ``<name>.dump.log``, and the next start keeps the partial file as the archive only if that
log says it was written whole. The JVM checks the rest itself (its own build, the classpath, the jars' sizes and
dates) and, on a mismatch, logs a warning and runs without the archive. The archive's name carries the java
binary, the Spark jars and the heap size, so an upgrade starts a new one and the old one is removed.

The options use paths relative to the server's working directory (the stack's Spark dir): they are passed in
``spark.driver.extraJavaOptions``, which Spark splits on spaces, and a state dir's path may contain some.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

#: what the JVM logs (``-Xlog:cds+dynamic=info``) once it has written the whole archive
WRITTEN = "Written dynamic archive"
FOLDER = "cds"
#: how long `dev stop` gives a server that writes the archive on its way out (it links every class it loaded,
#: then writes ~110 MB: 15-20 s on a busy 2-core machine); cut short, the next server writes it again
WRITE_GRACE = 90.0
_WRITE_OPTION = "-XX:ArchiveClassesAtExit="


def writes_archive(argv: list[str]) -> bool:
    """Whether a server started with ``argv`` writes its class-data archive when it exits."""
    return any(_WRITE_OPTION in arg for arg in argv)


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

    def prepare(self) -> None:
        """Before a server starts, with none running: keep the previous server's dump if it was written whole,
        else drop it; remove archives of other javas, Sparks or heap sizes."""
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            written = WRITTEN in self.dump_log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            written = False
        if written and self.partial.is_file():
            os.replace(self.partial, self.path)
        for stale in self.folder.iterdir():
            if stale != self.path:
                stale.unlink(missing_ok=True)

    def java_options(self) -> list[str]:
        """Map the archive if there is one, else write one at exit (see the module's doc)."""
        rel = Path(FOLDER)
        if self.path.is_file():
            return [f"-XX:SharedArchiveFile={rel / self.path.name}"]
        return [
            f"{_WRITE_OPTION}{rel / self.partial.name}",
            "-Xlog:cds=off",  # not one warning per class it leaves out
            f"-Xlog:cds+dynamic=info:file={rel / self.dump_log.name}",
        ]
