"""The local stack's pieces without a real Airflow: layout, env, PID files, process-group stop, port checks,
DAG-parse bookkeeping, start failures, and the `dev` CLI on a stopped stack."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from mlopsctl.devenv import airflowstack, components, ports, start, status, stop, wait
from mlopsctl.devenv import health as hc
from mlopsctl.devenv.airflowstack import airflow_zygote_spec, migration_needed, write_migrate_stamp
from mlopsctl.devenv.layout import StackLayout, ensure_admin_password
from mlopsctl.devenv.logs import file_sizes, follow_lines, tail
from mlopsctl.devenv.preflight import spark_server_down
from mlopsctl.devenv.process import (
    PidRecord,
    process_of,
    read_pid_file,
    spawn,
    terminate,
    tree_of,
    write_pid_file,
)
from mlopsctl.devenv.results import StartResult
from mlopsctl.devenv.servers import spark_command
from mlopsctl.devenv.stack import (
    CONNECT_PORT_CONF,
    STACK_MARKER,
    ComponentSpec,
    airflow_env,
    archive_writer_spec,
    dags_folder,
    spark_class_archive,
    spark_jobs_dir,
)
from mlopsctl.devenv.stop import marked_processes
from mlopsctl.errors import ConfigError, ExitCode, StackError
from mlopsctl.paths import bundled_dags_dir, bundled_spark_jobs_dir
from mlopsctl.settings import Settings
from tests.fixtures.signals import popen_with_default_sigint
from tests.fixtures.stack import free_port

COMPONENTS = components.names()
START_ORDER = [c.name for c in components.in_start_order()]
AIRFLOW_COMPONENTS = [c.name for c in components.components() if c.group is airflowstack.GROUP]


def settings_for(project: Path, **kw) -> Settings:
    return Settings(_env_file=None, project_dir=project, **kw)


def component_specs(settings: Settings, layout: StackLayout | None = None) -> dict[str, ComponentSpec]:
    """Each component's command, in start order."""
    layout = layout or StackLayout.from_settings(settings)
    return {c.name: c.command(settings, layout) for c in components.in_start_order()}


def settings_on_free_ports(project: Path) -> Settings:
    """Settings whose Airflow, MLflow and Spark Connect ports are free right now, not the defaults that a dev
    stack running on this machine may hold."""
    airflow = free_port()
    mlflow = free_port({airflow})
    return settings_for(project, airflow_port=airflow, mlflow_port=mlflow,
                        spark_connect_port=free_port({airflow, mlflow}))


# ------------------------------------------------------------------------------------------ layout / env


def test_layout_and_password_file_are_private(tmp_path: Path) -> None:
    layout = StackLayout(tmp_path / "state")
    layout.ensure()
    assert layout.state.stat().st_mode & 0o777 == 0o700
    for sub in ("airflow", "mlflow/artifacts", "logs", "pids", "work"):
        assert (layout.state / sub).is_dir()
    pw = ensure_admin_password(layout)
    assert len(pw) >= 16
    assert layout.passwords_file == layout.state / "airflow" / "passwords.json"
    assert layout.passwords_file.stat().st_mode & 0o777 == 0o600
    assert json.loads(layout.passwords_file.read_text()) == {"admin": pw}
    assert ensure_admin_password(layout) == pw  # stable across starts
    assert ensure_admin_password(StackLayout(tmp_path / "other")) != pw  # generated, not a constant


def test_airflow_env_has_what_the_components_and_tasks_need(tmp_path: Path) -> None:
    (tmp_path / "dags").mkdir()
    (tmp_path / "spark_jobs").mkdir()
    s = settings_for(
        tmp_path,
        airflow_port=18123,
        mlflow_port=18124,
        parallelism=3,
        compute="local",
        spark_master="local[2]",
    )
    layout = StackLayout.from_settings(s)
    env = airflow_env(s, layout)
    assert env["AIRFLOW_HOME"] == str(tmp_path / ".mlopsctl" / "airflow")
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(tmp_path / "dags")
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__CORE__PARALLELISM"] == "3"
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert env["AIRFLOW__API__PORT"] == "18123"
    assert env["AIRFLOW__API__BASE_URL"] == "http://127.0.0.1:18123"
    assert int(env["AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL"]) <= 10
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] == str(layout.passwords_file)
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{layout.airflow_db}"
    # the runtime contract read by the DAG tasks
    assert env["MLOPSCTL_MLFLOW_TRACKING_URI"] == "http://127.0.0.1:18124"
    assert env["MLOPSCTL_COMPUTE"] == "local"
    assert env["MLOPSCTL_SPARK_MASTER"] == "local[2]"
    assert env["MLOPSCTL_SPARK_JOBS_DIR"] == str(tmp_path / "spark_jobs")
    assert env["MLOPSCTL_WORK_DIR"] == str(layout.work_dir)
    assert env["MLOPSCTL_JOB_LAUNCHER"] == str(layout.launcher_socket)
    assert env["AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME"] == str(s.scheduler_idle_sleep)
    assert env["PYSPARK_PYTHON"] == env["PYSPARK_DRIVER_PYTHON"] == sys.executable
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    assert env["SPARK_LOCAL_IP"] == "127.0.0.1"
    assert env[STACK_MARKER] == str(layout.state)
    assert not any(k.startswith("PYTEST_") for k in env)


