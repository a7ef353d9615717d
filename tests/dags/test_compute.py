"""dags/common/compute.py: backend choice, the spark-submit argv, and LocalJobOperator's behaviour
(exact argv passthrough, streamed output, fail-fast on bad data, retryable failures)."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dags.conftest import DAGS_DIR
from tests.fixtures.launcher import running_launcher

if str(DAGS_DIR) not in sys.path:
    sys.path.append(str(DAGS_DIR))

from common import compute


@pytest.fixture(scope="module")
def launcher_socket() -> Iterator[Path]:
    with running_launcher("json") as path:
        yield path


@pytest.fixture(params=["fresh-python", "launcher"])
def jobs_dir(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The job folder; every operator test runs its jobs both as fresh processes and through a real launcher."""
    if request.param == "launcher":
        monkeypatch.setenv("MLOPSCTL_JOB_LAUNCHER", str(request.getfixturevalue("launcher_socket")))
    else:
        monkeypatch.delenv("MLOPSCTL_JOB_LAUNCHER", raising=False)
    d = tmp_path / "jobs"
    d.mkdir()
    (d / "echo_args.py").write_text(
        "import json, os, sys\n"
        "open(os.environ['ARGV_OUT'], 'w').write(json.dumps(sys.argv[1:]))\n"
        "print('hello from the job')\n"
    )
    (d / "bad_data.py").write_text(
        "import sys\nprint('reading...')\nprint('mlopsctl-error: target column \\'y\\' not found; columns are: a', "
        "file=sys.stderr)\nsys.exit(3)\n"
    )
    (d / "crash.py").write_text("import sys\nprint('step 1')\nraise RuntimeError('executor lost')\n")
    monkeypatch.setenv("MLOPSCTL_SPARK_JOBS_DIR", str(d))
    monkeypatch.delenv("MLOPSCTL_COMPUTE", raising=False)
    return d


def test_backend_defaults(monkeypatch) -> None:
    monkeypatch.delenv("MLOPSCTL_COMPUTE", raising=False)
    monkeypatch.delenv("MLOPSCTL_SPARK_MASTER", raising=False)
    assert compute.compute_backend() == "local"
    assert compute.spark_master() == "local[*]"
    monkeypatch.setenv("MLOPSCTL_SPARK_MASTER", "local[2]")
    assert compute.spark_master() == "local[2]"
    monkeypatch.setenv("MLOPSCTL_COMPUTE", "spark://10.0.0.5:7077")
    assert compute.spark_master() == "spark://10.0.0.5:7077"


def test_work_dir_default_follows_the_state_layout(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MLOPSCTL_WORK_DIR", raising=False)
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / ".mlopsctl" / "airflow"))
    assert compute.work_dir() == str(tmp_path / ".mlopsctl" / "work")
    monkeypatch.setenv("MLOPSCTL_WORK_DIR", "/elsewhere")
    assert compute.work_dir() == "/elsewhere"


def test_jobs_dir_default_is_beside_the_dags_folder(monkeypatch) -> None:
    monkeypatch.delenv("MLOPSCTL_SPARK_JOBS_DIR", raising=False)
    assert compute.spark_jobs_dir() == DAGS_DIR.parent / "spark_jobs"


def test_spark_submit_argv(jobs_dir: Path) -> None:
    argv = compute.job_argv("echo_args.py", ["--data", "a b; $(x)"], spark=True, master="local[2]", jobs_dir=jobs_dir)
    assert argv[0].endswith("/bin/spark-submit") and Path(argv[0]).is_file()
    assert argv[1:3] == ["--master", "local[2]"]
    joined = " ".join(argv)
    for conf in ("spark.ui.enabled=false", "spark.driver.host=127.0.0.1", "spark.driver.bindAddress=127.0.0.1"):
        assert conf in argv, conf
    assert "--py-files" not in argv  # the job's session ships mlopsctl_jobs to the executors itself
    assert argv[-3:] == [str(jobs_dir / "echo_args.py"), "--data", "a b; $(x)"]
    assert "sh -c" not in joined


def test_spark_submit_without_a_spark_distribution_fails_clearly(jobs_dir: Path, monkeypatch) -> None:
    monkeypatch.setattr(compute, "spark_home", lambda: None)  # pyspark-client alone, or no pyspark
    with pytest.raises(RuntimeError, match="spark-submit needs a Spark distribution"):
        compute.job_argv("echo_args.py", [], spark=True, master="local[2]", jobs_dir=jobs_dir)
    assert "SPARK_HOME" not in compute.job_env("local[2]", "sc://127.0.0.1:15002")  # a Connect client needs none


def test_remote_master_is_not_bound_to_loopback(jobs_dir: Path) -> None:
    argv = compute.job_argv("echo_args.py", [], spark=True, master="spark://10.1.2.3:7077", jobs_dir=jobs_dir)
    assert "spark.driver.host=127.0.0.1" not in argv


