"""The job's SparkSession, the one way every job gets it (`spark_session`): a Spark Connect client when
``SPARK_REMOTE`` is set, else the classic session (under ``spark-submit``, or a Databricks task's own).

Where this package is not installed (a job run from a project's spark_jobs/ folder), the session ships it to
its Python workers as a zip (`ship_package_to_workers`), so that the functions the grid runs inside
``mapInPandas`` import there; on Databricks the tasks install the jobs' wheel instead.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any


def spark_session(app_name: str) -> Any:
    """The job's SparkSession, the one way every job gets it.

    With ``SPARK_REMOTE`` set (``sc://host:port``), a Spark Connect client of that server; otherwise the
    classic ``getOrCreate()`` (under ``spark-submit``, or a Databricks task's own session). The jobs use
    only the Spark Connect API (DataFrames, SQL, ``mapInPandas``), so the same file runs under both.
    """
    from pyspark.sql import SparkSession

    remote = os.environ.get("SPARK_REMOTE")
    builder = SparkSession.builder.appName(app_name)
    spark = builder.remote(remote).getOrCreate() if remote else builder.getOrCreate()
    if remote and is_connect(spark) and _loopback(remote):
        stop_retrying_a_dead_server(spark, remote)
    ship_package_to_workers(spark)
    print(f"spark: {engine_name(spark)}", flush=True)
    return spark


def is_connect(spark: Any) -> bool:
    return type(spark).__module__.startswith("pyspark.sql.connect")


def _host_port(remote: str) -> tuple[str, int]:
    from urllib.parse import urlparse

    parsed = urlparse(remote.split(";", 1)[0].replace("sc://", "http://", 1))
    return parsed.hostname or "127.0.0.1", parsed.port or 15002


def _loopback(remote: str) -> bool:
    return _host_port(remote)[0] in ("127.0.0.1", "localhost", "::1")


def server_gone(remote: str | None = None) -> bool:
    """True when the Spark Connect server at ``remote`` (default ``SPARK_REMOTE``) refuses connections."""
    import socket

    remote = remote if remote is not None else os.environ.get("SPARK_REMOTE") or ""
    if not remote.startswith("sc://"):
        return False
    try:
        socket.create_connection(_host_port(remote), timeout=3).close()
    except OSError:
        return True
    return False


def stop_retrying_a_dead_server(spark: Any, remote: str) -> None:
    """A Connect client retries an unreachable server for at least 10 minutes (pyspark's ``DefaultPolicy``),
    which rides out a remote cluster's blips. A server on this machine that refuses connections has ended
    (stopped, or its JVM ended on an out-of-memory error) and the job's session ended with it: the job stops
    retrying at once, and fails with the cause (`mlopsctl_jobs.memory` reads it from the server's log)."""
    from pyspark.sql.connect.client.retries import DefaultPolicy

    class WhileTheServerListens(DefaultPolicy):
        def can_retry(self, e: BaseException) -> bool:
            return super().can_retry(e) and not server_gone(remote)

    client = spark.client
    client.set_retry_policies([WhileTheServerListens() if type(p) is DefaultPolicy else p
                               for p in client.get_retry_policies()])


def engine_name(spark: Any) -> str:
    """``spark-connect(sc://host:port)`` or ``spark(<master>)``, for logs and MLflow tags (no credentials)."""
    remote = os.environ.get("SPARK_REMOTE")
    if is_connect(spark) and remote:
        return f"spark-connect({remote.split(';', 1)[0]})"  # `;token=...` parameters are never shown
    try:
        master = spark.conf.get("spark.master")
    except Exception:  # noqa: BLE001 - a server that hides its master (Databricks serverless)
        master = "connect" if is_connect(spark) else "unknown"
    return f"spark({master})"


def ship_package_to_workers(spark: Any) -> Path | None:
    """Make this package importable by the session's Python workers; returns the zip it added, if any.

    `grid.evaluate_task_batches` runs inside ``mapInPandas`` on the workers and is pickled by reference to
    its module. Where the package is installed in the interpreter's site-packages (the jobs' wheel on
    Databricks), the workers import it from there. Where a job runs from a folder, the session adds the
    package as a zip with ``addArtifacts(pyfile=True)``: a Connect session uploads it for its own workers, a
    classic one (``spark-submit``) serves it to its executors."""
    import sysconfig

    package = Path(__file__).resolve().parent
    site = {Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib")}
    if package.parent in site:
        return None
    archive = package_zip(package)
    spark.addArtifacts(str(archive), pyfile=True)
    return archive


def package_zip(package: Path) -> Path:
    """The package's source files as a zip (``mlopsctl_jobs/...`` inside), cached by content in a private
    folder of the temp dir: ``mlopsctl_jobs-<sha256 of names and bytes>.zip``, built once per content and
    written atomically, so concurrent jobs share it. A classic session's executors fetch it after the
    ``addArtifacts`` call, so it must outlive the call."""
    import hashlib

    sources = sorted(p for p in package.rglob("*.py") if "__pycache__" not in p.parts)
    members = {f"{package.name}/{p.relative_to(package).as_posix()}": p.read_bytes() for p in sources}
    digest = hashlib.sha256()
    for name, data in members.items():
        digest.update(name.encode() + b"\0" + data + b"\0")
    cache = Path(tempfile.gettempdir()) / f"mlopsctl-jobs-{os.getuid()}"
    cache.mkdir(mode=0o700, exist_ok=True)
    info = cache.lstat()
    if info.st_uid != os.getuid() or info.st_mode & 0o077 or not cache.is_dir():
        raise RuntimeError(f"{cache} is not a private folder of this user: the jobs' package is not shipped from it")
    archive = cache / f"{package.name}-{digest.hexdigest()[:16]}.zip"
    if not archive.is_file():
        fd, tmp = tempfile.mkstemp(dir=cache, suffix=".zip.tmp")
        with os.fdopen(fd, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as out:
            for name, data in members.items():
                out.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)
        os.replace(tmp, archive)
    return archive


def release_session(spark: Any) -> None:
    """End the job's use of the session: on Databricks the session belongs to the compute and is left alone;
    elsewhere ``stop()`` ends a classic application or releases the Connect session on the server."""
    if os.environ.get("DATABRICKS_RUNTIME_VERSION"):
        return
    spark.stop()