def test_dags_and_spark_jobs_fall_back_to_the_bundled_ones(tmp_path: Path) -> None:
    s = settings_for(tmp_path)
    assert dags_folder(s) == bundled_dags_dir()
    assert spark_jobs_dir(s) == bundled_spark_jobs_dir()
    (tmp_path / "dags").mkdir()
    assert dags_folder(s) == tmp_path / "dags"


def test_component_commands_bind_loopback_and_skip_log_servers(tmp_path: Path) -> None:
    s = settings_for(tmp_path, airflow_port=18001, mlflow_port=18002)
    specs = component_specs(s)
    assert list(specs) == ["spark", "launcher", "mlflow", "api-server", "scheduler", "dag-processor", "triggerer"]
    assert list(specs) == list(START_ORDER) and set(specs) == set(COMPONENTS)
    api = specs["api-server"].argv
    assert api[api.index("--host") + 1] == "127.0.0.1" and api[api.index("--port") + 1] == "18001"
    assert "--skip-serve-logs" in specs["scheduler"].argv and "--skip-serve-logs" in specs["triggerer"].argv
    assert "standalone" not in " ".join(" ".join(spec.argv) for spec in specs.values())
    # the Airflow components are `python -m airflow ...`, the form the zygote forks, with one environment
    for name in AIRFLOW_COMPONENTS:
        assert specs[name].argv[:3] == [sys.executable, "-m", "airflow"] and specs[name].env == specs["scheduler"].env
    zygote = airflow_zygote_spec(s, StackLayout.from_settings(s))
    assert zygote.argv[:3] == [sys.executable, "-m", "mlopsctl.devenv.zygote"]
    assert zygote.env == specs["scheduler"].env and zygote.cwd == specs["scheduler"].cwd
    ml = specs["mlflow"].argv
    assert ml[ml.index("--host") + 1] == "127.0.0.1" and ml[ml.index("--port") + 1] == "18002"
    assert ml[ml.index("--workers") + 1] == "1"
    assert ml[ml.index("--backend-store-uri") + 1].startswith("sqlite:///")
    assert specs["mlflow"].env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"


JAVA_OPTIONS = "spark.driver.extraJavaOptions"


def _conf(argv: list[str]) -> dict[str, str]:
    return dict(argv[i + 1].split("=", 1) for i, arg in enumerate(argv) if arg == "--conf")


def _java_options(argv: list[str]) -> list[str]:
    return shlex.split(_conf(argv)[JAVA_OPTIONS])  # Spark splits them as shlex does


def test_spark_server_and_its_archive_writer_get_the_archive_options_as_whole_words_from_a_path_with_spaces(
    tmp_path: Path,
) -> None:
    s = settings_for(tmp_path, state_dir=tmp_path / "my state")
    layout = StackLayout.from_settings(s)
    archive = spark_class_archive(s, layout)
    assert archive is not None
    archive.folder.mkdir(parents=True)
    archive.path.write_bytes(b"an archive")
    spec = component_specs(s, layout)["spark"]
    assert archive.folder.parent == spec.cwd == layout.spark_dir  # the options' paths are relative to it
    options = _java_options(spec.argv)
    assert archive.map_options() and set(archive.map_options()) <= set(options)
    assert "-XX:+UseSerialGC" in options
    writer = archive_writer_spec(s, layout, archive)
    assert writer.cwd == layout.spark_dir
    assert set(archive.write_options()) <= set(_java_options(writer.argv))


def test_spark_server_runs_in_the_foreground_on_loopback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPARK_REMOTE", "sc://elsewhere.example:15002")  # a client setting of the caller
    s = settings_for(
        tmp_path, airflow_port=18001, mlflow_port=18002, spark_connect_port=18003, spark_master="local[2]",
        spark_driver_memory="640m",
    )
    layout = StackLayout.from_settings(s)
    spec = component_specs(s, layout)["spark"]
    argv = spec.argv
    home = Path(spec.env["SPARK_HOME"])
    # pyspark's own distribution: its spark-submit, its Connect server class, in the foreground (not the
    # daemonizing sbin/start-connect-server.sh)
    assert argv[0] == str(home / "bin" / "spark-submit") and Path(argv[0]).is_file()
    assert list(home.glob("jars/spark-connect_*.jar"))
    assert argv[argv.index("--class") + 1] == "org.apache.spark.sql.connect.service.SparkConnectServer"
    assert "start-connect-server" not in " ".join(argv)
    assert argv[argv.index("--master") + 1] == "local[2]"
    assert argv[argv.index("--driver-memory") + 1] == "640m"
    conf = _conf(argv)
    assert conf["spark.connect.grpc.binding.address"] == "127.0.0.1"
    assert conf["spark.connect.grpc.binding.port"] == "18003" and spec.port == 18003
    assert conf["spark.driver.bindAddress"] == conf["spark.driver.host"] == "127.0.0.1"
    assert conf["spark.ui.enabled"] == "false"
    assert "-Djava.net.preferIPv4Stack=true" in conf["spark.driver.extraJavaOptions"]  # listeners on 127.0.0.1
    assert conf["spark.sql.shuffle.partitions"] == "2"
    assert conf["spark.local.dir"].startswith(str(layout.spark_dir))
    assert spec.cwd == layout.spark_dir
    env = spec.env
    assert env["PYSPARK_PYTHON"] == sys.executable  # Python workers (mapInPandas) get this venv
    assert env["SPARK_LOCAL_IP"] == "127.0.0.1" and env["SPARK_CONNECT_MODE"] == "0"
    assert "SPARK_REMOTE" not in env
    assert env[STACK_MARKER] == str(layout.state)
    # the Airflow components (the tasks) are pointed at it; the master stays as the spark-submit fallback
    aenv = airflow_env(s, layout)
    assert aenv["MLOPSCTL_SPARK_REMOTE"] == "sc://127.0.0.1:18003"
    assert aenv["MLOPSCTL_SPARK_MASTER"] == "local[2]"
    # an explicit server elsewhere is what the tasks get
    other = settings_for(tmp_path, spark_remote="sc://spark.example.com:15002")
    assert airflow_env(other, layout)["MLOPSCTL_SPARK_REMOTE"] == "sc://spark.example.com:15002"


