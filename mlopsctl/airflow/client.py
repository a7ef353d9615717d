"""Airflow REST API v2 client (httpx). Typed pydantic models in and out; never prints.

* Auth: :class:`mlopsctl.airflow.auth.BearerAuth` (JWT login and one refresh on 401, or a static token).
* Retries (tenacity) with exponential backoff + jitter, honouring ``Retry-After``, on connect errors,
  timeouts, 5xx and 429 for idempotent requests (GET, the pause PATCH, DELETE). A trigger is made
  idempotent by a client-chosen ``dag_run_id``: it is retried too, and a 409 for that id returns the
  existing run, so a lost response never creates a second run. Other POSTs are retried only when the
  connection could not be opened (nothing was sent).
* Errors map to :mod:`mlopsctl.errors` types (:mod:`mlopsctl.airflow.errors`); secrets never appear in them.
"""

from __future__ import annotations

import json
import random
import ssl
import time
from collections.abc import Callable, Iterator
from typing import Any, Self
from urllib.parse import quote, urlparse

import httpx
from tenacity import RetryCallState, Retrying, stop_after_attempt

from mlopsctl.airflow.auth import BearerAuth, LoginUnavailable
from mlopsctl.airflow.errors import http_error, public_url, retry_after, unreachable
from mlopsctl.airflow.models import (
    Connection,
    Dag,
    DagDetails,
    DagRun,
    Health,
    ImportError_,
    LogChunk,
    TaskInstance,
    Variable,
)
from mlopsctl.errors import ConfigError, ConflictError, MlopsctlError, NotFoundError

API = "/api/v2"
PAGE_LIMIT = 100  # Airflow's default [api] maximum_page_limit
MAX_RETRY_AFTER = 60.0  # never sleep longer than this on a Retry-After header
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def is_local_url(url: str, port: int | None = None) -> bool:
    """True when `url` points at this machine (and, if given, at `port`)."""
    parsed = urlparse(url)
    if (parsed.hostname or "") not in LOCAL_HOSTS:
        return False
    if port is None:
        return True
    actual = parsed.port or (443 if parsed.scheme == "https" else 80)
    return actual == port


def _quote(value: str) -> str:
    return quote(value, safe="")


