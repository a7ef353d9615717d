"""Lifecycle of the real local stack (`mlopsctl dev start|stop|status|logs`) on the session stack.

The tests run in file order and share the one session stack to stay cheap on a 2-core CI machine: start
twice, status, a real Spark Connect client of the stack's Spark server, a port already taken (refused before
anything is spawned), a `kill -9` of the scheduler, of the Spark server and of the job launcher (each restarted alone,
orphans cleaned up), then stop (nothing left) and start again (warm), so the stack is up again for the tests that
follow.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from mlopsctl.devenv import components
from mlopsctl.devenv.launcher import ping
from mlopsctl.devenv.layout import StackLayout
from mlopsctl.devenv.preflight import spark_server_down
from mlopsctl.devenv.process import (
    PidRecord,
    read_pid_file,
    remove_pid_file,
    terminate,
    tree_of,
    write_pid_file,
)
from mlopsctl.devenv.stack import ARCHIVE_WRITER, SPARK_WARMUP, spark_class_archive
from mlopsctl.devenv.start import start_stack
from mlopsctl.devenv.status import stack_status
from mlopsctl.errors import ExitCode, StackError
from tests.fixtures.stack import LocalStack, free_port, make_project, stack_settings

COMPONENTS = components.names()


def _pids(stack: LocalStack) -> dict[str, int]:
    layout = StackLayout(stack.state_dir)
    out = {}
    for name in COMPONENTS:
        rec = read_pid_file(layout.pid_file(name))
        assert rec is not None, f"no PID file for {name}"
        out[name] = rec.pid
    return out


def test_stack_is_healthy_with_private_state(local_stack: LocalStack) -> None:
    st = stack_status(local_stack.settings)
    assert st.all_running and st.all_healthy, st.as_dict()
    layout = StackLayout(local_stack.state_dir)
    assert layout.state.stat().st_mode & 0o777 == 0o700
    assert layout.passwords_file.stat().st_mode & 0o777 == 0o600
    assert json.loads(layout.passwords_file.read_text())["admin"] == local_stack.password
    # the generated password works against the real api-server, and DAG files were parsed at start
    result = local_stack.start_result
    assert result is not None and not result.import_errors, result.import_errors if result else None
    assert "mlopsctl_test_tiny" in [d for ids in result.dags.values() for d in ids]
    client = local_stack.client()
    try:
        assert not client.health().unhealthy()
        assert "mlopsctl_test_tiny" in {d.dag_id for d in client.list_dags()}
    finally:
        client.close()


def test_components_listen_only_on_loopback(local_stack: LocalStack) -> None:
    pids = set()
    for name in COMPONENTS:
        rec = read_pid_file(StackLayout(local_stack.state_dir).pid_file(name))
        pids.update(p.pid for p in tree_of(rec))
    listening = [
        c for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN and c.pid in pids
    ]
    assert {c.laddr.port for c in listening} >= {
        local_stack.settings.airflow_port,
        local_stack.settings.mlflow_port,
        local_stack.settings.spark_connect_port,
    }
    assert all(c.laddr.ip == "127.0.0.1" for c in listening), [(c.pid, c.laddr) for c in listening]


def test_start_twice_is_a_no_op(local_stack: LocalStack, cli_env: dict[str, str], cli) -> None:
    before = _pids(local_stack)
    result = start_stack(local_stack.settings)
    assert result.already_running and result.started == []
    assert _pids(local_stack) == before

    code, out, err = cli("dev", "start")
    assert code == 0, err
    assert "already running" in err
    assert local_stack.airflow_url in out
    assert local_stack.password not in out + err  # never printed unless asked
    assert _pids(local_stack) == before


def test_status_json_reports_every_component(
    local_stack: LocalStack, cli_env: dict[str, str], cli
) -> None:
    code, out, err = cli("dev", "status", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["running"] and data["healthy"]
    assert "password" not in data
    comps = {c["component"]: c for c in data["components"]}
    assert set(comps) == set(COMPONENTS)
    assert comps["api-server"]["port"] == local_stack.settings.airflow_port
    assert comps["mlflow"]["port"] == local_stack.settings.mlflow_port
    assert comps["spark"]["port"] == local_stack.settings.spark_connect_port
    assert data["spark_url"] == local_stack.spark_remote
    for c in comps.values():
        assert c["health"] == "healthy" and c["pid"] and c["rss_bytes"] > 0
    assert data["total_rss_bytes"] == sum(c["rss_bytes"] for c in comps.values())
    assert (
        0 < data["total_pss_bytes"] <= data["total_rss_bytes"]
    )  # shared pages of forked workers counted once

    code, out, err = cli("dev", "status", "--json", "--show-password")
    assert code == 0, err
    assert json.loads(out)["password"] == local_stack.password


def _listening(record: PidRecord) -> list:
    """Listening sockets of a component's whole process tree (for Spark: the JVM and its Python workers)."""
    tree = {p.pid for p in tree_of(record)}
    return [c for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN and c.pid in tree]