@pytest.mark.parametrize(
    ("master", "loopback", "partitions"),
    [
        ("local[*]", True, str(max(2, os.cpu_count() or 1))),
        ("local[3,2]", True, "3"),
        ("spark://127.0.0.1:7077", True, None),
        ("spark://10.1.2.3:7077", False, None),
    ],
)
def test_spark_server_in_front_of_a_cluster(
    tmp_path: Path, master: str, loopback: bool, partitions: str | None
) -> None:
    """Settings that only hold for a local master (its Python workers run here, under this venv's daemon
    module) are left to the cluster otherwise."""
    s = settings_for(
        tmp_path, airflow_port=18001, mlflow_port=18002, spark_connect_port=18003, spark_master=master
    )
    spec = component_specs(s)["spark"]
    conf = _conf(spec.argv)
    assert spec.argv[spec.argv.index("--master") + 1] == master
    assert conf["spark.connect.grpc.binding.address"] == "127.0.0.1"  # the gRPC port is always loopback
    # the driver binds to loopback only when its executors are on this machine
    assert ("spark.driver.bindAddress" in conf) == loopback and ("SPARK_LOCAL_IP" in spec.env) == loopback
    assert conf.get("spark.sql.shuffle.partitions") == partitions
    local = master.startswith("local")
    assert conf.get("spark.python.daemon.module") == ("mlopsctl.devenv.sparkdaemon" if local else None)


@pytest.mark.parametrize(
    ("port_fields", "names"),
    [
        ({"airflow_port": 18003, "mlflow_port": 18003}, ("MLOPSCTL_AIRFLOW_PORT", "MLOPSCTL_MLFLOW_PORT")),
        (
            {"airflow_port": 18003, "spark_connect_port": 18003},
            ("MLOPSCTL_AIRFLOW_PORT", "MLOPSCTL_SPARK_CONNECT_PORT"),
        ),
        (
            {"mlflow_port": 18003, "spark_connect_port": 18003},
            ("MLOPSCTL_MLFLOW_PORT", "MLOPSCTL_SPARK_CONNECT_PORT"),
        ),
    ],
)
def test_same_port_for_two_servers_is_a_config_error(tmp_path: Path, port_fields: dict, names: tuple) -> None:
    with pytest.raises(ConfigError, match="cannot share port 18003") as exc:
        ports.check_distinct_ports(settings_for(tmp_path, **{"airflow_port": 18001, "mlflow_port": 18002, **port_fields}))
    assert exc.value.exit_code == ExitCode.CONFIG
    assert all(name in (exc.value.hint or "") for name in names)


