"""Airflow REST API v2 client (httpx). Typed pydantic models in and out; never prints.

Behaviour in one place:

* Auth: ``password`` fetches a JWT with ``POST /auth/token`` and fetches a new one once when a request
  answers 401 (tokens expire silently); ``token`` sends a static bearer token; ``none`` sends nothing.
* Retries with exponential backoff + jitter (``Retry-After`` honoured) on connect errors, timeouts, 5xx
  and 429 for idempotent requests (GET, the pause PATCH, DELETE). A trigger is made idempotent by a
  client-chosen ``dag_run_id``: it is retried too, and a 409 for that id returns the existing run, so a
  lost response never creates a second run. Other POSTs are retried only when the connection could not be
  opened (nothing was sent).
* Errors map to :mod:`mlopsctl.errors` types with one message and a hint; secrets never appear in them.
"""

from __future__ import annotations

import email.utils
import json
import random
import secrets
import ssl
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote, urlparse

import httpx

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
from mlopsctl.errors import (
    AuthError,
    ConfigError,
    ConflictError,
    MlopsctlError,
    NotFoundError,
    RejectedError,
    ServerError,
    UnreachableError,
)

API = "/api/v2"
PAGE_LIMIT = 100  # Airflow's default [api] maximum_page_limit
MAX_RETRY_AFTER = 60.0  # never sleep longer than this on a Retry-After header
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def new_run_id(prefix: str = "mlopsctl") -> str:
    """A fresh client-chosen dag_run_id (matches Airflow's default allowed_run_id_pattern)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return f"{prefix}__{stamp}_{secrets.token_hex(4)}"


def is_local_url(url: str, port: int | None = None) -> bool:
    """True when `url` points at this machine (and, if given, at `port`)."""
    parsed = urlparse(url)
    if (parsed.hostname or "") not in LOCAL_HOSTS:
        return False
    if port is None:
        return True
    actual = parsed.port or (443 if parsed.scheme == "https" else 80)
    return actual == port


def read_local_password(state_dir: Path, username: str) -> str:
    """The generated admin password the local stack (`mlopsctl dev start`) keeps in its state dir."""
    path = Path(state_dir) / "airflow" / "passwords.json"
    hint = "Start the local stack with `mlopsctl dev start` (it generates the password), or set MLOPSCTL_AIRFLOW_PASSWORD."
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"No Airflow password is set and the local stack's password file {path} does not exist.",
            hint=hint,
        ) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"Cannot read the local stack's password file {path}: {type(exc).__name__}.", hint=hint
        ) from None
    value = data.get(username) if isinstance(data, dict) else None
    if not isinstance(value, str) or not value:
        raise ConfigError(
            f"The local stack's password file {path} has no entry for user {username!r}.", hint=hint
        )
    return value


def _public_url(url: str) -> str:
    """The URL without any user:password@ part, for messages."""
    parsed = urlparse(url)
    if parsed.username is None and parsed.password is None:
        return url.rstrip("/")
    netloc = parsed.hostname or ""
    if parsed.port:
        netloc += f":{parsed.port}"
    return parsed._replace(netloc=netloc).geturl().rstrip("/")


def _detail(resp: httpx.Response) -> Any:
    try:
        body = resp.json()
    except ValueError:
        return resp.text.strip()[:500] or resp.reason_phrase
    if isinstance(body, dict) and "detail" in body:
        return body["detail"]
    return body


def _detail_text(detail: Any) -> str:
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):  # FastAPI validation errors: summarise loc + msg, never echo `input`
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
                msg = item.get("msg", "invalid")
                parts.append(f"{loc}: {msg}" if loc else str(msg))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    if isinstance(detail, dict):
        for key in ("message", "reason", "detail"):
            if isinstance(detail.get(key), str):
                return detail[key]
    return json.dumps(detail, default=str)[:500]


def _retry_after(resp: httpx.Response | None) -> float | None:
    if resp is None:
        return None
    value = resp.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


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
        self._static_token = token if auth == "token" else None
        self._token: str | None = self._static_token
        self.timeout = timeout
        self.retries = max(0, int(retries))
        self.verify = verify
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.local_hint = is_local_url(base_url) if local_hint is None else local_hint
        self._transport = transport
        self._client: httpx.Client | None = None
        self._sleep: Callable[[float], None] = time.sleep

    # --- construction ---------------------------------------------------------------------------
    @classmethod
    def from_settings(cls, settings: Any) -> AirflowClient:
        """Build from Settings; for the local stack with no password set, reads <state>/airflow/passwords.json."""
        auth = settings.airflow_auth
        password = settings.airflow_password.get_secret_value() if settings.airflow_password else None
        token = settings.airflow_token.get_secret_value() if settings.airflow_token else None
        local_stack = is_local_url(settings.airflow_url, settings.airflow_port)
        if auth == "password" and password is None:
            if local_stack:
                password = read_local_password(settings.state, settings.airflow_username)
            else:
                raise ConfigError(
                    f"No Airflow password is set for {_public_url(settings.airflow_url)}.",
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
        )

    def __repr__(self) -> str:
        return f"AirflowClient(base_url={_public_url(self.base_url)!r}, auth={self.auth!r}, username={self.username!r})"

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
            kwargs: dict[str, Any] = {"base_url": self.base_url, "timeout": self.timeout, "verify": verify}
            if self._transport is not None:
                kwargs["transport"] = self._transport
            kwargs["headers"] = {"Accept": "application/json", "User-Agent": "mlopsctl"}
            self._client = httpx.Client(**kwargs)
        return self._client

    # --- core request machinery -----------------------------------------------------------------
    def _scrub(self, text: str, extra_secrets: tuple[str, ...] = ()) -> str:
        for secret in (self._password, self._token, self._static_token, *extra_secrets):
            if secret and len(secret) >= 3:
                text = text.replace(secret, "***")
        return text

    def _delay(self, attempt: int, resp: httpx.Response | None) -> float:
        after = _retry_after(resp)
        if after is not None:
            return min(after, MAX_RETRY_AFTER)
        base = min(self.backoff_max, self.backoff * (2 ** (attempt - 1)))
        return base * random.uniform(0.5, 1.0)

    def _unreachable(self, exc: httpx.TransportError) -> UnreachableError:
        url = _public_url(self.base_url)
        if isinstance(exc, httpx.TimeoutException):
            reason = f"timed out after {self.timeout:g} s"
        elif isinstance(exc, httpx.ConnectError):
            text = str(exc).lower()
            if "refused" in text:
                reason = "connection refused"
            elif (
                "name or service" in text or "nodename" in text or "getaddrinfo" in text or "resolve" in text
            ):
                reason = "host name not found"
            else:
                reason = "cannot connect"
        else:
            reason = type(exc).__name__
        if self.local_hint:
            return UnreachableError(
                f"Airflow is not reachable at {url} — run `mlopsctl dev start`.",
                hint=f"{reason.capitalize()}. `mlopsctl dev status` shows the local stack; "
                "or point MLOPSCTL_AIRFLOW_URL at another Airflow.",
            )
        return UnreachableError(
            f"Airflow is not reachable at {url} ({reason}).",
            hint="Check MLOPSCTL_AIRFLOW_URL / --airflow-url or the active context (`mlopsctl context`), "
            "and your network/VPN.",
        )

    def _fetch_token(self) -> str:
        assert self.auth == "password"
        resp = self._send_with_retries(
            "POST",
            "/auth/token",
            json={"username": self.username, "password": self._password},
            retry_status=True,
            retry_transport="all",
            with_auth=False,
        )
        if resp.status_code in (200, 201):
            try:
                token = resp.json()["access_token"]
            except (ValueError, KeyError, TypeError):
                raise ServerError(
                    f"Airflow at {_public_url(self.base_url)} answered /auth/token without an access_token.",
                    hint="Is MLOPSCTL_AIRFLOW_URL the Airflow api-server?",
                ) from None
            return str(token)
        if resp.status_code in (401, 403):
            raise AuthError(
                f"Airflow at {_public_url(self.base_url)} rejected the password for user {self.username!r}.",
                hint=(
                    "The local stack's password is in .mlopsctl/airflow/passwords.json (`mlopsctl dev start` writes it)."
                    if self.local_hint
                    else "Check MLOPSCTL_AIRFLOW_USERNAME / MLOPSCTL_AIRFLOW_PASSWORD."
                ),
            )
        if resp.status_code == 404:
            raise AuthError(
                f"Airflow at {_public_url(self.base_url)} has no /auth/token endpoint (password login not supported).",
                hint="Use a static token: MLOPSCTL_AIRFLOW_AUTH=token and MLOPSCTL_AIRFLOW_TOKEN.",
            )
        raise self._error(resp, "POST", "/auth/token")

    def _send_with_retries(
        self,
        method: str,
        path: str,
        *,
        params: Any = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        retry_status: bool,
        retry_transport: str,  # "all" (idempotent) | "connect" (only when nothing was sent)
        with_auth: bool,
    ) -> httpx.Response:
        attempt = 0
        refreshed = False
        while True:
            req_headers = dict(headers or {})
            if with_auth and self.auth != "none":
                if self._token is None:
                    self._token = self._fetch_token()
                req_headers["Authorization"] = f"Bearer {self._token}"
            resp: httpx.Response | None = None
            try:
                resp = self.http.request(method, path, params=params, json=json, headers=req_headers)
            except httpx.TransportError as exc:
                nothing_sent = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))
                if attempt < self.retries and (retry_transport == "all" or nothing_sent):
                    attempt += 1
                    self._sleep(self._delay(attempt, None))
                    continue
                raise self._unreachable(exc) from None
            if with_auth and self.auth == "password" and not refreshed and _token_rejected(resp):
                refreshed = True  # expired (or re-keyed) JWT: fetch a new one, once
                self._token = None
                continue
            if (
                retry_status
                and (resp.status_code >= 500 or resp.status_code == 429)
                and attempt < self.retries
            ):
                attempt += 1
                self._sleep(self._delay(attempt, resp))
                continue
            return resp

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Any = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        idempotent: bool | None = None,
        with_auth: bool = True,
        what: str | None = None,
        ok: tuple[int, ...] = (200, 201, 204),
        secrets_: tuple[str, ...] = (),
    ) -> httpx.Response:
        if idempotent is None:
            idempotent = method in ("GET", "HEAD", "DELETE", "PUT")
        resp = self._send_with_retries(
            method,
            path,
            params=params,
            json=json,
            headers=headers,
            retry_status=idempotent,
            retry_transport="all" if idempotent else "connect",
            with_auth=with_auth,
        )
        if resp.status_code in ok:
            return resp
        raise self._error(resp, method, path, what=what, secrets_=secrets_)

    def _error(
        self,
        resp: httpx.Response,
        method: str,
        path: str,
        *,
        what: str | None = None,
        secrets_: tuple[str, ...] = (),
    ) -> MlopsctlError:
        status = resp.status_code
        detail = self._scrub(_detail_text(_detail(resp)), secrets_)
        url = _public_url(self.base_url)
        if status == 400:
            return RejectedError(
                detail or f"Airflow rejected {method} {path} (400).", hint="Fix the request and retry."
            )
        if status == 401:
            if self.auth == "token":
                hint = "The token is invalid or expired: set a fresh MLOPSCTL_AIRFLOW_TOKEN."
            elif self.auth == "none":
                hint = "This Airflow needs credentials: set MLOPSCTL_AIRFLOW_AUTH=password or token."
            else:
                hint = "Check MLOPSCTL_AIRFLOW_USERNAME / MLOPSCTL_AIRFLOW_PASSWORD."
            return AuthError(
                f"Airflow at {url} refused the credentials ({detail or 'not authenticated'}).", hint=hint
            )
        if status == 403 and "jwt" in detail.lower():
            return AuthError(
                f"Airflow at {url} rejected the bearer token ({detail}).",
                hint="The token is invalid or expired: set a fresh MLOPSCTL_AIRFLOW_TOKEN."
                if self.auth == "token"
                else "Check MLOPSCTL_AIRFLOW_USERNAME / MLOPSCTL_AIRFLOW_PASSWORD.",
            )
        if status == 403:
            return AuthError(
                f"Airflow at {url} denied {method} {path}: {detail or 'forbidden'}.",
                hint=f"The user {self.username!r} lacks the permission; ask an Airflow admin."
                if self.auth == "password"
                else "The token lacks the permission for this action.",
            )
        if status == 404:
            message = f"{what} not found." if what else f"Not found: {method} {path}."
            return NotFoundError(
                message if not detail else f"{message} Airflow says: {detail}", hint=_hint_404(what)
            )
        if status == 409:
            return ConflictError(detail or f"Conflict: {method} {path}.", hint="It already exists.")
        if status == 422:
            return RejectedError(
                f"Airflow rejected the request to {path}: {detail}.",
                hint="This usually means a client/server version mismatch; re-run with --debug and report it.",
            )
        if status == 429:
            return ServerError(
                f"Airflow at {url} is rate limiting requests (429).", hint="Wait and try again."
            )
        if status >= 500:
            return ServerError(
                f"Airflow at {url} failed with {status} on {method} {path}"
                + (f": {detail}" if detail else "."),
                hint="Check the api-server log (`mlopsctl dev logs api-server` for the local stack) and retry.",
            )
        return RejectedError(f"Airflow answered {status} to {method} {path}: {detail}.")

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
        self, dag_id: str, conf: dict[str, Any], *, dag_run_id: str | None = None, note: str | None = None
    ) -> DagRun:
        """POST dagRuns with logical_date null. On 409 for our own dag_run_id, returns the existing run
        (idempotent retry after a lost response). 400 -> RejectedError carrying Airflow's message."""
        run_id = dag_run_id or new_run_id()
        body: dict[str, Any] = {"dag_run_id": run_id, "logical_date": None, "conf": dict(conf or {})}
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
            existing = self.get_run(dag_id, run_id)
        except NotFoundError:
            raise self._error(resp, "POST", path) from None
        if (existing.conf or {}) != body["conf"]:
            raise ConflictError(
                f"A run {run_id!r} of DAG {dag_id!r} already exists with a different conf.",
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


def _token_rejected(resp: httpx.Response) -> bool:
    """401, or the 403 "Invalid JWT token" Airflow answers when its JWT key changed (e.g. a re-created stack)."""
    if resp.status_code == 401:
        return True
    return resp.status_code == 403 and "jwt" in resp.text.lower()


def _hint_404(what: str | None) -> str:
    if what and what.startswith("DAG"):
        return "List the DAGs with `mlopsctl dags`; a new DAG file appears after the dag-processor parses it."
    if what and what.startswith("Run"):
        return "List recent runs with `mlopsctl status`."
    if what and what.startswith("Connection"):
        return "Create it with `mlopsctl connect`."
    return "Check the name/id and the Airflow URL."