def _connect_round_trip(url: str) -> tuple[int, str]:
    """A real Spark Connect client: a plain count, and a mapInPandas (Python workers of the server)."""
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.remote(url).create()  # never an existing default session of the process
    try:
        count = spark.range(10).count()

        def worker_python(batches):
            import sys as worker_sys

            import pandas as pd

            for _ in batches:
                yield pd.DataFrame({"python": [worker_sys.executable]})

        python = spark.range(1).mapInPandas(worker_python, "python string").collect()[0]["python"]
    finally:
        spark.stop()
    return count, python


def test_spark_connect_server_serves_clients_on_loopback(local_stack: LocalStack) -> None:
    assert spark_server_down(local_stack.settings) is None
    count, python = _connect_round_trip(local_stack.spark_remote)
    assert count == 10
    assert python == sys.executable  # the Python workers run this venv (sklearn, pandas, pyarrow)
    record = read_pid_file(StackLayout(local_stack.state_dir).pid_file("spark"))
    assert record is not None
    listening = _listening(record)
    assert local_stack.settings.spark_connect_port in {c.laddr.port for c in listening}
    assert len(listening) >= 3  # gRPC, driver RPC, block manager: all of them on loopback
    assert all(c.laddr.ip == "127.0.0.1" for c in listening), [(c.pid, c.laddr) for c in listening]


def test_logs_prints_a_component_log(local_stack: LocalStack, cli_env: dict[str, str], cli) -> None:
    code, out, err = cli("dev", "logs", "scheduler", "-n", "5")
    assert code == 0, err
    assert 0 < len(out.splitlines()) <= 5


def test_port_in_use_is_refused_before_spawning(local_stack: LocalStack, tmp_path: Path, cli) -> None:
    # Airflow's port is taken by the running session stack
    project = make_project(tmp_path / "other")
    taken = stack_settings(project, airflow_port=local_stack.settings.airflow_port)
    with pytest.raises(StackError) as exc:
        start_stack(taken)
    assert f"Port {local_stack.settings.airflow_port}" in exc.value.message
    assert "api-server" in exc.value.message and "MLOPSCTL_AIRFLOW_PORT" in (exc.value.hint or "")
    layout = StackLayout(taken.state)
    assert not any(layout.pid_file(n).exists() for n in COMPONENTS)

    # MLflow's port taken by someone else: the CLI says so with the STACK exit code
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        code, _out, err = cli(
            "-C", str(project), "dev", "start", "--airflow-port", str(free_port()), "--mlflow-port", str(port)
        )
    assert code == ExitCode.STACK, err
    assert f"Port {port}" in err and "mlflow" in err and "MLOPSCTL_MLFLOW_PORT" in err
    assert not any(layout.pid_file(n).exists() for n in COMPONENTS)

    # the Spark Connect port: the session stack's own server holds it
    spark_port = local_stack.settings.spark_connect_port
    code, _out, err = cli(
        "-C", str(project), "dev", "start", "--airflow-port", str(free_port()), "--mlflow-port",
        str(free_port()), "--spark-port", str(spark_port),
    )
    assert code == ExitCode.STACK, err
    assert f"Port {spark_port}" in err and "spark" in err and "MLOPSCTL_SPARK_CONNECT_PORT" in err
    assert not any(layout.pid_file(n).exists() for n in COMPONENTS)