def test_spark_server_needs_java(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(ConfigError, match="Java") as exc:
        spark_command(settings_for(tmp_path), StackLayout(tmp_path / "state"))
    assert "JAVA_HOME" in (exc.value.hint or "")


def test_recorded_port_of_each_server(tmp_path: Path) -> None:
    spark = component_specs(settings_for(tmp_path, spark_connect_port=18777))["spark"]
    assert ports.recorded_port(PidRecord("spark", 1, 0.0, spark.argv, 0.0)) == 18777
    assert ports.recorded_port(PidRecord("mlflow", 1, 0.0, ["mlflow", "--port", "18778"], 0.0)) == 18778
    assert ports.recorded_port(PidRecord("scheduler", 1, 0.0, ["airflow", "scheduler"], 0.0)) is None


def test_migration_only_when_needed(tmp_path: Path) -> None:
    layout = StackLayout(tmp_path / "state")
    layout.ensure()
    assert migration_needed(layout)  # first start
    layout.airflow_db.write_bytes(b"")
    layout.airflow_cfg.write_text("[core]\n")
    assert migration_needed(layout)  # no stamp yet
    write_migrate_stamp(layout)
    assert not migration_needed(layout)
    layout.migrate_stamp.write_text(json.dumps({"airflow_version": "2.0.0"}))
    assert migration_needed(layout)  # Airflow was upgraded


# ------------------------------------------------------------------------------------------ PID files


def test_pid_file_round_trip_and_reused_pid_is_not_ours(tmp_path: Path, procs: list) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    procs.append(psutil.Process(proc.pid))
    real = PidRecord("scheduler", proc.pid, psutil.Process(proc.pid).create_time(), ["x"], time.time())
    write_pid_file(tmp_path / "scheduler.pid", real)
    assert read_pid_file(tmp_path / "scheduler.pid") == real
    assert process_of(real) is not None
    reused = PidRecord("scheduler", proc.pid, real.create_time - 3600, ["x"], 0.0)
    assert process_of(reused) is None  # same PID, another process: not ours
    assert tree_of(reused) == []
    assert terminate([reused], grace=1) == []
    assert proc.poll() is None  # untouched


def test_unreadable_pid_files(tmp_path: Path) -> None:
    assert read_pid_file(tmp_path / "missing.pid") is None
    (tmp_path / "junk.pid").write_text("not json")
    assert read_pid_file(tmp_path / "junk.pid") is None
    (tmp_path / "bare.pid").write_text("123")
    assert read_pid_file(tmp_path / "bare.pid").pid == 123


# ------------------------------------------------------------------------------------------ process groups

TREE = (
    "import subprocess, sys, time\n"
    "kids = [subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']) for _ in range(2)]\n"
    "print('ready', flush=True)\n"
    "time.sleep(300)\n"
)

STUBBORN = (
    "import signal, subprocess, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda *a: print('got SIGTERM, staying', flush=True))\n"
    "print('ready', flush=True)\n"
    "time.sleep(300)\n"
)


def _spawn(
    tmp_path: Path, name: str, code: str, env: dict | None = None
) -> tuple[subprocess.Popen, PidRecord]:
    spec = ComponentSpec(name, [sys.executable, "-c", code], env or dict(os.environ), tmp_path)
    proc, record = spawn(spec, tmp_path / f"{name}.log", tmp_path / f"{name}.pid")
    deadline = time.monotonic() + 30
    while "ready" not in (tmp_path / f"{name}.log").read_text():
        assert time.monotonic() < deadline, "helper process did not start"
        time.sleep(0.05)
    return proc, record


def test_a_clock_step_does_not_orphan_a_running_component(
    tmp_path: Path, procs: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    """psutil's create_time is the boot time plus the kernel's tick count, and the boot time moves when the
    system clock is stepped (NTP, a VM or laptop resumed after a pause). The record keys on the start since
    boot, so after a 40 s step the component is still found, stopped and swept, not reported as dead."""
    proc, record = _spawn(tmp_path, "tree", TREE)
    procs.append(psutil.Process(proc.pid))
    assert record.since_boot > 0 and read_pid_file(tmp_path / "tree.pid") == record
    real_boot_time, real_create_time = psutil.boot_time, psutil.Process.create_time
    monkeypatch.setattr(psutil, "boot_time", lambda: real_boot_time() + 40.0)
    monkeypatch.setattr(psutil.Process, "create_time", lambda self: real_create_time(self) + 40.0)
    assert abs(psutil.Process(proc.pid).create_time() - record.create_time) > 30  # what the step did
    assert process_of(record) is not None
    assert len(tree_of(record)) == 3  # the leader and the two children it started
    assert terminate([record], grace=5) == []
    assert proc.wait(timeout=10) is not None


def test_spawn_detaches_into_its_own_session_and_logs(tmp_path: Path, procs: list) -> None:
    proc, record = _spawn(tmp_path, "tree", TREE)
    procs.append(psutil.Process(proc.pid))
    assert os.getsid(proc.pid) == proc.pid != os.getsid(0)
    assert read_pid_file(tmp_path / "tree.pid") == record
    assert "mlopsctl: starting tree" in (tmp_path / "tree.log").read_text()
    assert len(tree_of(record)) == 3


def test_stop_after_kill_9_of_the_leader_still_finds_its_orphans(tmp_path: Path, procs: list) -> None:
    proc, record = _spawn(tmp_path, "tree", TREE)
    leader = psutil.Process(proc.pid)
    kids = leader.children()
    procs.extend([leader, *kids])
    assert len(kids) == 2
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert process_of(record) is None
    orphans = tree_of(record)  # reparented to init, but still in the leader's session
    assert sorted(p.pid for p in orphans) == sorted(k.pid for k in kids)
    assert terminate([record], grace=5) == []
    assert not any(k.is_running() and k.status() != psutil.STATUS_ZOMBIE for k in kids)


def test_sigterm_then_sigkill_for_a_process_that_ignores_sigterm(tmp_path: Path, procs: list) -> None:
    proc, record = _spawn(tmp_path, "stubborn", STUBBORN)
    procs.append(psutil.Process(proc.pid))
    assert terminate([record], grace=0.5) == []
    assert "got SIGTERM, staying" in (tmp_path / "stubborn.log").read_text()  # asked politely first
    assert not psutil.pid_exists(proc.pid) or psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE


def test_marked_processes_finds_everything_a_stack_spawned(tmp_path: Path, procs: list) -> None:
    env = dict(os.environ, **{STACK_MARKER: str(tmp_path)})
    proc, _ = _spawn(tmp_path, "tree", TREE, env)
    procs.append(psutil.Process(proc.pid))
    found = {p.pid for p in marked_processes(STACK_MARKER, str(tmp_path))}
    assert found == {proc.pid, *(c.pid for c in psutil.Process(proc.pid).children())}
    assert marked_processes(STACK_MARKER, str(tmp_path / "other")) == []


def test_stop_stack_kills_its_components_and_keeps_stale_pid_away(tmp_path: Path, procs: list) -> None:
    s = settings_for(tmp_path)
    layout = StackLayout.from_settings(s)
    layout.ensure()
    env = dict(os.environ, **{STACK_MARKER: str(layout.state)})
    proc, _ = _spawn(layout.logs_dir, "scheduler", TREE, env)
    (layout.logs_dir / "scheduler.pid").replace(layout.pid_file("scheduler"))
    kids = psutil.Process(proc.pid).children()
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    procs.extend([psutil.Process(proc.pid), *kids, psutil.Process(bystander.pid)])
    write_pid_file(layout.pid_file("mlflow"), PidRecord("mlflow", bystander.pid, 1.0, [], 0.0))

    result = stop.stop_stack(s, grace=5)
    assert result.stopped == ["scheduler"] and result.stale == ["mlflow"]
    assert marked_processes(STACK_MARKER, str(layout.state)) == []
    assert bystander.poll() is None
    assert not any(layout.pid_file(n).exists() for n in COMPONENTS)
    bystander.kill()
    bystander.wait()


# ------------------------------------------------------------------------------------------ ports / start


def test_port_in_use_detection() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert ports.port_in_use(port)
    assert not ports.port_in_use(port)


@pytest.mark.parametrize(
    ("field", "flag", "component", "env_var"),
    [
        ("airflow_port", "--airflow-port", "api-server", "MLOPSCTL_AIRFLOW_PORT"),
        ("mlflow_port", "--mlflow-port", "mlflow", "MLOPSCTL_MLFLOW_PORT"),
        ("spark_connect_port", "--spark-port", "spark", "MLOPSCTL_SPARK_CONNECT_PORT"),
    ],
)
def test_start_refuses_a_taken_port_before_spawning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli, field: str, flag: str, component: str, env_var: str
) -> None:
    spawned = []
    monkeypatch.setattr(start, "spawn", lambda *a, **k: spawned.append(a))
    monkeypatch.setattr(start, "spawn_forks", lambda *a, **k: spawned.append(a))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        flags = {"--airflow-port": free_port(), "--mlflow-port": free_port(), "--spark-port": free_port()}
        flags[flag] = port
        fields = dict(zip(("airflow_port", "mlflow_port", "spark_connect_port"), flags.values(), strict=True))
        assert fields[field] == port
        with pytest.raises(StackError) as exc:
            start.start_stack(settings_for(tmp_path, **fields))
        assert f"Port {port}" in exc.value.message and component in exc.value.message
        assert exc.value.exit_code == ExitCode.STACK
        assert env_var in exc.value.hint
        # the same through the CLI: exit 11, the hint on stderr
        code, _out, err = cli("-C", str(tmp_path), "dev", "start", *(f"{k}={v}" for k, v in flags.items()))
    assert code == ExitCode.STACK, err
    assert f"Port {port}" in err and env_var in err
    assert spawned == []


def _fake_stack(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, codes: dict[str, str], zygote_spec=None
) -> None:
    """Components that run ``codes[name]`` (by default: sleep); the Airflow ones as modules forked by the real
    zygote (`mlopsctl.devenv.zygote`), which runs ``python -m MODULE`` commands, the others spawned."""
    path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))

    def env(settings: Settings) -> dict[str, str]:
        return dict(os.environ, PYTHONPATH=path, **{STACK_MARKER: str(settings.state)})

    def command(name: str):
        code = codes.get(name, "import time; time.sleep(300)")
        if name in AIRFLOW_COMPONENTS:
            module = "fake_" + name.replace("-", "_")
            (tmp_path / f"{module}.py").write_text(code)
            argv = [sys.executable, "-m", module]
        else:
            argv = [sys.executable, "-c", code]
        return lambda settings, layout: ComponentSpec(name, argv, env(settings), tmp_path)

    def zygote(settings, layout):
        return ComponentSpec("airflow", [sys.executable, "-m", "mlopsctl.devenv.zygote"], env(settings), tmp_path)

    group = dataclasses.replace(airflowstack.GROUP, zygote=zygote_spec or zygote)
    monkeypatch.setattr(components, "STACK", tuple(
        dataclasses.replace(c, command=command(c.name), before_start=None, after_start=None,
                            group=group if c.group else None)
        for c in components.components()
    ))


