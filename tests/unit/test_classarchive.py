"""The Spark server's class-data archive (mlopsctl/devenv/classarchive.py), with the real JVM: a JVM started with
the write options writes an archive that is kept only if whole and that a JVM then maps (``-Xshare:on`` fails if
it cannot); the writer stops its server once it answers and keeps what it wrote, and leaves nothing when the
server never answers; the archive is per java, Spark and heap size."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mlopsctl.devenv.classarchive import ClassArchive, java_binary
from mlopsctl.devenv.health import tcp_accepts
from mlopsctl.devenv.stack import spark_home

# a stand-in for the Spark Connect server, in Java so that the real JVM writes the archive: it answers the
# HTTP/2 preface with a SETTINGS frame (what `grpc_serving` looks for) until it is stopped
SERVER = """
import java.net.*;
import java.nio.file.*;
public class Server {
    public static void main(String[] args) throws Exception {
        for (String name : new String[] {"stat", "autogroup"}) {  // its priority, for the test to read
            Path source = Paths.get("/proc/self/" + name);
            if (Files.exists(source)) Files.copy(source, Paths.get("server-" + name));
        }
        try (ServerSocket listener = new ServerSocket(Integer.parseInt(args[0]), 50, InetAddress.getLoopbackAddress())) {
            while (true) {
                try (Socket client = listener.accept()) {
                    client.getInputStream().readNBytes(24);
                    client.getOutputStream().write(new byte[] {0, 0, 0, 4, 0, 0, 0, 0, 0});
                }
            }
        }
    }
}
"""


def java(archive: ClassArchive, *args: str) -> subprocess.CompletedProcess:
    """A JVM run where the Spark server runs (the options' paths are relative to it)."""
    return subprocess.run(
        [str(java_binary()), *args, "-version"],
        check=False, cwd=archive.folder.parent, capture_output=True, text=True, timeout=120,
    )


def new_archive(tmp_path: Path) -> ClassArchive:
    archive = ClassArchive.for_server(tmp_path / "spark", spark_home(), "512m")
    assert archive is not None
    archive.prepare()
    return archive


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def writer(archive: ClassArchive, port: int, *server_argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlopsctl.devenv.classarchive", "--archive", str(archive.folder / archive.name),
         "--port", str(port), "--", *server_argv],
        check=False, capture_output=True, text=True, timeout=300, start_new_session=True,  # as `dev start` does
    )


@pytest.mark.integration  # runs java in its body, not through a fixture
def test_a_jvm_writes_the_archive_at_exit_it_is_kept_when_whole_and_a_jvm_maps_it(tmp_path: Path) -> None:
    archive = new_archive(tmp_path)
    assert archive.map_options() == []
    done = java(archive, *archive.write_options())
    assert done.returncode == 0, done.stderr
    assert "[cds]" not in done.stdout + done.stderr  # the per-class warnings of a dump stay out of the log
    assert archive.partial.is_file() and not archive.path.exists()

    archive.prepare()
    assert archive.path.is_file() and not archive.partial.exists() and not archive.dump_log.exists()
    assert archive.map_options() == [f"-XX:SharedArchiveFile=cds/{archive.path.name}"]
    mapped = java(archive, *archive.map_options(), "-Xshare:on")  # fails unless the JVM maps the archive
    assert mapped.returncode == 0, mapped.stderr


@pytest.mark.parametrize("log", [None, "[0.2s][info][cds,dynamic] Copying 8 klasses and 12 symbols\n"])
def test_a_dump_cut_short_is_dropped(tmp_path: Path, log: str | None) -> None:
    # a writer killed while writing: the partial file is there, the JVM's "written" line is not
    archive = new_archive(tmp_path)
    archive.partial.write_bytes(b"\0" * 4096)
    if log is not None:
        archive.dump_log.write_text(log)
    archive.prepare()
    assert list(archive.folder.iterdir()) == []
    assert archive.map_options() == []


@pytest.mark.integration  # runs java in its body, not through a fixture
def test_the_writer_stops_its_server_once_it_answers_and_keeps_the_archive_it_wrote(tmp_path: Path) -> None:
    archive = new_archive(tmp_path)
    source = archive.folder.parent / "Server.java"
    source.write_text(SERVER)
    port = free_port()
    done = writer(archive, port, str(java_binary()), *archive.write_options(), source.name, str(port))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"written: {archive.path}" in done.stdout
    assert not tcp_accepts("127.0.0.1", port)  # the server is gone
    # it ran at the lowest priority, its session (autogroup) included
    assert int((archive.folder.parent / "server-stat").read_text().rsplit(")", 1)[1].split()[16]) == 19
    autogroup = archive.folder.parent / "server-autogroup"
    if autogroup.exists():
        assert autogroup.read_text().split()[-1] == "19"
    assert sorted(p.name for p in archive.folder.iterdir()) == [archive.path.name]
    mapped = java(archive, *archive.map_options(), "-Xshare:on")
    assert mapped.returncode == 0, mapped.stderr


@pytest.mark.integration  # runs java in its body, not through a fixture
def test_a_server_that_exits_before_it_answers_leaves_no_archive(tmp_path: Path) -> None:
    archive = new_archive(tmp_path)
    # a JVM that writes a whole archive of its own few classes, but never serves: not a server's archive
    done = writer(archive, free_port(), str(java_binary()), *archive.write_options(), "-version")
    assert done.returncode == 1 and "not written" in done.stdout
    assert list(archive.folder.iterdir()) == []


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