class AirflowClient:
    """Typed client for the Airflow 3 REST API v2. Build with :meth:`from_settings` in commands."""

    def __init__(
        self,
        base_url: str,
        *,
        auth: str = "password",  # password | token | none
        username: str | None = None,
        password: str
        | None = None,  # plain str only inside the client; callers pass SecretStr.get_secret_value()
        token: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        verify: bool | str = True,
        transport: Any = None,  # httpx.BaseTransport for tests (MockTransport)
        backoff: float = 0.5,  # first retry delay in seconds (doubles each retry, with jitter)
        backoff_max: float = 10.0,
        local_hint: bool | None = None,  # unreachable hint says `mlopsctl dev start` (default: URL is local)
    ) -> None:
        if auth not in ("password", "token", "none"):
            raise ConfigError(
                f"Unknown Airflow auth kind {auth!r}.",
                hint="Use password, token or none (MLOPSCTL_AIRFLOW_AUTH).",
            )
        if auth == "password" and (not username or password is None):
            raise ConfigError(
                "Airflow password auth needs a username and a password.",
                hint="Set MLOPSCTL_AIRFLOW_USERNAME and MLOPSCTL_AIRFLOW_PASSWORD, or use MLOPSCTL_AIRFLOW_AUTH=token.",
            )
        if auth == "token" and not token:
            raise ConfigError(
                "Airflow token auth is selected but no token is set.",
                hint="Set MLOPSCTL_AIRFLOW_TOKEN (e.g. an Astronomer deployment API token).",
            )
        self.base_url = base_url.rstrip("/")
        self.auth = auth
        self.username = username
        self._password = password
        self.timeout = timeout
        self.retries = max(0, int(retries))
        self.verify = verify
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.local_hint = is_local_url(base_url) if local_hint is None else local_hint
        self._transport = transport
        self._auth = (
            None
            if auth == "none"
            else BearerAuth(self.base_url, token=token if auth == "token" else None, username=username,
                            password=password if auth == "password" else None, local=self.local_hint)
        )
        self._client: httpx.Client | None = None
        self._sleep: Callable[[float], None] = time.sleep

    # --- construction ---------------------------------------------------------------------------
    @classmethod
    def from_settings(cls, settings: Any, *, transport: httpx.BaseTransport | None = None) -> AirflowClient:
        """Build from Settings; for the local stack with no password set, the one the stack generated
        (`settings.local_airflow_password()`). `transport`: httpx's transport to send through (None: the
        network)."""
        auth = settings.airflow_auth
        password = settings.airflow_password.get_secret_value() if settings.airflow_password else None
        token = settings.airflow_token.get_secret_value() if settings.airflow_token else None
        local_stack = is_local_url(settings.airflow_url, settings.airflow_port)
        if auth == "password" and password is None:
            if local_stack:
                password = settings.local_airflow_password()
            else:
                raise ConfigError(
                    f"No Airflow password is set for {public_url(settings.airflow_url)}.",
                    hint="Set MLOPSCTL_AIRFLOW_PASSWORD, or MLOPSCTL_AIRFLOW_AUTH=token with MLOPSCTL_AIRFLOW_TOKEN.",
                )
        verify: bool | str = str(settings.ca_bundle) if settings.ca_bundle else settings.verify_tls
        return cls(
            settings.airflow_url,
            auth=auth,
            username=settings.airflow_username,
            password=password,
            token=token,
            timeout=settings.request_timeout,
            retries=settings.retries,
            verify=verify,
            local_hint=local_stack or is_local_url(settings.airflow_url),
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"AirflowClient(base_url={public_url(self.base_url)!r}, auth={self.auth!r}, username={self.username!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def http(self) -> httpx.Client:
        """The underlying httpx.Client, built on first use."""
        if self._client is None:
            verify: bool | ssl.SSLContext
            if isinstance(self.verify, str):
                verify = ssl.create_default_context(cafile=self.verify)
            else:
                verify = self.verify
            kwargs: dict[str, Any] = {
                "base_url": self.base_url, "timeout": self.timeout, "verify": verify, "auth": self._auth,
            }
            if self._transport is not None:
                kwargs["transport"] = self._transport
            kwargs["headers"] = {"Accept": "application/json", "User-Agent": "mlopsctl"}
            self._client = httpx.Client(**kwargs)
        return self._client

    # --- core request machinery -----------------------------------------------------------------
    def _secrets(self, extra: tuple[str, ...] = ()) -> tuple[str | None, ...]:
        token = self._auth.token if self._auth is not None else None
        return (self._password, token, *extra)

    def _wait(self, state: RetryCallState) -> float:
        """Retry-After when the server asks for it (capped), else exponential backoff with jitter."""
        outcome = state.outcome
        resp = None
        if outcome is not None:
            if not outcome.failed:
                resp = outcome.result()
            elif isinstance(outcome.exception(), LoginUnavailable):
                resp = outcome.exception().response
        after = retry_after(resp)
        if after is not None:
            return min(after, MAX_RETRY_AFTER)
        base = min(self.backoff_max, self.backoff * (2 ** (state.attempt_number - 1)))
        return base * random.uniform(0.5, 1.0)

    def _send(self, method: str, path: str, *, idempotent: bool, with_auth: bool, **request: Any) -> httpx.Response:
        """One request with retries: idempotent ones on transport errors, 5xx and 429; others only when
        nothing was sent. Returns the last response, raises the last transport error."""

        def should_retry(state: RetryCallState) -> bool:
            outcome = state.outcome
            if outcome is None:
                return False
            if outcome.failed:
                exc = outcome.exception()
                if isinstance(exc, LoginUnavailable):
                    return _retryable_status(exc.response)
                return isinstance(exc, httpx.TransportError) and (
                    idempotent or isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))
                )
            return idempotent and _retryable_status(outcome.result())

        retrying = Retrying(
            stop=stop_after_attempt(self.retries + 1),
            wait=self._wait,
            retry=should_retry,
            sleep=lambda seconds: self._sleep(seconds),
            retry_error_callback=lambda state: state.outcome.result(),  # the last response, or raise
        )
        auth = httpx.USE_CLIENT_DEFAULT if with_auth else None
        return retrying(self.http.request, method, path, auth=auth, **request)

    def _request(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool | None = None,
        with_auth: bool = True,
        what: str | None = None,
        ok: tuple[int, ...] = (200, 201, 204),
        secrets_: tuple[str, ...] = (),
        **request: Any,  # params, json, headers: as httpx.Client.request takes them
    ) -> httpx.Response:
        if idempotent is None:
            idempotent = method in ("GET", "HEAD", "DELETE", "PUT")
        try:
            resp = self._send(method, path, idempotent=idempotent, with_auth=with_auth, **request)
        except httpx.TransportError as exc:
            raise unreachable(exc, self.base_url, self.timeout, local=self.local_hint) from None
        except LoginUnavailable as exc:
            raise self._error(exc.response, "POST", "/auth/token") from None
        if resp.status_code in ok:
            return resp
        raise self._error(resp, method, path, what=what, secrets_=secrets_)

    def _error(
        self, resp: httpx.Response, method: str, path: str, *, what: str | None = None, secrets_: tuple[str, ...] = ()
    ) -> MlopsctlError:
        return http_error(resp, method, path, base_url=self.base_url, auth=self.auth, username=self.username,
                          what=what, secrets=self._secrets(secrets_))

    def _get_json(self, path: str, *, params: Any = None, what: str | None = None) -> Any:
        return self._request("GET", path, params=params, what=what).json()

    def _paginate(
        self, path: str, key: str, params: dict[str, Any] | None = None, what: str | None = None
    ) -> Iterator[dict]:
        offset = 0
        while True:
            page_params = dict(params or {})
            page_params.update(limit=PAGE_LIMIT, offset=offset)
            body = self._get_json(path, params=page_params, what=what)
            items = body.get(key) or []
            yield from items
            offset += len(items)
            total = body.get("total_entries")
            if (
                not items
                or (isinstance(total, int) and offset >= total)
                or len(items) < PAGE_LIMIT
                and total is None
            ):
                return

    # --- monitoring -----------------------------------------------------------------------------
    def health(self) -> Health:
        """Component health. NB: Airflow answers 200 even when a component is unhealthy — see Health.unhealthy()."""
        return Health.model_validate(self._request("GET", f"{API}/monitor/health", with_auth=False).json())

    def version(self) -> dict[str, Any]:
        return self._request("GET", f"{API}/version", with_auth=False).json()

    def check_auth(self) -> None:
        """Make one authenticated request (cheap) so bad credentials surface early."""
        self._request("GET", f"{API}/dags", params={"limit": 1})

    # --- dags -----------------------------------------------------------------------------------
    def list_dags(self, *, dag_id_pattern: str | None = None, tags: list[str] | None = None) -> list[Dag]:
        params: dict[str, Any] = {}
        if dag_id_pattern:
            params["dag_id_pattern"] = dag_id_pattern
        if tags:
            params["tags"] = list(tags)
        return [Dag.model_validate(d) for d in self._paginate(f"{API}/dags", "dags", params)]

    def get_dag(self, dag_id: str) -> Dag:
        return Dag.model_validate(self._get_json(f"{API}/dags/{_quote(dag_id)}", what=f"DAG {dag_id!r}"))

    def get_dag_details(self, dag_id: str) -> DagDetails:
        body = self._get_json(f"{API}/dags/{_quote(dag_id)}/details", what=f"DAG {dag_id!r}")
        return DagDetails.model_validate(body)

    def set_paused(self, dag_id: str, paused: bool) -> Dag:
        resp = self._request(
            "PATCH",
            f"{API}/dags/{_quote(dag_id)}",
            params={"update_mask": "is_paused"},
            json={"is_paused": paused},
            idempotent=True,
            what=f"DAG {dag_id!r}",
        )
        return Dag.model_validate(resp.json())

    def import_errors(self) -> list[ImportError_]:
        return [
            ImportError_.model_validate(e) for e in self._paginate(f"{API}/importErrors", "import_errors")
        ]

    # --- dag runs -------------------------------------------------------------------------------
    def trigger(
        self, dag_id: str, conf: dict[str, Any], *, dag_run_id: str, note: str | None = None
    ) -> DagRun:
        """POST dagRuns with logical_date null. On 409 for our own dag_run_id, returns the existing run
        (idempotent retry after a lost response). 400 -> RejectedError carrying Airflow's message."""
        body: dict[str, Any] = {"dag_run_id": dag_run_id, "logical_date": None, "conf": dict(conf or {})}
        if note is not None:
            body["note"] = note
        path = f"{API}/dags/{_quote(dag_id)}/dagRuns"
        resp = self._request(
            "POST", path, json=body, idempotent=True, what=f"DAG {dag_id!r}", ok=(200, 201, 409)
        )
        if resp.status_code != 409:
            return DagRun.model_validate(resp.json())
        # Same run id already exists: either our earlier attempt's response was lost, or the caller reused an id.
        try:
            existing = self.get_run(dag_id, dag_run_id)
        except NotFoundError:
            raise self._error(resp, "POST", path) from None
        if (existing.conf or {}) != body["conf"]:
            raise ConflictError(
                f"A run {dag_run_id!r} of DAG {dag_id!r} already exists with a different conf.",
                hint="Pick another --run-id (or omit it to let mlopsctl choose one).",
            )
        return existing

    def get_run(self, dag_id: str, dag_run_id: str) -> DagRun:
        body = self._get_json(
            f"{API}/dags/{_quote(dag_id)}/dagRuns/{_quote(dag_run_id)}",
            what=f"Run {dag_run_id!r} of DAG {dag_id!r}",
        )
        return DagRun.model_validate(body)

    def list_runs(self, dag_id: str = "~", *, limit: int = 20, order_by: str = "-start_date") -> list[DagRun]:
        """The latest runs (`dag_id="~"`: all DAGs), at most `limit`, sorted by `order_by` (prefix - for desc)."""
        out: list[DagRun] = []
        offset = 0
        what = None if dag_id == "~" else f"DAG {dag_id!r}"
        while len(out) < limit:
            page = min(PAGE_LIMIT, limit - len(out))
            body = self._get_json(
                f"{API}/dags/{_quote(dag_id) if dag_id != '~' else '~'}/dagRuns",
                params={"limit": page, "offset": offset, "order_by": order_by},
                what=what,
            )
            items = body.get("dag_runs") or []
            out.extend(DagRun.model_validate(r) for r in items)
            offset += len(items)
            total = body.get("total_entries")
            if len(items) < page or (isinstance(total, int) and offset >= total):
                break
        return out[:limit]

    def task_instances(self, dag_id: str, dag_run_id: str) -> list[TaskInstance]:
        path = f"{API}/dags/{_quote(dag_id)}/dagRuns/{_quote(dag_run_id)}/taskInstances"
        items = self._paginate(path, "task_instances", what=f"Run {dag_run_id!r} of DAG {dag_id!r}")
        return [TaskInstance.model_validate(t) for t in items]

    def task_log(
        self,
        dag_id: str,
        dag_run_id: str,
        task_id: str,
        try_number: int,
        *,
        map_index: int = -1,
        continuation_token: str | None = None,
    ) -> LogChunk:
        params: dict[str, Any] = {"map_index": map_index}
        if continuation_token:
            params["token"] = continuation_token
        path = (
            f"{API}/dags/{_quote(dag_id)}/dagRuns/{_quote(dag_run_id)}/taskInstances/{_quote(task_id)}"
            f"/logs/{int(try_number)}"
        )
        resp = self._request(
            "GET",
            path,
            params=params,
            headers={"Accept": "application/json"},
            what=f"Log of task {task_id!r} (try {try_number}) in run {dag_run_id!r} of DAG {dag_id!r}",
        )
        return LogChunk.model_validate(resp.json())

    def read_log(
        self, dag_id: str, dag_run_id: str, task_id: str, try_number: int, *, map_index: int = -1,
        max_pages: int = 100,
    ) -> list[str]:
        """The whole log of one task try as text lines, following continuation tokens."""
        lines: list[str] = []
        token = None
        for _ in range(max_pages):
            chunk = self.task_log(dag_id, dag_run_id, task_id, try_number, map_index=map_index,
                                  continuation_token=token)
            new = chunk.lines()
            lines.extend(new)
            if not chunk.continuation_token or chunk.continuation_token == token or not new:
                break
            token = chunk.continuation_token
        return lines

    def xcom(self, dag_id: str, dag_run_id: str, task_id: str, key: str = "return_value") -> Any:
        path = (
            f"{API}/dags/{_quote(dag_id)}/dagRuns/{_quote(dag_run_id)}/taskInstances/{_quote(task_id)}"
            f"/xcomEntries/{_quote(key)}"
        )
        body = self._get_json(
            path,
            params={"deserialize": "true"},
            what=f"XCom {key!r} of task {task_id!r} in run {dag_run_id!r}",
        )
        return body.get("value") if isinstance(body, dict) else body

    # --- connections ----------------------------------------------------------------------------
    def get_connection(self, connection_id: str) -> Connection:
        body = self._get_json(
            f"{API}/connections/{_quote(connection_id)}", what=f"Connection {connection_id!r}"
        )
        return Connection.model_validate(body)

    def list_connections(self) -> list[Connection]:
        return [Connection.model_validate(c) for c in self._paginate(f"{API}/connections", "connections")]

    def upsert_connection(self, conn: dict[str, Any]) -> tuple[Connection, bool]:
        """POST; on 409 PATCH. Returns (connection, created). `extra` may be a dict (sent as a JSON string)."""
        body = {k: v for k, v in conn.items() if v is not None}
        if "connection_id" not in body or "conn_type" not in body:
            raise ConfigError("A connection needs a connection_id and a conn_type.")
        if isinstance(body.get("extra"), (dict, list)):
            body["extra"] = json.dumps(body["extra"])
        hidden = tuple(str(body[k]) for k in ("password",) if body.get(k))
        cid = str(body["connection_id"])
        resp = self._request(
            "POST",
            f"{API}/connections",
            json=body,
            ok=(200, 201, 409),
            secrets_=hidden,
            what=f"Connection {cid!r}",
        )
        if resp.status_code != 409:
            return Connection.model_validate(resp.json()), True
        resp = self._request(
            "PATCH",
            f"{API}/connections/{_quote(cid)}",
            json=body,
            idempotent=True,
            secrets_=hidden,
            what=f"Connection {cid!r}",
        )
        return Connection.model_validate(resp.json()), False

    def delete_connection(self, connection_id: str) -> None:
        self._request(
            "DELETE", f"{API}/connections/{_quote(connection_id)}", what=f"Connection {connection_id!r}"
        )

    # --- variables ------------------------------------------------------------------------------
    def set_variable(self, key: str, value: str) -> None:
        body = {"key": key, "value": value}
        resp = self._request(
            "POST", f"{API}/variables", json=body, ok=(200, 201, 409), what=f"Variable {key!r}"
        )
        if resp.status_code == 409:
            self._request(
                "PATCH",
                f"{API}/variables/{_quote(key)}",
                json=body,
                idempotent=True,
                what=f"Variable {key!r}",
            )

    def get_variable(self, key: str) -> Variable:
        return Variable.model_validate(
            self._get_json(f"{API}/variables/{_quote(key)}", what=f"Variable {key!r}")
        )


def _retryable_status(resp: httpx.Response) -> bool:
    return resp.status_code >= 500 or resp.status_code == 429
