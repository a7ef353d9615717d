"""AirflowClient against the real local Airflow 3 (session fixture `local_stack`), using the tiny test DAG
tests/fixtures/dags/mlopsctl_test_tiny.py (Param `n`: integer 1..100; task `say` prints and returns)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from mlopsctl.airflow.client import AirflowClient
from mlopsctl.airflow.models import DagRun
from mlopsctl.errors import ConflictError, NotFoundError, RejectedError

DAG_ID = "mlopsctl_test_tiny"
WAIT_DAG = 240.0  # generous deadlines: the machine is shared; these bound waits, they assert no timing
WAIT_RUN = 300.0


@pytest.fixture(scope="module")
def client(local_stack: Any) -> Iterator[AirflowClient]:
    c = local_stack.client()
    yield c
    c.close()


@pytest.fixture(scope="module")
def tiny_dag(client: AirflowClient) -> str:
    """The tiny DAG, parsed and unpaused."""
    deadline = time.monotonic() + WAIT_DAG
    while True:
        try:
            client.get_dag(DAG_ID)
            break
        except NotFoundError:
            if time.monotonic() > deadline:
                errors = [e.filename for e in client.import_errors()]
                pytest.fail(f"{DAG_ID} was not parsed within {WAIT_DAG:g} s; import errors in: {errors}")
            time.sleep(1.0)
    assert client.set_paused(DAG_ID, False).is_paused is False
    return DAG_ID


def run_id(tag: str) -> str:
    return f"live_{tag}_{uuid.uuid4().hex[:8]}"


def wait_finished(client: AirflowClient, dag_id: str, dag_run_id: str) -> DagRun:
    deadline = time.monotonic() + WAIT_RUN
    while True:
        run = client.get_run(dag_id, dag_run_id)
        if run.finished:
            return run
        if time.monotonic() > deadline:
            pytest.fail(f"run {dag_run_id} still {run.state} after {WAIT_RUN:g} s")
        time.sleep(1.0)


def test_health_and_version(client: AirflowClient) -> None:
    health = client.health()
    assert health.metadatabase.status == "healthy"
    assert "scheduler" not in health.unhealthy(("metadatabase", "scheduler", "dag_processor"))
    assert client.version()["version"].startswith("3.")


def test_dag_is_listed_with_params_and_no_import_error(client: AirflowClient, tiny_dag: str) -> None:
    listed = client.list_dags(tags=["mlopsctl"])
    assert tiny_dag in [d.dag_id for d in listed]
    details = client.get_dag_details(tiny_dag)
    assert details.params["n"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 100}
    assert details.params["n"]["value"] == 3
    assert not [e for e in client.import_errors() if (e.filename or "").endswith("mlopsctl_test_tiny.py")]


def test_trigger_with_conf_runs_to_success_and_log_shows_the_printed_line(
    client: AirflowClient, tiny_dag: str
) -> None:
    rid = run_id("ok")
    run = client.trigger(tiny_dag, {"n": 7, "greeting": "bonjour"}, dag_run_id=rid, note="live test")
    assert run.dag_run_id == rid and run.state in ("queued", "running")
    assert run.logical_date is None and run.conf == {"n": 7, "greeting": "bonjour"}

    final = wait_finished(client, tiny_dag, rid)
    assert final.state == "success"

    tis = client.task_instances(tiny_dag, rid)
    assert [(t.task_id, t.state) for t in tis] == [("say", "success")]
    chunk = client.task_log(tiny_dag, rid, "say", tis[0].try_number)
    assert isinstance(chunk.content, list)
    stdout = [e for e in chunk.content if isinstance(e, dict) and e.get("logger") == "task.stdout"]
    assert [e["event"] for e in stdout] == ["MLOPSCTL_TINY_SAYS bonjour x7"]
    assert "MLOPSCTL_TINY_SAYS bonjour x7" in chunk.lines()

    assert client.xcom(tiny_dag, rid, "say") == {"n": 7, "line": "MLOPSCTL_TINY_SAYS bonjour x7"}
    assert rid in [r.dag_run_id for r in client.list_runs(tiny_dag, limit=50)]
    assert rid in [r.dag_run_id for r in client.list_runs("~", limit=50, order_by="-run_after")]


def test_duplicate_run_id_returns_the_same_run_not_a_second_one(client: AirflowClient, tiny_dag: str) -> None:
    rid = run_id("dup")
    first = client.trigger(tiny_dag, {"n": 2}, dag_run_id=rid)
    again = client.trigger(
        tiny_dag, {"n": 2}, dag_run_id=rid
    )  # Airflow answers 409; the client returns the run
    assert again.dag_run_id == first.dag_run_id == rid
    assert again.queued_at == first.queued_at
    assert [r.dag_run_id for r in client.list_runs(tiny_dag, limit=100)].count(rid) == 1
    with pytest.raises(ConflictError, match="different conf"):
        client.trigger(tiny_dag, {"n": 3}, dag_run_id=rid)
    assert wait_finished(client, tiny_dag, rid).state == "success"


def test_bad_conf_is_rejected_with_airflows_message_and_creates_no_run(
    client: AirflowClient, tiny_dag: str
) -> None:
    rid = run_id("bad")
    with pytest.raises(RejectedError) as info:
        client.trigger(tiny_dag, {"n": 0}, dag_run_id=rid)
    assert type(info.value) is RejectedError
    assert info.value.message.startswith("Invalid input for param n: 0 is less than the minimum of 1")
    with pytest.raises(NotFoundError):
        client.get_run(tiny_dag, rid)
    with pytest.raises(RejectedError, match="Invalid input for param n"):
        client.trigger(tiny_dag, {"n": "abc"}, dag_run_id=run_id("bad2"))


def test_unknown_dag_and_run_are_not_found(client: AirflowClient, tiny_dag: str) -> None:
    with pytest.raises(NotFoundError, match="DAG 'no_such_dag_xyz' not found"):
        client.trigger("no_such_dag_xyz", {}, dag_run_id=run_id("nodag"))
    with pytest.raises(NotFoundError, match="Run 'no_such_run' of DAG"):
        client.get_run(tiny_dag, "no_such_run")


def test_connection_create_then_patch_then_delete(client: AirflowClient) -> None:
    cid = f"mlopsctl_live_{uuid.uuid4().hex[:6]}"
    conn = {
        "connection_id": cid,
        "conn_type": "http",
        "host": "first.example",
        "port": 443,
        "password": "conn-pw-live-1",
        "extra": {"timeout": 10},
    }
    created, was_created = client.upsert_connection(conn)
    assert was_created is True and created.host == "first.example"
    assert created.password == "***"
    patched, was_created = client.upsert_connection(dict(conn, host="second.example", extra={"timeout": 20}))
    assert was_created is False and patched.host == "second.example"
    read = client.get_connection(cid)
    assert read.host == "second.example" and read.port == 443
    assert json.loads(read.extra or "{}") == {"timeout": 20}
    assert cid in [c.connection_id for c in client.list_connections()]
    client.delete_connection(cid)
    with pytest.raises(NotFoundError, match=f"Connection '{cid}' not found"):
        client.get_connection(cid)


def test_variable_set_twice_updates(client: AirflowClient) -> None:
    key = f"mlopsctl_live_{uuid.uuid4().hex[:6]}"
    client.set_variable(key, "one")
    client.set_variable(key, "two")
    assert client.get_variable(key).value == "two"


def test_stale_token_is_refreshed_against_the_real_server(client: AirflowClient, tiny_dag: str) -> None:
    client.get_dag(tiny_dag)  # holds a valid token now
    client._auth.token = (
        "eyJhbGciOiJIUzUxMiJ9.eyJzdWIiOiJ4In0.invalid-signature"  # what an expired/re-keyed JWT looks like
    )
    assert client.get_dag(tiny_dag).dag_id == tiny_dag
    assert client._auth.token and client._auth.token.count(".") == 2 and "invalid-signature" not in client._auth.token
