"""AirflowClient against httpx.MockTransport: auth, retries, idempotent trigger, error mapping, no secrets."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlopsctl.airflow.client import AirflowClient, is_local_url
from mlopsctl.errors import (
    AuthError,
    ConfigError,
    ConflictError,
    ExitCode,
    MlopsctlError,
    NotFoundError,
    RejectedError,
    ServerError,
    UnreachableError,
)
from mlopsctl.settings import load_settings

PASSWORD = "hunter2-Pa55word"
TOKEN = "static-TOKEN-abcdef"
RUN = {"dag_run_id": "r1", "dag_id": "d", "state": "queued", "logical_date": None, "conf": {"x": 1}}


class Recorder:
    """A MockTransport handler: routes (method, path) to a function, records every request."""

    def __init__(self, routes: dict[tuple[str, str], Callable[[httpx.Request], httpx.Response]]):
        self.routes = routes
        self.requests: list[httpx.Request] = []
        self.tokens_issued = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.method == "POST" and request.url.path == "/auth/token":
            if "/auth/token" in {p for _, p in self.routes}:
                return self.routes[("POST", "/auth/token")](request)
            self.tokens_issued += 1
            return httpx.Response(201, json={"access_token": f"jwt-{self.tokens_issued}"})
        handler = self.routes.get((request.method, request.url.path))
        if handler is None:
            return httpx.Response(404, json={"detail": f"no route {request.method} {request.url.path}"})
        return handler(request)

    def calls(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and r.url.path == path]


def make_client(
    rec: Recorder, *, url: str = "http://airflow.example:8080", **kw: Any
) -> tuple[AirflowClient, list[float]]:
    kw.setdefault("username", "admin")
    kw.setdefault("password", PASSWORD)
    client = AirflowClient(url, transport=httpx.MockTransport(rec), **kw)
    sleeps: list[float] = []
    client._sleep = sleeps.append  # no real waiting in unit tests
    return client, sleeps


def dags_page(*ids: str, total: int | None = None) -> dict:
    return {
        "dags": [{"dag_id": i, "is_paused": False, "tags": []} for i in ids],
        "total_entries": total or len(ids),
    }


def assert_no_secret(exc: BaseException) -> None:
    text = f"{exc} {getattr(exc, 'hint', '')} {exc!r}"
    assert PASSWORD not in text and TOKEN not in text


# --- auth ----------------------------------------------------------------------------------------


def test_password_auth_fetches_token_and_sends_bearer() -> None:
    rec = Recorder({("GET", "/api/v2/dags"): lambda r: httpx.Response(200, json=dags_page("a"))})
    client, _ = make_client(rec)
    assert [d.dag_id for d in client.list_dags()] == ["a"]
    token_req = rec.calls("POST", "/auth/token")
    assert len(token_req) == 1
    assert json.loads(token_req[0].content) == {"username": "admin", "password": PASSWORD}
    assert rec.calls("GET", "/api/v2/dags")[0].headers["Authorization"] == "Bearer jwt-1"
    client.list_dags()  # token reused
    assert len(rec.calls("POST", "/auth/token")) == 1


def test_expired_token_is_refreshed_once_silently() -> None:
    def dags(request: httpx.Request) -> httpx.Response:
        if request.headers.get("Authorization") == "Bearer jwt-1":
            return httpx.Response(401, json={"detail": "Token expired"})
        return httpx.Response(200, json=dags_page("a"))

    rec = Recorder({("GET", "/api/v2/dags"): dags})
    client, sleeps = make_client(rec)
    assert [d.dag_id for d in client.list_dags()] == ["a"]
    assert rec.tokens_issued == 2
    assert [r.headers["Authorization"] for r in rec.calls("GET", "/api/v2/dags")] == [
        "Bearer jwt-1",
        "Bearer jwt-2",
    ]
    assert sleeps == []


def test_rekeyed_jwt_403_is_refreshed_like_401() -> None:
    def dags(request: httpx.Request) -> httpx.Response:
        if request.headers.get("Authorization") == "Bearer jwt-1":
            return httpx.Response(403, json={"detail": "Invalid JWT token"})
        return httpx.Response(200, json=dags_page("a"))

    client, _ = make_client(rec := Recorder({("GET", "/api/v2/dags"): dags}))
    assert len(client.list_dags()) == 1
    assert rec.tokens_issued == 2


def test_persistent_401_raises_auth_error_after_one_refresh() -> None:
    rec = Recorder(
        {("GET", "/api/v2/dags"): lambda r: httpx.Response(401, json={"detail": "Not authenticated"})}
    )
    client, _ = make_client(rec)
    with pytest.raises(AuthError) as info:
        client.list_dags()
    assert rec.tokens_issued == 2
    assert len(rec.calls("GET", "/api/v2/dags")) == 2
    assert info.value.exit_code == ExitCode.AUTH
    assert_no_secret(info.value)


def test_bad_password_is_auth_error_naming_user_not_password() -> None:
    rec = Recorder(
        {("POST", "/auth/token"): lambda r: httpx.Response(401, json={"detail": "Invalid credentials"})}
    )
    client, _ = make_client(rec)
    with pytest.raises(AuthError, match="rejected the password for user 'admin'") as info:
        client.get_dag("d")
    assert_no_secret(info.value)
    assert rec.calls("GET", "/api/v2/dags/d") == []


def test_static_token_is_sent_and_never_refreshed() -> None:
    rec = Recorder({("GET", "/api/v2/dags"): lambda r: httpx.Response(401, json={"detail": "Token expired"})})
    client, _ = make_client(rec, auth="token", token=TOKEN, password=None)
    with pytest.raises(AuthError) as info:
        client.list_dags()
    assert rec.calls("POST", "/auth/token") == []
    assert rec.calls("GET", "/api/v2/dags")[0].headers["Authorization"] == f"Bearer {TOKEN}"
    assert "MLOPSCTL_AIRFLOW_TOKEN" in (info.value.hint or "")
    assert_no_secret(info.value)


def test_auth_none_sends_no_header_and_health_needs_no_token() -> None:
    health = {
        "metadatabase": {"status": "healthy"},
        "scheduler": {"status": "unhealthy"},
        "triggerer": {"status": "healthy"},
        "dag_processor": {"status": "healthy"},
    }
    rec = Recorder(
        {
            ("GET", "/api/v2/monitor/health"): lambda r: httpx.Response(200, json=health),
            ("GET", "/api/v2/dags"): lambda r: httpx.Response(200, json=dags_page()),
        }
    )
    client, _ = make_client(rec)  # password auth configured, yet health does not log in
    assert client.health().unhealthy() == ["scheduler"]
    assert rec.calls("POST", "/auth/token") == []
    assert "Authorization" not in rec.calls("GET", "/api/v2/monitor/health")[0].headers
    none_client, _ = make_client(rec, auth="none", password=None)
    none_client.list_dags()
    assert "Authorization" not in rec.calls("GET", "/api/v2/dags")[-1].headers


def test_repr_and_errors_never_show_secrets() -> None:
    # A server that echoes the password back in its error detail: the client scrubs it.
    rec = Recorder(
        {("POST", "/api/v2/connections"): lambda r: httpx.Response(400, json={"detail": f"bad {PASSWORD}"})}
    )
    client, _ = make_client(rec)
    assert PASSWORD not in repr(client)
    with pytest.raises(RejectedError) as info:
        client.upsert_connection({"connection_id": "c", "conn_type": "http", "password": "conn-secret-99"})
    assert_no_secret(info.value)
    tclient, _ = make_client(rec, auth="token", token=TOKEN, password=None)
    assert TOKEN not in repr(tclient)


# --- retries -------------------------------------------------------------------------------------


def flaky(*responses: httpx.Response | Exception) -> Callable[[httpx.Request], httpx.Response]:
    queue = list(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        item = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(item, Exception):
            raise item
        return item

    return handler


def test_get_retries_on_503_429_and_connect_error_then_succeeds() -> None:
    rec = Recorder(
        {
            ("GET", "/api/v2/dags/d"): flaky(
                httpx.Response(503, json={"detail": "busy"}),
                httpx.Response(429, headers={"Retry-After": "7"}),
                httpx.ConnectError("Connection refused"),
                httpx.Response(200, json={"dag_id": "d", "is_paused": True}),
            )
        }
    )
    client, sleeps = make_client(rec, retries=3)
    assert client.get_dag("d").is_paused is True
    assert len(rec.calls("GET", "/api/v2/dags/d")) == 4
    assert len(sleeps) == 3
    assert sleeps[1] == 7.0  # Retry-After honoured
    assert 0 < sleeps[0] <= 0.5 and 0 < sleeps[2] <= 2.0  # exponential backoff with jitter


def test_login_answering_503_is_retried_then_the_request_goes_through() -> None:
    tokens = flaky(httpx.Response(503, headers={"Retry-After": "3"}), httpx.Response(201, json={"access_token": "jwt-x"}))
    rec = Recorder({("POST", "/auth/token"): tokens,
                    ("GET", "/api/v2/dags"): lambda r: httpx.Response(200, json=dags_page("a"))})
    client, sleeps = make_client(rec)
    assert [d.dag_id for d in client.list_dags()] == ["a"]
    assert len(rec.calls("POST", "/auth/token")) == 2 and sleeps == [3.0]
    assert rec.calls("GET", "/api/v2/dags")[0].headers["Authorization"] == "Bearer jwt-x"


def test_retries_exhausted_on_5xx_raise_server_error() -> None:
    rec = Recorder({("GET", "/api/v2/dags/d"): lambda r: httpx.Response(502, text="bad gateway")})
    client, sleeps = make_client(rec, retries=2)
    with pytest.raises(ServerError, match="502") as info:
        client.get_dag("d")
    assert len(rec.calls("GET", "/api/v2/dags/d")) == 3
    assert len(sleeps) == 2
    assert info.value.exit_code == ExitCode.SERVER


def test_timeouts_exhausted_raise_unreachable() -> None:
    rec = Recorder({("GET", "/api/v2/dags/d"): flaky(httpx.ReadTimeout("timed out"))})
    client, _ = make_client(rec, retries=1, timeout=5)
    with pytest.raises(UnreachableError, match="not reachable at http://airflow.example:8080") as info:
        client.get_dag("d")
    assert len(rec.calls("GET", "/api/v2/dags/d")) == 2
    assert "timed out" in (info.value.hint or "") or "timed out" in info.value.message


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.upsert_connection({"connection_id": "c", "conn_type": "http"}),
        lambda c: c.set_variable("k", "v"),
    ],
    ids=["connection-post", "variable-post"],
)
def test_non_idempotent_post_is_not_retried_on_503_or_timeout(call: Callable[[AirflowClient], Any]) -> None:
    rec = Recorder(
        {
            ("POST", "/api/v2/connections"): lambda r: httpx.Response(503, json={"detail": "busy"}),
            ("POST", "/api/v2/variables"): flaky(httpx.ReadTimeout("read timed out")),
        }
    )
    client, sleeps = make_client(rec, retries=3)
    with pytest.raises((ServerError, UnreachableError)):
        call(client)
    posts = [r for r in rec.requests if r.method == "POST" and r.url.path != "/auth/token"]
    assert len(posts) == 1
    assert sleeps == []


def test_patch_of_pause_is_retried() -> None:
    rec = Recorder(
        {
            ("PATCH", "/api/v2/dags/d"): flaky(
                httpx.Response(500, json={"detail": "boom"}),
                httpx.Response(200, json={"dag_id": "d", "is_paused": False}),
            )
        }
    )
    client, _ = make_client(rec)
    assert client.set_paused("d", False).is_paused is False
    calls = rec.calls("PATCH", "/api/v2/dags/d")
    assert len(calls) == 2 and json.loads(calls[0].content) == {"is_paused": False}


# --- trigger -------------------------------------------------------------------------------------


class FakeRuns:
    """A tiny stateful dagRuns endpoint: POST creates (409 on a known id), GET reads."""

    def __init__(self, lose_first_response: Exception | None = None, fail_first_with: int | None = None):
        self.runs: dict[str, dict] = {}
        self.lose = lose_first_response
        self.fail_first_with = fail_first_with
        self.posts = 0

    def post(self, request: httpx.Request) -> httpx.Response:
        self.posts += 1
        body = json.loads(request.content)
        run_id = body["dag_run_id"]
        if run_id in self.runs:
            return httpx.Response(409, json={"detail": f"DAG run {run_id} already exists"})
        self.runs[run_id] = {"dag_run_id": run_id, "dag_id": "d", "state": "queued", "conf": body["conf"]}
        if self.posts == 1 and self.lose is not None:
            raise self.lose  # created on the server, but the response never arrived
        if self.posts == 1 and self.fail_first_with:
            return httpx.Response(self.fail_first_with, json={"detail": "proxy error"})
        return httpx.Response(200, json=self.runs[run_id])

    def get(self, request: httpx.Request) -> httpx.Response:
        run_id = request.url.path.rsplit("/", 1)[-1]
        if run_id not in self.runs:
            return httpx.Response(404, json={"detail": "not found"})
        return httpx.Response(200, json=self.runs[run_id])


def trigger_routes(fake: FakeRuns, run_id: str = "r1") -> Recorder:
    return Recorder(
        {
            ("POST", "/api/v2/dags/d/dagRuns"): fake.post,
            ("GET", f"/api/v2/dags/d/dagRuns/{run_id}"): fake.get,
        }
    )


def test_trigger_sends_logical_date_null_and_a_client_chosen_run_id() -> None:
    fake = FakeRuns()
    rec = trigger_routes(fake)
    client, _ = make_client(rec)
    run = client.trigger("d", {"x": 1}, dag_run_id="r1", note="hi")
    body = json.loads(rec.calls("POST", "/api/v2/dags/d/dagRuns")[0].content)
    assert "logical_date" in body and body["logical_date"] is None
    assert body == {"dag_run_id": "r1", "logical_date": None, "conf": {"x": 1}, "note": "hi"}
    assert run.dag_run_id == "r1" and run.state == "queued"



@pytest.mark.parametrize(
    "lost", [httpx.ReadTimeout("read timed out"), httpx.RemoteProtocolError("server disconnected")]
)
def test_trigger_after_lost_response_returns_existing_run_without_a_second_one(lost: Exception) -> None:
    fake = FakeRuns(lose_first_response=lost)
    rec = trigger_routes(fake)
    client, _ = make_client(rec)
    run = client.trigger("d", {"x": 1}, dag_run_id="r1")
    assert run.dag_run_id == "r1" and run.conf == {"x": 1}
    assert fake.posts == 2 and len(fake.runs) == 1
    assert len(rec.calls("GET", "/api/v2/dags/d/dagRuns/r1")) == 1


def test_trigger_is_retried_on_5xx_and_a_409_then_finds_the_run() -> None:
    fake = FakeRuns(fail_first_with=502)
    client, sleeps = make_client(trigger_routes(fake))
    run = client.trigger("d", {"x": 1}, dag_run_id="r1")
    assert run.dag_run_id == "r1"
    assert fake.posts == 2 and len(fake.runs) == 1 and len(sleeps) == 1


def test_trigger_409_for_same_id_returns_existing_run() -> None:
    fake = FakeRuns()
    client, _ = make_client(trigger_routes(fake))
    first = client.trigger("d", {"x": 1}, dag_run_id="r1")
    again = client.trigger("d", {"x": 1}, dag_run_id="r1")
    assert again.dag_run_id == first.dag_run_id and len(fake.runs) == 1


def test_trigger_409_with_a_different_conf_is_a_conflict() -> None:
    fake = FakeRuns()
    client, _ = make_client(trigger_routes(fake))
    client.trigger("d", {"x": 1}, dag_run_id="r1")
    with pytest.raises(ConflictError, match="different conf") as info:
        client.trigger("d", {"x": 2}, dag_run_id="r1")
    assert info.value.exit_code == ExitCode.REJECTED


def test_trigger_400_carries_airflows_message_verbatim() -> None:
    detail = "Invalid input for param max_depth: 0 is less than the minimum of 1"
    rec = Recorder(
        {("POST", "/api/v2/dags/d/dagRuns"): lambda r: httpx.Response(400, json={"detail": detail})}
    )
    client, sleeps = make_client(rec)
    with pytest.raises(RejectedError) as info:
        client.trigger("d", {"max_depth": 0}, dag_run_id="r1")
    assert info.value.message == detail
    assert len(rec.calls("POST", "/api/v2/dags/d/dagRuns")) == 1 and sleeps == []


# --- error mapping -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "exc_type", "needle"),
    [
        (
            400,
            {"detail": "Invalid input for param n: 0 is less than the minimum of 1"},
            RejectedError,
            "Invalid input for param n: 0 is less than the minimum of 1",
        ),
        (401, {"detail": "Not authenticated"}, AuthError, "refused the credentials"),
        (403, {"detail": "Forbidden"}, AuthError, "denied GET /api/v2/dags/my_dag"),
        (404, {"detail": "The Dag with ID: `my_dag` was not found"}, NotFoundError, "DAG 'my_dag' not found"),
        (409, {"detail": "already exists"}, ConflictError, "already exists"),
        (
            422,
            {
                "detail": [
                    {
                        "loc": ["query", "limit"],
                        "msg": "Input should be a valid integer",
                        "type": "int_parsing",
                        "input": PASSWORD,
                    }
                ]
            },
            RejectedError,
            "query.limit: Input should be a valid integer",
        ),
        (500, {"detail": "Internal Server Error"}, ServerError, "failed with 500"),
        (503, "<html>Service Unavailable</html>", ServerError, "failed with 503"),
    ],
)
def test_status_maps_to_typed_error(
    status: int, body: Any, exc_type: type[MlopsctlError], needle: str
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(body, str):
            return httpx.Response(status, text=body)
        return httpx.Response(status, json=body)

    rec = Recorder({("GET", "/api/v2/dags/my_dag"): handler})
    client, _ = make_client(rec, retries=1)
    with pytest.raises(exc_type) as info:
        client.get_dag("my_dag")
    assert type(info.value) is exc_type
    assert needle in info.value.message
    assert info.value.hint  # every error carries a hint
    assert_no_secret(info.value)


def test_unreachable_local_url_says_dev_start_remote_says_check_url() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused")

    local = AirflowClient(
        "http://127.0.0.1:8080", auth="none", transport=httpx.MockTransport(refuse), retries=1
    )
    local._sleep = lambda s: None
    with pytest.raises(UnreachableError) as info:
        local.list_dags()
    assert (
        info.value.message == "Airflow is not reachable at http://127.0.0.1:8080 — run `mlopsctl dev start`."
    )
    assert "Connection refused" in (info.value.hint or "")
    assert info.value.exit_code == ExitCode.UNREACHABLE

    remote = AirflowClient(
        "https://user:pw-in-url@airflow.corp.example/prod",
        auth="none",
        transport=httpx.MockTransport(refuse),
        retries=0,
    )
    with pytest.raises(UnreachableError) as info:
        remote.list_dags()
    assert "https://airflow.corp.example/prod" in info.value.message
    assert "pw-in-url" not in info.value.message
    assert "MLOPSCTL_AIRFLOW_URL" in (info.value.hint or "")
    assert "dev start" not in info.value.message


# --- endpoints -----------------------------------------------------------------------------------


def test_list_dags_paginates_with_limit_and_offset_and_passes_tags() -> None:
    def dags(request: httpx.Request) -> httpx.Response:
        offset = int(request.url.params["offset"])
        ids = [f"d{i}" for i in range(offset, min(offset + 100, 150))]
        return httpx.Response(200, json=dags_page(*ids, total=150))

    rec = Recorder({("GET", "/api/v2/dags"): dags})
    client, _ = make_client(rec)
    result = client.list_dags(tags=["mlopsctl", "x"], dag_id_pattern="grid")
    assert len(result) == 150 and result[-1].dag_id == "d149"
    calls = rec.calls("GET", "/api/v2/dags")
    assert [c.url.params["offset"] for c in calls] == ["0", "100"]
    assert calls[0].url.params.get_list("tags") == ["mlopsctl", "x"]
    assert calls[0].url.params["dag_id_pattern"] == "grid"


def test_list_runs_for_all_dags_uses_tilde_and_order_by() -> None:
    runs = {"dag_runs": [dict(RUN, dag_run_id=f"r{i}") for i in range(3)], "total_entries": 3}
    rec = Recorder({("GET", "/api/v2/dags/~/dagRuns"): lambda r: httpx.Response(200, json=runs)})
    client, _ = make_client(rec)
    assert [r.dag_run_id for r in client.list_runs(limit=5, order_by="-start_date")] == ["r0", "r1", "r2"]
    params = rec.calls("GET", "/api/v2/dags/~/dagRuns")[0].url.params
    assert params["order_by"] == "-start_date" and params["limit"] == "5"


def test_task_log_asks_for_json_and_passes_continuation_token() -> None:
    log = {
        "content": [
            {"event": "hello", "logger": "task.stdout", "level": "info"},
            {"event": "Done", "logger": "airflow.task", "level": "info"},
        ],
        "continuation_token": "tok2",
    }
    path = "/api/v2/dags/d/dagRuns/r%201/taskInstances/t/logs/2"
    rec = Recorder(
        {
            ("GET", "/api/v2/dags/d/dagRuns/r 1/taskInstances/t/logs/2"): lambda r: httpx.Response(
                200, json=log
            )
        }
    )
    client, _ = make_client(rec)
    chunk = client.task_log("d", "r 1", "t", 2, continuation_token="tok1")
    req = rec.requests[-1]
    assert req.headers["Accept"] == "application/json"
    assert req.url.params["token"] == "tok1" and req.url.params["map_index"] == "-1"
    assert req.url.raw_path.decode().startswith(path)
    assert chunk.continuation_token == "tok2"
    assert chunk.lines() == ["hello", "[info] Done"]


def test_xcom_returns_the_deserialized_value() -> None:
    path = "/api/v2/dags/d/dagRuns/r1/taskInstances/t/xcomEntries/return_value"
    rec = Recorder(
        {("GET", path): lambda r: httpx.Response(200, json={"key": "return_value", "value": {"rmse": 1.5}})}
    )
    client, _ = make_client(rec)
    assert client.xcom("d", "r1", "t") == {"rmse": 1.5}
    assert rec.calls("GET", path)[0].url.params["deserialize"] == "true"


def test_upsert_connection_posts_extra_as_json_string_then_patches_on_409() -> None:
    existing: dict[str, dict] = {}

    def post(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if body["connection_id"] in existing:
            return httpx.Response(409, json={"detail": "exists"})
        existing[body["connection_id"]] = body
        return httpx.Response(201, json=dict(body, password="***"))

    def patch(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        existing[body["connection_id"]] = body
        return httpx.Response(200, json=dict(body, password="***"))

    rec = Recorder({("POST", "/api/v2/connections"): post, ("PATCH", "/api/v2/connections/dbx"): patch})
    client, _ = make_client(rec)
    conn = {
        "connection_id": "dbx",
        "conn_type": "databricks",
        "host": "h",
        "password": "pat-1",
        "extra": {"a": 1},
    }
    created_conn, created = client.upsert_connection(conn)
    assert created is True and created_conn.password == "***"
    sent = json.loads(rec.calls("POST", "/api/v2/connections")[0].content)
    assert isinstance(sent["extra"], str) and json.loads(sent["extra"]) == {"a": 1}
    updated, created = client.upsert_connection(dict(conn, host="h2"))
    assert created is False and updated.host == "h2"
    assert len(rec.calls("PATCH", "/api/v2/connections/dbx")) == 1


def test_set_variable_posts_then_patches_on_409() -> None:
    rec = Recorder(
        {
            ("POST", "/api/v2/variables"): lambda r: httpx.Response(409, json={"detail": "exists"}),
            ("PATCH", "/api/v2/variables/compute"): lambda r: httpx.Response(200, json=json.loads(r.content)),
        }
    )
    client, _ = make_client(rec)
    client.set_variable("compute", "databricks")
    assert json.loads(rec.calls("PATCH", "/api/v2/variables/compute")[0].content) == {
        "key": "compute",
        "value": "databricks",
    }


def test_delete_connection_404_names_the_connection() -> None:
    rec = Recorder(
        {("DELETE", "/api/v2/connections/gone"): lambda r: httpx.Response(404, json={"detail": "x"})}
    )
    client, _ = make_client(rec)
    with pytest.raises(NotFoundError, match="Connection 'gone' not found"):
        client.delete_connection("gone")


# --- from_settings -------------------------------------------------------------------------------


def write_passwords(state: Path, data: dict) -> None:
    (state / "airflow").mkdir(parents=True)
    (state / "airflow" / "passwords.json").write_text(json.dumps(data))


def test_from_settings_reads_the_local_stack_password(project: Path) -> None:
    write_passwords(project / ".mlopsctl", {"admin": "generated-pw-123"})
    client = AirflowClient.from_settings(load_settings())
    assert client._password == "generated-pw-123"
    assert client.base_url == "http://127.0.0.1:8080" and client.local_hint


def test_from_settings_local_without_password_file_is_config_error(project: Path) -> None:
    with pytest.raises(ConfigError) as info:
        AirflowClient.from_settings(load_settings())
    assert "mlopsctl dev start" in (info.value.hint or "") and "MLOPSCTL_AIRFLOW_PASSWORD" in (
        info.value.hint or ""
    )


def test_from_settings_explicit_password_wins_over_file(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_passwords(project / ".mlopsctl", {"admin": "generated-pw-123"})
    monkeypatch.setenv("MLOPSCTL_AIRFLOW_PASSWORD", PASSWORD)
    assert AirflowClient.from_settings(load_settings())._password == PASSWORD


def test_from_settings_remote_without_password_is_config_error(project: Path) -> None:
    write_passwords(project / ".mlopsctl", {"admin": "generated-pw-123"})  # not used for a remote URL
    with pytest.raises(ConfigError, match="No Airflow password"):
        AirflowClient.from_settings(load_settings(airflow_url="https://airflow.example.com"))


def test_from_settings_token_auth(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPSCTL_AIRFLOW_AUTH", "token")
    monkeypatch.setenv("MLOPSCTL_AIRFLOW_TOKEN", TOKEN)
    client = AirflowClient.from_settings(load_settings(airflow_url="https://astro.example/d1"))
    assert client.auth == "token" and not client.local_hint
    monkeypatch.delenv("MLOPSCTL_AIRFLOW_TOKEN")
    with pytest.raises(ConfigError, match="no token"):
        AirflowClient.from_settings(load_settings(airflow_url="https://astro.example/d1"))


def test_base_url_with_a_path_prefix_is_kept() -> None:
    rec = Recorder({("GET", "/deploy1/api/v2/dags/d"): lambda r: httpx.Response(200, json={"dag_id": "d"})})
    client, _ = make_client(
        rec, url="https://astro.example/deploy1/", auth="token", token=TOKEN, password=None
    )
    assert client.get_dag("d").dag_id == "d"


def test_helpers() -> None:
    assert is_local_url("http://127.0.0.1:8080", 8080) and is_local_url("http://localhost:9000")
    assert not is_local_url("http://127.0.0.1:8081", 8080) and not is_local_url("https://airflow.example.com")


def test_from_settings_passes_tls_options(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPSCTL_AIRFLOW_PASSWORD", PASSWORD)
    monkeypatch.setenv("MLOPSCTL_VERIFY_TLS", "false")
    assert AirflowClient.from_settings(load_settings(airflow_url="https://a.example")).verify is False
    bundle = project / "ca.pem"
    bundle.write_text("not used until a request is made")
    monkeypatch.setenv("MLOPSCTL_CA_BUNDLE", str(bundle))
    assert AirflowClient.from_settings(load_settings(airflow_url="https://a.example")).verify == str(bundle)