def test_start_after_kill_9_restarts_only_the_dead_component(local_stack: LocalStack) -> None:
    layout = StackLayout(local_stack.state_dir)
    before = _pids(local_stack)
    record = read_pid_file(layout.pid_file("scheduler"))
    assert record is not None
    workers = [p for p in tree_of(record) if p.pid != record.pid]
    assert workers, "the scheduler should have LocalExecutor workers"
    os.kill(record.pid, signal.SIGKILL)
    psutil.wait_procs([psutil.Process(record.pid)], timeout=10)

    st = stack_status(local_stack.settings)
    assert {c.name: c.health for c in st.components}["scheduler"] == "stopped"

    result = start_stack(local_stack.settings)
    assert result.started == ["scheduler"]
    after = _pids(local_stack)
    assert after["scheduler"] != before["scheduler"]
    assert {k: v for k, v in after.items() if k != "scheduler"} == {
        k: v for k, v in before.items() if k != "scheduler"
    }
    assert not [w.pid for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE], (
        "orphans remain"
    )
    assert stack_status(local_stack.settings).all_healthy


def test_a_dead_spark_server_is_reported_and_restarted_alone(
    local_stack: LocalStack, cli_env: dict[str, str], cli
) -> None:
    layout = StackLayout(local_stack.state_dir)
    before = _pids(local_stack)
    record = read_pid_file(layout.pid_file("spark"))
    assert record is not None
    port = local_stack.settings.spark_connect_port
    try:
        tree = tree_of(record)
        os.kill(record.pid, signal.SIGKILL)
        psutil.wait_procs([psutil.Process(record.pid)], timeout=30)

        reason = spark_server_down(local_stack.settings)
        assert reason and "not running" in reason and str(layout.log_file("spark")) in reason
        code, out, err = cli("dev", "status", "--json")
        assert code == ExitCode.STACK, err
        comps = {c["component"]: c for c in json.loads(out)["components"]}
        assert comps["spark"]["health"] == "stopped" and not comps["spark"]["running"]
        assert all(c["health"] == "healthy" for name, c in comps.items() if name != "spark")

        # `run` says so before triggering anything
        client = local_stack.client()
        try:
            runs_before = {r.dag_run_id for r in client.list_runs("build_model", limit=100)}
            code, _out, err = cli("run", "build-model", "--no-wait")
            assert code == ExitCode.STACK, err
            assert "Not triggering build_model" in err and "Spark Connect server is not running" in err
            assert "mlopsctl dev start" in err
            assert {r.dag_run_id for r in client.list_runs("build_model", limit=100)} == runs_before
        finally:
            client.close()

        # something else grabbed the port meanwhile: `dev start` refuses with the STACK exit code and a hint,
        # touching none of the running components
        with socket.socket() as squatter:
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind(("127.0.0.1", port))
            squatter.listen()
            code, _out, err = cli("dev", "start")
        assert code == ExitCode.STACK, err
        assert f"Port {port}" in err and "spark" in err and "MLOPSCTL_SPARK_CONNECT_PORT" in err
        others = {n: read_pid_file(layout.pid_file(n)) for n in COMPONENTS if n != "spark"}
        assert {n: r.pid for n, r in others.items() if r} == {k: v for k, v in before.items() if k != "spark"}
        assert all(tree_of(r) for r in others.values() if r)

        code, _out, err = cli("dev", "start")
        assert code == 0, err
        after = _pids(local_stack)
        assert after["spark"] != record.pid
        assert {k: v for k, v in after.items() if k != "spark"} == {
            k: v for k, v in before.items() if k != "spark"
        }
        assert not [p.pid for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], "orphans"
        assert spark_server_down(local_stack.settings) is None
        assert _connect_round_trip(local_stack.spark_remote)[0] == 10
    finally:  # the stack is shared: whatever happened above, leave it whole
        start_stack(local_stack.settings)
    assert stack_status(local_stack.settings).all_healthy


