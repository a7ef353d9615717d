"""Out-of-memory failures of a job, translated (`mlopsctl_jobs.memory`): Spark's out-of-memory text over
Connect, or a server that died of it (its log says so), or the job's own `MemoryError`, ends the job with one
``mlopsctl-error:`` line naming the setting and the data's size, and exit 3; any other failure is left as it
is. No Spark here: the exceptions are pyspark's own classes, built as the Connect client builds them. The real
failure, on a Spark server with a small heap: tests/spark/test_memory_limit.py."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "spark_jobs"))
try:
    from mlopsctl_jobs import cli, memory, session
finally:
    sys.path.remove(str(REPO / "spark_jobs"))


def _spark_error(message: str):
    from pyspark.errors.exceptions.connect import SparkException

    return SparkException(message=message)


def _unavailable():
    import grpc
    from pyspark.errors.exceptions.connect import SparkConnectGrpcException

    return SparkConnectGrpcException(message="failed to connect to all addresses; Connection refused",
                                     grpc_status_code=grpc.StatusCode.UNAVAILABLE)


@pytest.fixture
def csv(tmp_path: Path) -> Path:
    path = tmp_path / "big.csv"
    path.write_bytes(b"a,b\n" + b"1,2\n" * 500_000)  # 2.0 MB
    return path


def test_spark_out_of_memory_names_the_setting_and_the_data_size(csv: Path) -> None:
    exc = _spark_error("Job aborted due to stage failure: Task 0 in stage 3.0 failed 1 times, most recent failure: "
                       "Lost task 0.0 in stage 3.0 (TID 7): java.lang.OutOfMemoryError: Java heap space\n"
                       "\tat java.base/java.util.Arrays.copyOf(Arrays.java:3537)")
    failure = memory.out_of_memory(exc, str(csv))
    assert failure is not None
    text = str(failure)
    assert "MLOPSCTL_SPARK_DRIVER_MEMORY" in text
    assert f"{csv} (2.0 MB)" in text
    assert "java.lang.OutOfMemoryError: Java heap space" in text
    assert "Arrays.copyOf" not in text and "\n" not in text


def test_the_current_heap_is_named_when_the_setting_is_set(csv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPSCTL_SPARK_DRIVER_MEMORY", "1g")
    failure = memory.out_of_memory(_spark_error("SparkOutOfMemoryError: [UNABLE_TO_ACQUIRE_MEMORY]"), str(csv))
    assert failure is not None and "now 1g" in str(failure)


def test_a_task_result_lost_for_want_of_heap_is_out_of_memory(csv: Path) -> None:
    # what toPandas of 3M rows through a 768m server told the client (the OOM itself stayed in the server log)
    exc = _spark_error("Job aborted due to stage failure: Task 0 in stage 10.0 failed 1 times, most recent "
                       "failure: Lost task 0.0 in stage 10.0 (TID 14) (localhost executor driver): TaskResultLost "
                       "(result lost from block manager)\nDriver stacktrace:")
    failure = memory.out_of_memory(exc, str(csv))
    assert failure is not None and "TaskResultLost (result lost from block manager)" in str(failure)


def test_other_spark_errors_and_other_exceptions_are_left_alone(csv: Path) -> None:
    assert memory.out_of_memory(_spark_error("[DIVIDE_BY_ZERO] Division by zero"), str(csv)) is None
    assert memory.out_of_memory(ValueError("java.lang.OutOfMemoryError in a user's string"), str(csv)) is None


def test_a_python_memory_error_names_the_job_process(csv: Path) -> None:
    failure = memory.out_of_memory(MemoryError(), str(csv))
    assert failure is not None
    assert "Python process" in str(failure) and "(2.0 MB)" in str(failure)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(("log", "translated"), [
    ("Running Spark version 4.0\n...\njava.lang.OutOfMemoryError: Java heap space\n", True),
    # an earlier server died of it; the one since then was stopped for another reason
    ("Running Spark version 4.0\njava.lang.OutOfMemoryError: Java heap space\nRunning Spark version 4.0\n", False),
])
def test_a_server_that_died_is_judged_by_its_log_since_its_last_start(
    tmp_path: Path, csv: Path, monkeypatch: pytest.MonkeyPatch, log: str, translated: bool
) -> None:
    server_log = tmp_path / "spark.log"
    server_log.write_text(log)
    monkeypatch.setenv("SPARK_REMOTE", f"sc://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("MLOPSCTL_SPARK_SERVER_LOG", str(server_log))
    failure = memory.out_of_memory(_unavailable(), str(csv))
    assert (failure is not None) is translated
    if translated:
        assert "MLOPSCTL_SPARK_DRIVER_MEMORY" in str(failure)


class _Client:
    """What `session.stop_retrying_a_dead_server` uses of a Connect session's client."""

    def __init__(self) -> None:
        from pyspark.sql.connect.client.retries import DefaultPolicy

        self.policies = [DefaultPolicy()]

    def get_retry_policies(self):
        return list(self.policies)

    def set_retry_policies(self, policies) -> None:
        self.policies = list(policies)


def _unavailable_rpc():
    import grpc

    class Unavailable(grpc.RpcError):
        def code(self):
            return grpc.StatusCode.UNAVAILABLE

    return Unavailable()


def test_a_local_server_that_refuses_connections_is_not_retried_for_ten_minutes() -> None:
    spark = type("Spark", (), {"client": _Client()})()
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        session.stop_retrying_a_dead_server(spark, f"sc://127.0.0.1:{port}")
        (policy,) = spark.client.policies
        assert policy.can_retry(_unavailable_rpc())  # a server that listens: pyspark's retries, as they are
    assert not policy.can_retry(_unavailable_rpc())  # gone: the job fails now, with the cause
    assert not policy.can_retry(ValueError("not a gRPC error"))


def test_run_main_ends_an_out_of_memory_failure_with_one_line_and_exit_3(csv: Path, capsys) -> None:
    def body() -> None:
        raise _spark_error("java.lang.OutOfMemoryError: Java heap space")

    with pytest.raises(SystemExit) as exit_:
        cli.run_main(body, str(csv))
    assert exit_.value.code == cli.EXIT_NO_RETRY
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mlopsctl-error: the Spark server ran out of memory")


def test_run_main_leaves_other_failures_to_airflow_s_retry(csv: Path) -> None:
    def body() -> None:
        raise _spark_error("[INTERNAL_ERROR] something else")

    with pytest.raises(Exception, match="INTERNAL_ERROR"):
        cli.run_main(body, str(csv))