def test_python_argv(jobs_dir: Path) -> None:
    assert compute.job_argv("echo_args.py", ["--x", "1"], spark=False, jobs_dir=jobs_dir) == [
        sys.executable, str(jobs_dir / "echo_args.py"), "--x", "1"]


def test_operator_passes_arguments_verbatim(jobs_dir: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "argv.json"
    monkeypatch.setenv("ARGV_OUT", str(out))
    weird = ["--data", "/d d/it's \"q\"; $(touch pwned) `id` | x > y", "--target", "", "--n", "80"]
    op = compute.LocalJobOperator(task_id="t", job="echo_args.py", arguments=weird, spark=False)
    result = op.execute({})
    assert result["returncode"] == 0
    assert json.loads(out.read_text()) == weird
    assert not Path("pwned").exists() and not (tmp_path / "pwned").exists()


def test_the_launcher_runs_the_job_and_a_dead_one_falls_back_to_a_fresh_python(
    jobs_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    from mlopsctl.devenv.launcher import ping

    (jobs_dir / "parent.py").write_text("import os, sys\nopen(sys.argv[1], 'w').write(str(os.getppid()))\n")
    out = tmp_path / "ppid"
    launcher = os.environ.get("MLOPSCTL_JOB_LAUNCHER")
    op = compute.LocalJobOperator(task_id="t", job="parent.py", arguments=[str(out)], spark=False)
    assert op.execute({})["returncode"] == 0
    if launcher:
        assert int(out.read_text()) == ping(launcher)["pid"]  # forked by the launcher
    else:
        assert int(out.read_text()) == os.getpid()  # a child of the task itself
    monkeypatch.setenv("MLOPSCTL_JOB_LAUNCHER", str(tmp_path / "gone.sock"))
    capsys.readouterr()
    assert op.execute({})["returncode"] == 0
    assert int(out.read_text()) == os.getpid()
    logged = capsys.readouterr().out  # Airflow's task logger writes to stdout outside a task runner
    assert "gone.sock did not start the job" in logged and "starting a fresh Python" in logged


def test_killing_the_task_ends_its_job(jobs_dir: Path, tmp_path: Path) -> None:
    """Airflow calls `on_kill` when it stops a running task (a timeout, a mark-failed): the job ends with it."""
    import threading

    from airflow.sdk.exceptions import AirflowException

    pid_file = tmp_path / "job.pid"
    (jobs_dir / "slow.py").write_text(
        "import os, sys, time\nopen(sys.argv[1], 'w').write(str(os.getpid()))\ntime.sleep(120)\n"
    )
    op = compute.LocalJobOperator(task_id="t", job="slow.py", arguments=[str(pid_file)], spark=False)
    failure: list[BaseException] = []

    def execute() -> None:
        try:
            op.execute({})
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion below
            failure.append(exc)

    task = threading.Thread(target=execute)
    task.start()
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    op.on_kill()
    task.join(timeout=30)
    assert not task.is_alive()
    assert len(failure) == 1 and isinstance(failure[0], AirflowException)
    assert f"exit {-signal.SIGTERM}" in str(failure[0])
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)


def test_bad_data_fails_fast_without_retry(jobs_dir: Path) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    op = compute.LocalJobOperator(task_id="t", job="bad_data.py", arguments=[], spark=False)
    with pytest.raises(AirflowFailException) as err:
        op.execute({})
    assert str(err.value) == "bad_data.py failed (exit 3): target column 'y' not found; columns are: a"


def test_crash_is_retryable_and_shows_the_error(jobs_dir: Path) -> None:
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    op = compute.LocalJobOperator(task_id="t", job="crash.py", arguments=[], spark=False)
    with pytest.raises(AirflowException) as err:
        op.execute({})
    assert not isinstance(err.value, AirflowFailException)
    assert "exit 1" in str(err.value) and "RuntimeError: executor lost" in str(err.value)


def test_missing_job_file_fails_clearly(jobs_dir: Path) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    op = compute.LocalJobOperator(task_id="t", job="nope.py", arguments=[], spark=False)
    with pytest.raises(AirflowFailException, match="nope.py not found"):
        op.execute({})


def test_databricks_at_run_time_on_a_local_dag_fails_clearly(jobs_dir: Path, monkeypatch) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    monkeypatch.setenv("MLOPSCTL_COMPUTE", "databricks")
    op = compute.LocalJobOperator(task_id="t", job="echo_args.py", arguments=[], spark=False)
    with pytest.raises(AirflowFailException, match="parsed for local Spark"):
        op.execute({})


def test_job_task_dispatches_to_the_databricks_seam(monkeypatch) -> None:
    calls = []
    fake = types.ModuleType("common.databricks_backend")

    def make_databricks_task(task_id: str, script: str, arguments: list[str]):
        calls.append((task_id, script, arguments))
        return "databricks-operator"

    fake.make_databricks_task = make_databricks_task
    monkeypatch.setitem(sys.modules, "common.databricks_backend", fake)
    monkeypatch.setenv("MLOPSCTL_COMPUTE", "databricks")
    assert compute.job_task("train_model", "train_model.py", ["--a", "{{ run_id }}"]) == "databricks-operator"
    assert calls == [("train_model", "train_model.py", ["--a", "{{ run_id }}"])]
    monkeypatch.setenv("MLOPSCTL_COMPUTE", "local")
    op = compute.job_task("train_model", "train_model.py", ["--a"])
    assert isinstance(op, compute.LocalJobOperator)


def test_failure_summary_prefers_the_jobs_own_error() -> None:
    lines = ["26/11/24 INFO SparkContext: x", "mlopsctl-error: boom", "mlopsctl-error: boom", "tail"]
    assert compute.failure_summary(lines) == "boom"
    assert compute.failure_summary(["26/11/24 03:00 WARN Utils: y", "Traceback", "ValueError: z"]) == "Traceback\nValueError: z"


def test_connect_client_argv_and_env(jobs_dir: Path, monkeypatch) -> None:
    remote = "sc://127.0.0.1:15999"
    argv = compute.job_argv("echo_args.py", ["--x", "1"], spark=True, master="local[2]", remote=remote, jobs_dir=jobs_dir)
    assert argv == [sys.executable, str(jobs_dir / "echo_args.py"), "--x", "1"]  # no spark-submit, no JVM of its own
    assert compute.job_env("local[2]", remote)["SPARK_REMOTE"] == remote
    monkeypatch.setenv("SPARK_REMOTE", "sc://somewhere-else:1")
    monkeypatch.setenv("SPARK_CONNECT_MODE_ENABLED", "1")  # set by pyspark in a process that made a Connect session
    classic = compute.job_env("local[2]")
    assert "SPARK_REMOTE" not in classic and "SPARK_CONNECT_MODE_ENABLED" not in classic  # spark-submit: classic


def test_spark_remote_applies_to_the_local_backend_only(monkeypatch) -> None:
    monkeypatch.setenv("MLOPSCTL_SPARK_REMOTE", "sc://127.0.0.1:15002")
    monkeypatch.setenv("MLOPSCTL_COMPUTE", "local")
    assert compute.spark_remote() == "sc://127.0.0.1:15002"
    monkeypatch.setenv("MLOPSCTL_COMPUTE", "yarn")
    assert compute.spark_remote() is None
    monkeypatch.setenv("MLOPSCTL_COMPUTE", "local")
    monkeypatch.setenv("MLOPSCTL_SPARK_REMOTE", " ")
    assert compute.spark_remote() is None


def test_connect_server_down_fails_before_the_job_and_is_retryable(jobs_dir: Path, tmp_path: Path, monkeypatch) -> None:
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    from tests.fixtures.stack import free_port

    port = free_port()
    monkeypatch.setenv("MLOPSCTL_SPARK_REMOTE", f"sc://127.0.0.1:{port}")
    monkeypatch.setenv("ARGV_OUT", str(tmp_path / "argv.json"))
    op = compute.LocalJobOperator(task_id="t", job="echo_args.py", arguments=[], spark=True)
    with pytest.raises(AirflowException) as err:
        op.execute({})
    assert not isinstance(err.value, AirflowFailException)  # Airflow retries once the server is back
    # a hosted Airflow: nobody named the server's log or how to bring it back
    assert str(err.value) == (
        f"echo_args.py not started: the Spark Connect server 127.0.0.1:{port} is not reachable (Connection refused); "
        "once it serves again (MLOPSCTL_SPARK_REMOTE names it), Airflow's retry runs this task again")
    assert not (tmp_path / "argv.json").exists()  # the job never started
    # the stack that runs the server names both
    monkeypatch.setenv("MLOPSCTL_SPARK_SERVER_LOG", str(tmp_path / "state" / "logs" / "spark.log"))
    monkeypatch.setenv("MLOPSCTL_SPARK_SERVER_RESTART", "mlopsctl dev start")
    with pytest.raises(AirflowException) as err:
        op.execute({})
    assert str(err.value) == (
        f"echo_args.py not started: the Spark Connect server 127.0.0.1:{port} is not reachable (Connection refused). "
        f"Its log is {tmp_path / 'state' / 'logs' / 'spark.log'}; `mlopsctl dev start` brings it back, and Airflow's "
        "retry then runs this task again")
    assert not (tmp_path / "argv.json").exists()


@pytest.mark.parametrize(
    ("backend", "tag"),
    [(None, "compute:local"), ("local", "compute:local"), ("databricks", "compute:databricks"),
     (" databricks ", "compute:databricks"), ("spark://10.0.0.5:7077", "compute:spark"), ("yarn", "compute:spark")],
)
def test_compute_tag_publishes_the_backend_kind(monkeypatch, backend, tag) -> None:
    if backend is None:
        monkeypatch.delenv("MLOPSCTL_COMPUTE", raising=False)
    else:
        monkeypatch.setenv("MLOPSCTL_COMPUTE", backend)
    assert compute.compute_tag() == tag
    from mlopsctl.datasources import compute_of  # the CLI reads it back

    assert compute_of([{"name": "mlopsctl"}, {"name": tag}]) == tag.removeprefix("compute:")