def test_start_fails_clearly_when_a_component_dies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings_on_free_ports(tmp_path / "p")
    _fake_stack(
        monkeypatch,
        tmp_path,
        {
            "mlflow": "import sys; print('mlflow exploded: bad store', flush=True); sys.exit(3)",
            "scheduler": "import sys; print('scheduler exploded: bad config', flush=True); sys.exit(3)",
        },
    )
    monkeypatch.setattr(airflowstack, "migration_needed", lambda layout: False)
    with pytest.raises(StackError) as exc:
        start.start_stack(s, timeout=60)
    msg = exc.value.message
    # a spawned component: its exit code is known
    assert msg.startswith("mlflow exited during start (exit code 3)")
    assert "mlflow exploded: bad store" in msg  # the tail of its log
    assert "mlopsctl dev logs mlflow" in exc.value.hint
    assert marked_processes(STACK_MARKER, str(s.state)) == []
    assert not any(StackLayout(s.state).pid_file(n).exists() for n in COMPONENTS)

    # a forked one (the zygote's child, not ours): found dead, its log shown
    _fake_stack(
        monkeypatch, tmp_path,
        {"scheduler": "import sys; print('scheduler exploded: bad config', flush=True); sys.exit(3)"},
    )
    with pytest.raises(StackError) as exc:
        start.start_stack(s, timeout=60)
    msg = exc.value.message
    assert msg.startswith("scheduler exited during start.")
    assert "scheduler exploded: bad config" in msg
    assert "mlopsctl dev logs scheduler" in exc.value.hint
    # what this start launched was stopped again
    assert marked_processes(STACK_MARKER, str(s.state)) == []
    assert not any(StackLayout(s.state).pid_file(n).exists() for n in COMPONENTS)


