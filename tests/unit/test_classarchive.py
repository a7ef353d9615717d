"""The Spark server's class-data archive (mlopsctl/devenv/classarchive.py), with the real JVM: a JVM started with
the dump options writes an archive that the next start keeps and a JVM then maps (``-Xshare:on`` fails if it
cannot); a dump cut short is dropped, never mapped; the archive is per java, Spark and heap size."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mlopsctl.devenv.classarchive import ClassArchive, java_binary
from mlopsctl.devenv.stack import spark_home


def java(archive: ClassArchive, *args: str) -> subprocess.CompletedProcess:
    """A JVM with the archive's options, run where the Spark server runs (the options' paths are relative)."""
    return subprocess.run(
        [str(java_binary()), *archive.java_options(), *args, "-version"],
        check=False, cwd=archive.folder.parent, capture_output=True, text=True, timeout=120,
    )


def test_a_jvm_writes_the_archive_at_exit_the_next_start_keeps_it_and_a_jvm_maps_it(tmp_path: Path) -> None:
    archive = ClassArchive.for_server(tmp_path, spark_home(), "512m")
    assert archive is not None
    archive.prepare()
    assert any(o.startswith("-XX:ArchiveClassesAtExit=") for o in archive.java_options())
    done = java(archive)
    assert done.returncode == 0, done.stderr
    assert "[cds]" not in done.stdout + done.stderr  # the per-class warnings of a dump stay out of the log
    assert archive.partial.is_file() and not archive.path.exists()

    archive.prepare()
    assert archive.path.is_file() and not archive.partial.exists() and not archive.dump_log.exists()
    assert archive.java_options() == [f"-XX:SharedArchiveFile=cds/{archive.path.name}"]
    mapped = java(archive, "-Xshare:on")  # fails unless the JVM maps the archive
    assert mapped.returncode == 0, mapped.stderr


@pytest.mark.parametrize("log", [None, "[0.2s][info][cds,dynamic] Copying 8 klasses and 12 symbols\n"])
def test_a_dump_cut_short_is_dropped_and_written_again(tmp_path: Path, log: str | None) -> None:
    # a server killed while writing: the partial file is there, the JVM's "written" line is not
    archive = ClassArchive.for_server(tmp_path, spark_home(), "512m")
    assert archive is not None
    archive.folder.mkdir()
    archive.partial.write_bytes(b"\0" * 4096)
    if log is not None:
        archive.dump_log.write_text(log)
    archive.prepare()
    assert list(archive.folder.iterdir()) == []
    assert any(o.startswith("-XX:ArchiveClassesAtExit=") for o in archive.java_options())
    assert java(archive).returncode == 0


def test_the_archive_is_per_java_spark_and_heap_and_other_ones_are_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = ClassArchive.for_server(tmp_path, spark_home(), "512m")
    assert first is not None and first == ClassArchive.for_server(tmp_path, spark_home(), "512m")
    assert ClassArchive.for_server(tmp_path, spark_home(), "1g") != first

    other_java = tmp_path / "jdk" / "bin" / "java"
    other_java.parent.mkdir(parents=True)
    other_java.write_text("#!/bin/sh\n")
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))
    second = ClassArchive.for_server(tmp_path, spark_home(), "512m")
    assert second is not None and second.name != first.name

    first.folder.mkdir()
    first.path.write_bytes(b"old")
    second.prepare()
    assert list(second.folder.iterdir()) == []
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-such-jdk"))
    assert ClassArchive.for_server(tmp_path, spark_home(), "512m") is None