def test_the_tasks_fork_their_jobs_from_the_launcher_and_a_dead_one_is_restarted_alone(
    local_stack: LocalStack, cli_env: dict[str, str], cli
) -> None:
    layout = StackLayout(local_stack.state_dir)
    log = layout.log_file("launcher")
    before = _pids(local_stack)
    record = read_pid_file(layout.pid_file("launcher"))
    assert record is not None and ping(layout.launcher_socket)["pid"] == record.pid
    try:
        os.kill(record.pid, signal.SIGKILL)
        psutil.wait_procs([psutil.Process(record.pid)], timeout=30)
        code, out, err = cli("dev", "status", "--json")
        assert code == ExitCode.STACK, err
        comps = {c["component"]: c for c in json.loads(out)["components"]}
        assert comps["launcher"]["health"] == "stopped"
        assert all(c["health"] == "healthy" for name, c in comps.items() if name != "launcher")

        code, _out, err = cli("dev", "start")  # the stale socket file is replaced
        assert code == 0, err
        after = _pids(local_stack)
        assert after["launcher"] != record.pid
        assert {k: v for k, v in after.items() if k != "launcher"} == {
            k: v for k, v in before.items() if k != "launcher"
        }
        assert ping(layout.launcher_socket)["pid"] == after["launcher"]
        # `dev start` asked for the preload once the stack was healthy (unasked, it would start after 60 s)
        deadline = time.monotonic() + 45
        while not ping(layout.launcher_socket)["ready"]:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)

        logged = log.stat().st_size
        code, out, err = cli("run", "build-model", "--max-depth", "3", "--n-estimators", "5", "--no-register")
        assert code == 0, err
        forked = log.read_bytes()[logged:].decode()
        for job in ("preprocess_data.py", "train_model.py"):
            assert re.search(rf"job (\d+): \S*{job}\n(.|\n)*job \1: exit 0", forked), forked
    finally:  # the stack is shared: whatever happened above, leave it whole
        start_stack(local_stack.settings)
    assert stack_status(local_stack.settings).all_healthy


def _archive(stack: LocalStack):
    """The Spark server's class-data archive, once written: a writer starts in the background after a start
    of the server without one, and stops on its own (a bound, not a timing assertion)."""
    layout = StackLayout(stack.state_dir)
    archive = spark_class_archive(stack.settings, layout)
    assert archive is not None
    writer = read_pid_file(layout.pid_file(ARCHIVE_WRITER))
    if writer is not None and not archive.path.is_file():
        psutil.wait_procs(tree_of(writer), timeout=600)
    assert archive.path.is_file(), layout.log_file(ARCHIVE_WRITER).read_text()[-3000:]
    return archive


def _restarted_alone(stack: LocalStack, name: str) -> None:
    """Stop one component and start the stack again: only that one starts."""
    layout = StackLayout(stack.state_dir)
    record = read_pid_file(layout.pid_file(name))
    if record is not None:
        terminate([record], grace=20.0)
        remove_pid_file(layout.pid_file(name))
    assert stack.start().started == [name]


def test_the_class_archive_is_written_by_a_background_writer_that_stops_on_its_own(
    local_stack: LocalStack,
) -> None:
    layout = StackLayout(local_stack.state_dir)
    _archive(local_stack)
    writer = read_pid_file(layout.pid_file(ARCHIVE_WRITER))
    assert writer is not None and "ArchiveClassesAtExit" in " ".join(writer.argv)
    assert psutil.wait_procs(tree_of(writer), timeout=30)[1] == []
    spark = read_pid_file(layout.pid_file("spark"))
    assert spark is not None and "ArchiveClassesAtExit" not in " ".join(spark.argv)  # the server never writes


def test_a_start_without_the_archive_starts_its_writer_again(local_stack: LocalStack) -> None:
    layout = StackLayout(local_stack.state_dir)
    archive = _archive(local_stack)
    aside = archive.folder.parent / "archive-aside.jsa"
    os.replace(archive.path, aside)
    writer = None
    try:
        assert local_stack.start().started == []
        writer = read_pid_file(layout.pid_file(ARCHIVE_WRITER))
        assert writer is not None and tree_of(writer)
    finally:
        if writer is not None:
            terminate([writer], grace=0)
            remove_pid_file(layout.pid_file(ARCHIVE_WRITER))
        os.replace(aside, archive.path)