def test_start_fails_clearly_when_the_zygote_cannot_fork_the_airflow_components(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = settings_on_free_ports(tmp_path / "p")
    _fake_stack(monkeypatch, tmp_path, {})
    fake = components.named("scheduler").group.zygote(s, StackLayout(s.state))
    broken = ComponentSpec(fake.name, [*fake.argv, "--preload", "no_such_airflow_module"], fake.env, fake.cwd)
    _fake_stack(monkeypatch, tmp_path, {}, zygote_spec=lambda settings, layout: broken)
    monkeypatch.setattr(airflowstack, "migration_needed", lambda layout: False)
    with pytest.raises(StackError) as exc:
        start.start_stack(s, timeout=60)
    msg = exc.value.message
    assert msg.startswith("api-server, scheduler, dag-processor, triggerer could not be started.")
    assert "ModuleNotFoundError" in msg and "no_such_airflow_module" in msg
    assert "Stopped what this start had launched (spark, launcher, mlflow)" in msg
    assert marked_processes(STACK_MARKER, str(s.state)) == []
    assert not any(StackLayout(s.state).pid_file(n).exists() for n in COMPONENTS)


def test_start_times_out_naming_the_unhealthy_component(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = settings_on_free_ports(tmp_path / "p")
    _fake_stack(monkeypatch, tmp_path, {})
    monkeypatch.setattr(airflowstack, "migration_needed", lambda layout: False)
    monkeypatch.setattr(wait, "_POLL", 0.1)
    with pytest.raises(StackError) as exc:
        start.start_stack(s, timeout=1.5)
    assert "was not healthy after" in exc.value.message and exc.value.message.startswith("api-server")
    assert "MLOPSCTL_START_TIMEOUT" in exc.value.hint
    assert marked_processes(STACK_MARKER, str(s.state)) == []


# ------------------------------------------------------------------------------------------ Spark probes


class FakeServer:
    """A TCP listener on 127.0.0.1 in a thread: `grpc` answers the HTTP/2 preface with a SETTINGS frame like a
    gRPC server; otherwise it accepts and stays silent (a hung process)."""

    def __init__(self, grpc: bool):
        import threading

        self.grpc = grpc
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            if self.grpc:
                conn.recv(64)
                conn.sendall(bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))

    def close(self) -> None:
        for conn in self.conns:
            conn.close()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        except OSError:
            pass
        self.sock.close()


@pytest.fixture
def servers():
    made: list[FakeServer] = []
    yield lambda grpc: made.append(FakeServer(grpc)) or made[-1]
    for server in made:
        server.close()


def test_grpc_probe_needs_a_real_http2_answer(servers) -> None:
    assert hc.grpc_serving("127.0.0.1", servers(True).port)
    silent = servers(False)
    assert not hc.grpc_serving("127.0.0.1", silent.port, timeout=0.5)  # accepts, never answers
    assert hc.tcp_accepts("127.0.0.1", silent.port)
    assert not hc.grpc_serving("127.0.0.1", free_port()) and not hc.tcp_accepts("127.0.0.1", free_port())


def test_execution_api_probe_wants_its_health_route_answered() -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    status = {"code": 503}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status["code"] if self.path == "/execution/health" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert not hc.execution_api_ready(url)  # the server answers, its execution API does not (yet)
        status["code"] = 200
        assert hc.execution_api_ready(url)
    finally:
        server.shutdown()
        server.server_close()
    assert not hc.execution_api_ready(url)  # nothing listens


def test_a_slow_probe_runs_beside_the_poll_loop_and_again_after_a_failure() -> None:
    import threading

    release = threading.Event()
    answers = iter([False, True])
    calls: list[int] = []

    entered = threading.Event()

    def probe() -> bool:
        calls.append(1)
        entered.set()
        release.wait(60)
        return next(answers)

    check = hc.BackgroundProbe(probe)
    assert not check.passed()  # started, not waited for
    entered.wait(60)
    assert not check.passed() and len(calls) == 1  # still running: not started twice
    release.set()
    check._thread.join()  # type: ignore[union-attr]
    release.clear()
    assert not check.passed()  # it failed: this look starts it again
    release.set()
    check._thread.join()  # type: ignore[union-attr]
    assert check.passed() and check.passed()
    assert len(calls) == 2  # once passed, never run again


def test_spark_server_down_says_why(tmp_path: Path, procs: list, servers) -> None:
    server = servers(True)
    s = settings_for(tmp_path, spark_connect_port=server.port)
    layout = StackLayout.from_settings(s)
    layout.ensure()
    reason = spark_server_down(s)
    assert reason and "not running" in reason and "mlopsctl dev start" in reason
    assert str(layout.log_file("spark")) in reason

    # a live process recorded as the server, answering on its recorded port: up
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    procs.append(psutil.Process(proc.pid))
    argv = component_specs(s, layout)["spark"].argv
    write_pid_file(
        layout.pid_file("spark"),
        PidRecord("spark", proc.pid, psutil.Process(proc.pid).create_time(), argv, time.time()),
    )
    assert spark_server_down(s) is None
    # alive but not answering gRPC (hung, or still starting)
    server.close()
    reason = spark_server_down(s)
    assert reason and f"pid {proc.pid}" in reason and f"127.0.0.1:{server.port}" in reason
    # dead
    proc.kill()
    proc.wait()
    assert "not running" in (spark_server_down(s) or "")


def test_spark_server_down_probes_an_external_server(tmp_path: Path, servers) -> None:
    server = servers(True)
    s = settings_for(tmp_path, spark_remote=f"sc://127.0.0.1:{server.port}", spark_connect_port=free_port())
    assert not s.spark_remote_is_local
    assert spark_server_down(s) is None  # no local server needed when the tasks use another one
    server.close()
    reason = spark_server_down(s)
    assert reason and f"sc://127.0.0.1:{server.port}" in reason and "MLOPSCTL_SPARK_REMOTE" in reason


# ------------------------------------------------------------------------------------------ DAG parse report


def test_expected_dag_files_and_parse_report(tmp_path: Path) -> None:
    (tmp_path / "common").mkdir()
    (tmp_path / "common" / "params.py").write_text("from airflow.sdk import Param  # dag helpers\n")
    (tmp_path / "a.py").write_text("from airflow.sdk import dag\n")
    (tmp_path / "b.py").write_text("from airflow.sdk import dag\n")
    (tmp_path / "c.py").write_text("from airflow.sdk import dag\n")
    (tmp_path / "notes.py").write_text("x = 1\n")  # not a DAG file (Airflow's safe mode skips it)
    (tmp_path / "__init__.py").write_text("")
    files = hc.expected_dag_files(tmp_path)
    assert [f.name for f in files] == ["a.py", "b.py", "c.py"]
    dags = [
        {"dag_id": "a1", "fileloc": str(tmp_path / "a.py")},
        {"dag_id": "old", "fileloc": str(tmp_path / "c.py"), "is_stale": True},
    ]
    errors = [
        {"filename": "b.py", "stack_trace": "Traceback ...\nModuleNotFoundError: No module named 'nope'\n"}
    ]
    report = hc.parse_report(files, dags, errors)
    assert report.dags_by_file == {"a.py": ["a1"]}
    assert hc.last_line(report.import_errors["b.py"]) == "ModuleNotFoundError: No module named 'nope'"
    assert report.pending == ["c.py"] and not report.complete


def test_tail_reads_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(1000)))
    assert tail(log, 3).splitlines() == ["line 997", "line 998", "line 999"]
    assert tail(tmp_path / "missing.log") == ""
    assert tail(log, 2, end=len("line 0\nline 1\n")).splitlines() == ["line 0", "line 1"]


