"""Airflow HTTP answers -> mlopsctl.errors types, each with one message and a hint; secrets never appear."""

from __future__ import annotations

import email.utils
import json
from datetime import UTC, datetime
from urllib.parse import urlparse

import httpx

from mlopsctl.errors import (
    AuthError,
    ConflictError,
    MlopsctlError,
    NotFoundError,
    RejectedError,
    ServerError,
    UnreachableError,
)


def public_url(url: str) -> str:
    """The URL without any user:password@ part, for messages."""
    parsed = urlparse(url)
    if parsed.username is None and parsed.password is None:
        return url.rstrip("/")
    netloc = parsed.hostname or ""
    if parsed.port:
        netloc += f":{parsed.port}"
    return parsed._replace(netloc=netloc).geturl().rstrip("/")


def scrub(text: str, secrets: tuple[str | None, ...]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, "***")
    return text


def detail_text(resp: httpx.Response) -> str:
    """The server's reason: FastAPI's `detail` (validation errors summarised as loc + msg, never `input`)."""
    try:
        body = resp.json()
    except ValueError:
        return resp.text.strip()[:500] or resp.reason_phrase
    detail = body["detail"] if isinstance(body, dict) and "detail" in body else body
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
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


def retry_after(resp: httpx.Response | None) -> float | None:
    """Seconds asked for by a Retry-After header (delta-seconds or HTTP date), if any."""
    value = resp.headers.get("Retry-After") if resp is not None else None
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


def token_rejected(resp: httpx.Response) -> bool:
    """401, or the 403 "Invalid JWT token" Airflow answers when its JWT key changed (e.g. a re-created stack)."""
    if resp.status_code == 401:
        return True
    return resp.status_code == 403 and "jwt" in resp.text.lower()


def unreachable(exc: httpx.TransportError, base_url: str, timeout: float, *, local: bool) -> UnreachableError:
    url = public_url(base_url)
    if isinstance(exc, httpx.TimeoutException):
        reason = f"timed out after {timeout:g} s"
    elif isinstance(exc, httpx.ConnectError):
        text = str(exc).lower()
        if "refused" in text:
            reason = "connection refused"
        elif any(s in text for s in ("name or service", "nodename", "getaddrinfo", "resolve")):
            reason = "host name not found"
        else:
            reason = "cannot connect"
    else:
        reason = type(exc).__name__
    if local:
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


def login_error(resp: httpx.Response, base_url: str, username: str | None, *, local: bool) -> MlopsctlError | None:
    """The error of a failed `POST /auth/token` (None for answers mapped like any request's)."""
    url = public_url(base_url)
    if resp.status_code in (401, 403):
        return AuthError(
            f"Airflow at {url} rejected the password for user {username!r}.",
            hint=(
                "`mlopsctl dev status --show-password` prints the local stack's password (`mlopsctl dev start` "
                "generates it)."
                if local
                else "Check MLOPSCTL_AIRFLOW_USERNAME / MLOPSCTL_AIRFLOW_PASSWORD."
            ),
        )
    if resp.status_code == 404:
        return AuthError(
            f"Airflow at {url} has no /auth/token endpoint (password login not supported).",
            hint="Use a static token: MLOPSCTL_AIRFLOW_AUTH=token and MLOPSCTL_AIRFLOW_TOKEN.",
        )
    return None


def _hint_404(what: str | None) -> str:
    if what and what.startswith("DAG"):
        return "List the DAGs with `mlopsctl dags`; a new DAG file appears after the dag-processor parses it."
    if what and what.startswith("Run"):
        return "List recent runs with `mlopsctl status`."
    if what and what.startswith("Connection"):
        return "Create it with `mlopsctl connect`."
    return "Check the name/id and the Airflow URL."


def _credentials_hint(auth: str) -> str:
    if auth == "token":
        return "The token is invalid or expired: set a fresh MLOPSCTL_AIRFLOW_TOKEN."
    if auth == "none":
        return "This Airflow needs credentials: set MLOPSCTL_AIRFLOW_AUTH=password or token."
    return "Check MLOPSCTL_AIRFLOW_USERNAME / MLOPSCTL_AIRFLOW_PASSWORD."


def http_error(
    resp: httpx.Response,
    method: str,
    path: str,
    *,
    base_url: str,
    auth: str,
    username: str | None,
    what: str | None = None,
    secrets: tuple[str | None, ...] = (),
) -> MlopsctlError:
    """The typed error for an unexpected answer to `method path` (`what` names the object, e.g. "DAG 'x'")."""
    status = resp.status_code
    detail = scrub(detail_text(resp), secrets)
    url = public_url(base_url)
    if status == 400:
        return RejectedError(detail or f"Airflow rejected {method} {path} (400).", hint="Fix the request and retry.")
    if status == 401:
        return AuthError(
            f"Airflow at {url} refused the credentials ({detail or 'not authenticated'}).",
            hint=_credentials_hint(auth),
        )
    if status == 403 and "jwt" in detail.lower():
        return AuthError(
            f"Airflow at {url} rejected the bearer token ({detail}).",
            hint=_credentials_hint("token" if auth == "token" else "password"),
        )
    if status == 403:
        return AuthError(
            f"Airflow at {url} denied {method} {path}: {detail or 'forbidden'}.",
            hint=f"The user {username!r} lacks the permission; ask an Airflow admin."
            if auth == "password"
            else "The token lacks the permission for this action.",
        )
    if status == 404:
        message = f"{what} not found." if what else f"Not found: {method} {path}."
        return NotFoundError(message if not detail else f"{message} Airflow says: {detail}", hint=_hint_404(what))
    if status == 409:
        return ConflictError(detail or f"Conflict: {method} {path}.", hint="It already exists.")
    if status == 422:
        return RejectedError(
            f"Airflow rejected the request to {path}: {detail}.",
            hint="This usually means a client/server version mismatch; re-run with --debug and report it.",
        )
    if status == 429:
        return ServerError(f"Airflow at {url} is rate limiting requests (429).", hint="Wait and try again.")
    if status >= 500:
        return ServerError(
            f"Airflow at {url} failed with {status} on {method} {path}" + (f": {detail}" if detail else "."),
            hint="Check the api-server log (`mlopsctl dev logs api-server` for the local stack) and retry.",
        )
    return RejectedError(f"Airflow answered {status} to {method} {path}: {detail}.")
