"""Bearer auth for the Airflow REST API as an `httpx.Auth` flow.

With a username and password, the first request logs in (`POST /auth/token` -> JWT) and a request the
server answers 401 (or 403 "Invalid JWT", after a key change) is sent again once with a fresh token.
With a static token, that token is sent and never refreshed.
"""

from __future__ import annotations

from collections.abc import Generator

import httpx

from mlopsctl.airflow.errors import login_error, token_rejected
from mlopsctl.errors import ServerError

LOGIN_PATH = "/auth/token"


class LoginUnavailable(Exception):
    """`POST /auth/token` answered 5xx/429: retryable like any idempotent request."""

    def __init__(self, response: httpx.Response):
        super().__init__(f"login answered {response.status_code}")
        self.response = response


class BearerAuth(httpx.Auth):
    requires_response_body = True  # the 403 "Invalid JWT" check reads the body

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        local: bool = False,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.username = username
        self._password = password
        self._local = local
        self.can_login = password is not None and token is None

    def _login_request(self, request: httpx.Request) -> httpx.Request:
        return httpx.Request(
            "POST",
            self.base_url + LOGIN_PATH,
            json={"username": self.username, "password": self._password},
            headers={"Accept": "application/json", "User-Agent": "mlopsctl"},
            extensions=dict(request.extensions),  # the client's timeout
        )

    def _read_token(self, resp: httpx.Response) -> str:
        if resp.status_code in (200, 201):
            try:
                return str(resp.json()["access_token"])
            except (ValueError, KeyError, TypeError):
                raise ServerError(
                    f"Airflow at {self.base_url} answered {LOGIN_PATH} without an access_token.",
                    hint="Is MLOPSCTL_AIRFLOW_URL the Airflow api-server?",
                ) from None
        if resp.status_code >= 500 or resp.status_code == 429:
            raise LoginUnavailable(resp)
        error = login_error(resp, self.base_url, self.username, local=self._local)
        if error is not None:
            raise error
        raise LoginUnavailable(resp)  # mapped by the client like any other answer

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self.token is None and self.can_login:
            self.token = self._read_token((yield self._login_request(request)))
        request.headers["Authorization"] = f"Bearer {self.token}"
        response = yield request
        if self.can_login and token_rejected(response):  # expired (or re-keyed) JWT: log in again, once
            self.token = self._read_token((yield self._login_request(request)))
            again = httpx.Request(request.method, request.url, headers=request.headers, content=request.content,
                                  extensions=dict(request.extensions))
            again.headers["Authorization"] = f"Bearer {self.token}"
            yield again