# ------------------------------------------------------------------------------------------ CLI, stack stopped


def test_status_of_a_stopped_stack(project: Path, cli) -> None:
    code, out, err = cli("dev", "status", "--json")
    assert code == ExitCode.STACK
    data = json.loads(out)
    assert data["running"] is False
    assert [c["health"] for c in data["components"]] == ["stopped"] * len(COMPONENTS)
    code, out, err = cli("dev", "status")
    assert code == ExitCode.STACK and "mlopsctl dev start" in err


def test_stop_when_not_running(project: Path, cli) -> None:
    code, _out, err = cli("dev", "stop")
    assert code == 0 and "not running" in err


def test_logs(project: Path, cli) -> None:
    code, _, err = cli("dev", "logs", "nosuch")
    assert code == ExitCode.USAGE and "api-server" in err and "spark" in err
    code, _, err = cli("dev", "logs", "scheduler")
    assert code == ExitCode.USAGE and "No log for scheduler" in err
    logs = project / ".mlopsctl" / "logs"
    logs.mkdir(parents=True)
    (logs / "scheduler.log").write_text("one\ntwo\nthree\n")
    (logs / "mlflow.log").write_text("m1\n")
    (logs / "spark.log").write_text("s1\nSpark Connect server started at: 127.0.0.1:15002\n")
    code, out, _ = cli("dev", "logs", "scheduler", "-n", "2")
    assert code == 0 and out.splitlines() == ["two", "three"]
    code, out, _ = cli("dev", "logs", "spark", "-n", "1")
    assert code == 0 and out.splitlines() == ["Spark Connect server started at: 127.0.0.1:15002"]
    # a background helper of the start: by name only, not among the components' logs
    (logs / "spark-warmup.log").write_text("spark warm-up: session 0.50s\n")
    code, out, _ = cli("dev", "logs", "spark-warmup")
    assert code == 0 and out.splitlines() == ["spark warm-up: session 0.50s"]
    code, out, _ = cli("dev", "logs", "-n", "1")
    assert code == 0 and out.splitlines() == [
        "scheduler | three",
        "mlflow | m1",
        "spark | Spark Connect server started at: 127.0.0.1:15002",
    ]


def test_dev_help_has_examples(cli) -> None:
    for sub in ("start", "stop", "status", "logs"):
        code, out, _ = cli("dev", sub, "--help")
        assert code == 0 and "Example" in out, sub