def test_stop_leaves_no_process_and_no_pid_file(local_stack: LocalStack, cli_env: dict[str, str], cli) -> None:
    """Every component, and a background helper of the start still at work (an archive writer), is stopped.
    The stack stays stopped: the next test starts it again."""
    layout = StackLayout(local_stack.state_dir)
    archive = _archive(local_stack)
    aside = archive.folder.parent / "archive-aside.jsa"
    os.replace(archive.path, aside)
    try:
        local_stack.start()
        writer = read_pid_file(layout.pid_file(ARCHIVE_WRITER))
        assert writer is not None and tree_of(writer)
        assert local_stack.processes()
        code, out, err = cli("dev", "stop", "--json")
        assert code == 0, err
        assert sorted(json.loads(out)["stopped"]) == sorted(COMPONENTS)
        assert local_stack.processes() == [] and tree_of(writer) == []
        assert not any(layout.pid_file(n).exists() for n in [*COMPONENTS, ARCHIVE_WRITER, SPARK_WARMUP])
    finally:
        os.replace(aside, archive.path)


def test_stop_and_start_leave_a_reused_pid_alone(local_stack: LocalStack, cli_env: dict[str, str], cli) -> None:
    """A stale PID file whose PID now belongs to an unrelated process: neither stop nor start touches it."""
    layout = StackLayout(local_stack.state_dir)
    if stack_status(local_stack.settings, probe=False).running:
        local_stack.stop()
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    stale = PidRecord("triggerer", bystander.pid, time.time() - 3600, ["airflow", "triggerer"], 0.0)
    try:
        write_pid_file(layout.pid_file("triggerer"), stale)
        code, _out, err = cli("dev", "stop")
        assert code == 0, err
        assert "stale" in err
        assert bystander.poll() is None
        write_pid_file(layout.pid_file("triggerer"), stale)
        local_stack.start()  # a warm start: the session stack is up again for the tests that follow
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
        if not stack_status(local_stack.settings, probe=False).all_running:
            local_stack.start()
    assert stack_status(local_stack.settings).all_healthy


def test_a_warm_start_starts_every_component_without_a_migration(local_stack: LocalStack) -> None:
    result = local_stack.start_result
    if result is None or sorted(result.started) != sorted(COMPONENTS):  # run alone: stop first
        local_stack.stop()
        result = local_stack.start()
    assert sorted(result.started) == sorted(COMPONENTS) and not result.migrated
    assert stack_status(local_stack.settings).all_healthy


def test_a_spark_server_started_with_the_archive_maps_it_and_starts_no_writer(local_stack: LocalStack) -> None:
    layout = StackLayout(local_stack.state_dir)
    archive = _archive(local_stack)
    spark = read_pid_file(layout.pid_file("spark"))
    if spark is None or not any("SharedArchiveFile" in arg for arg in spark.argv):  # started before the archive
        _restarted_alone(local_stack, "spark")
        spark = read_pid_file(layout.pid_file("spark"))
    assert spark is not None
    assert str(archive.path.resolve()) in {m.path for m in psutil.Process(spark.pid).memory_maps()}
    writer = read_pid_file(layout.pid_file(ARCHIVE_WRITER))
    assert writer is None or writer.started_at < spark.started_at  # no writer since this server started


def test_a_started_spark_server_is_warmed_up_in_the_background(local_stack: LocalStack) -> None:
    """The warm-up job of the last started Spark server reports its steps and removes its table."""
    layout = StackLayout(local_stack.state_dir)
    warmup = read_pid_file(layout.pid_file(SPARK_WARMUP))
    if warmup is None:  # this session's stack has been stopped since: start a Spark server
        _restarted_alone(local_stack, "spark")
        warmup = read_pid_file(layout.pid_file(SPARK_WARMUP))
    assert warmup is not None and "mlopsctl.devenv.sparkwarmup" in warmup.argv
    assert psutil.wait_procs(tree_of(warmup), timeout=300)[1] == []
    assert "spark warm-up: session" in layout.log_file(SPARK_WARMUP).read_text()
    assert not (layout.spark_dir / "warmup").exists()


def test_the_start_has_the_api_server_build_its_execution_api(local_stack: LocalStack) -> None:
    """`dev start` waits for /execution/health (which tasks call) of the api-server it started: nothing else
    asks for it."""
    layout = StackLayout(local_stack.state_dir)
    this_server = layout.log_file("api-server").read_text().rsplit("=== mlopsctl: starting api-server", 1)[1]
    assert re.search(r"path=/execution/health .*status_code=200", this_server)