def test_start_cli_reports_import_errors_and_login(
    project: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fake_start(settings, on_progress=None, timeout=None):
        on_progress("api-server", "healthy", "")
        return StartResult(
            already_running=False,
            started=list(COMPONENTS),
            seconds=12.3,
            migrated=True,
            urls={"airflow_url": settings.local_airflow_url, "mlflow_url": settings.local_mlflow_url},
            username="admin",
            passwords_file=settings.state / "airflow" / "passwords.json",
            dags_folder=project / "dags",
            dags={"good.py": ["good"]},
            import_errors={
                "bad.py": "Traceback (most recent call last):\n  ...\nNameError: name 'oops' is not defined\n"
            },
        )

    monkeypatch.setattr(start, "start_stack", fake_start)
    code, out, err = cli("dev", "start", "--airflow-port", "18111")
    assert code == 0
    assert "api-server: healthy" in err
    assert "bad.py failed to import: NameError: name 'oops' is not defined" in err
    assert "http://127.0.0.1:18111" in out and "admin" in out and "passwords.json" in out
    code, out, err = cli("dev", "start", "--json")
    data = json.loads(out)
    assert data["import_errors"] == {"bad.py": "NameError: name 'oops' is not defined"}
    assert data["dags"] == {"good.py": ["good"]}


def test_start_refuses_other_ports_while_running(tmp_path: Path, procs: list) -> None:
    s = settings_on_free_ports(tmp_path)
    layout = StackLayout.from_settings(s)
    layout.ensure()
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    procs.append(psutil.Process(proc.pid))
    write_pid_file(
        layout.pid_file("api-server"),
        PidRecord(
            "api-server",
            proc.pid,
            psutil.Process(proc.pid).create_time(),
            ["airflow", "api-server", "--port", "18999"],
            time.time(),
        ),
    )
    with pytest.raises(StackError) as exc:
        start.start_stack(s)
    assert "already running with api-server on port 18999" in exc.value.message
    assert "MLOPSCTL_AIRFLOW_PORT=18999" in exc.value.hint
    assert status.stack_status(s, probe=False).urls["airflow_url"] == "http://127.0.0.1:18999"


def test_logs_follow_prints_new_lines(project: Path) -> None:
    import queue
    import threading

    logs = project / ".mlopsctl" / "logs"
    logs.mkdir(parents=True)
    log = logs / "triggerer.log"
    log.write_text("old line\n")
    env = dict(os.environ, MLOPSCTL_PROJECT_DIR=str(project))
    proc = popen_with_default_sigint(
        [sys.executable, "-m", "mlopsctl", "dev", "logs", "triggerer", "-f", "-n", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        assert lines.get(timeout=120) == "old line\n"
        with open(log, "a") as fh:
            fh.write("new line\n")
        assert lines.get(timeout=120) == "new line\n"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    assert proc.returncode == 0


def test_follow_lines_yields_complete_appended_lines_and_rereads_a_replaced_file(tmp_path: Path) -> None:
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    a.write_text("old\n")
    positions = file_sizes({"a": a, "b": b})
    assert positions == {"a": 4, "b": 0}
    lines = follow_lines({"a": a, "b": b}, positions, poll=0)
    with a.open("a") as fh:
        fh.write("one\ntwo\npart")
    assert [next(lines), next(lines)] == [("a", "one"), ("a", "two")]  # "part" waits for its newline
    b.write_text("bee\n")  # a file that did not exist when following began
    assert next(lines) == ("b", "bee")
    with a.open("a") as fh:
        fh.write("ial\n")
    assert next(lines) == ("a", "partial")
    a.write_text("new\n")  # replaced by a shorter file (log rotation): read from its start
    assert next(lines) == ("a", "new")


def test_the_serving_spark_server_never_writes_the_class_archive_its_writer_does_on_another_port(
    tmp_path: Path,
) -> None:
    s = settings_for(tmp_path, spark_connect_port=18003)
    layout = StackLayout.from_settings(s)
    archive = spark_class_archive(s, layout)
    assert archive is not None
    server = component_specs(s, layout)["spark"]
    assert "ArchiveClassesAtExit" not in " ".join(server.argv) and "SharedArchiveFile" not in " ".join(server.argv)

    writer = archive_writer_spec(s, layout, archive)
    assert writer.argv[:3] == [sys.executable, "-m", "mlopsctl.devenv.classarchive"]
    port = int(writer.argv[writer.argv.index("--port") + 1])
    server_argv = writer.argv[writer.argv.index("--") + 1 :]
    assert port != 18003 and _conf(server_argv)[CONNECT_PORT_CONF] == str(port)
    # the same server otherwise, and one of this stack's processes (`dev stop` sweeps by the marker)
    assert {k: v for k, v in _conf(server_argv).items() if k not in (CONNECT_PORT_CONF, JAVA_OPTIONS)} == {
        k: v for k, v in _conf(server.argv).items() if k not in (CONNECT_PORT_CONF, JAVA_OPTIONS)
    }
    assert writer.env[STACK_MARKER] == str(layout.state) and writer.env == server.env

def test_the_run_preflight_asks_devenv_one_question(tmp_path: Path, procs: list) -> None:
    """`runs_spark_down`: nothing to check unless runs go to this project's embedded stack (its api-server
    recorded, serving the Airflow URL, with local compute); then whether its Spark server can take jobs."""
    from mlopsctl.devenv.preflight import runs_spark_down

    s = settings_on_free_ports(tmp_path)
    layout = StackLayout.from_settings(s)
    layout.ensure()
    assert runs_spark_down(s) is None  # no embedded stack recorded
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    procs.append(psutil.Process(proc.pid))
    record = PidRecord("api-server", proc.pid, psutil.Process(proc.pid).create_time(), [], time.time())
    write_pid_file(layout.pid_file("api-server"), record)
    reason = runs_spark_down(s)
    assert reason and "not running" in reason and "mlopsctl dev start" in reason
    assert runs_spark_down(settings_for(tmp_path, airflow_url="https://airflow.example.com")) is None
    databricks = settings_for(tmp_path, compute="databricks", airflow_port=s.airflow_port,
                              spark_connect_port=s.spark_connect_port)
    assert runs_spark_down(databricks) is None


def test_the_local_password_is_found_through_the_stack_layout(tmp_path: Path) -> None:
    s = settings_for(tmp_path)
    with pytest.raises(ConfigError, match="does not exist") as exc:
        s.local_airflow_password()
    assert "mlopsctl dev start" in (exc.value.hint or "")
    password = ensure_admin_password(StackLayout.from_settings(s))
    assert s.local_airflow_password() == password
    with pytest.raises(ConfigError, match="no entry for user 'ops'"):
        settings_for(tmp_path, airflow_username="ops").local_airflow_password()
