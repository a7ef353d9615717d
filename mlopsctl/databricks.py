"""Databricks glue: WorkspaceClient factory (unified auth), credential check, the Airflow connection
payload, and the upload of the job scripts and the jobs' wheel to a versioned workspace or volume path.

databricks-sdk is imported inside functions only (never at CLI import time). Secrets (tokens, client
secrets) stay in the SDK's Config and in the connection payload sent to Airflow; nothing here prints,
logs or writes them, and `masked()` is what any display gets. Databricks in depth: docs/databricks.md.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from mlopsctl.errors import (
    AuthError,
    ConfigError,
    NotFoundError,
    RejectedError,
    ServerError,
    UnreachableError,
)
from mlopsctl.settings import DEFAULT_EXPERIMENT_FOLDER

if TYPE_CHECKING:
    from databricks.sdk import WorkspaceClient

MASK = "***"

ACCEPTED_AUTH = (
    "Set one of: DATABRICKS_HOST + DATABRICKS_TOKEN (personal access token); "
    "DATABRICKS_HOST + DATABRICKS_CLIENT_ID + DATABRICKS_CLIENT_SECRET (OAuth M2M service principal); "
    "DATABRICKS_HOST + ARM_CLIENT_ID + ARM_CLIENT_SECRET + ARM_TENANT_ID (Azure service principal); "
    "or a ~/.databrickscfg profile (--profile NAME or DATABRICKS_CONFIG_PROFILE). "
    "For the Airflow workers' Azure managed identity: DATABRICKS_HOST + --azure-managed-identity (ARM_USE_MSI=true)."
)

# Auth types whose credentials can be handed to Airflow's Databricks provider as a connection (databricks-sdk's
# Config.auth_type names; AZURE_MSI is ours: the SDK has no managed-identity sign-in, see managed_identity_config).
_PAT = "pat"
_OAUTH_M2M = "oauth-m2m"
_AZURE_SP = "azure-client-secret"
AZURE_MSI = "azure-msi"
#: what Airflow needs installed for a connection that signs in through Microsoft Entra ID
AZURE_PROVIDER_EXTRA = "apache-airflow-providers-databricks[azure-identity]"


def _quiet_sdk_logging() -> None:
    """The SDK warns through logging (e.g. about host metadata); keep that off the user's terminal."""
    sdk_log = logging.getLogger("databricks.sdk")
    if not any(isinstance(h, logging.NullHandler) for h in sdk_log.handlers):
        sdk_log.addHandler(logging.NullHandler())
    sdk_log.propagate = False


RETRY_TIMEOUT_SECONDS = 60


def workspace_client(profile: str | None = None, *, retry_timeout: int = RETRY_TIMEOUT_SECONDS) -> WorkspaceClient:
    """A WorkspaceClient from databricks-sdk's unified auth (env vars, then ~/.databrickscfg).

    `retry_timeout` caps the SDK's retries of 429/5xx/connection errors (its default, 300 s, leaves a
    CLI hanging for five minutes on a wrong host).

    Raises ConfigError naming the accepted credential forms when nothing (or only part) is configured.
    """
    _quiet_sdk_logging()
    import requests
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.config import Config
    from databricks.sdk.errors import DatabricksError

    try:
        kwargs: dict[str, Any] = {"retry_timeout_seconds": retry_timeout}
        if profile:
            kwargs["profile"] = profile
        client = WorkspaceClient(config=Config(**kwargs))
    except ValueError as exc:  # the SDK's "default auth: cannot configure default credentials" et al.
        raise ConfigError(
            f"Databricks credentials are missing or incomplete ({_clean_sdk_message(str(exc))}).",
            hint=ACCEPTED_AUTH,
        ) from None
    except (DatabricksError, requests.RequestException, TimeoutError) as exc:  # e.g. OAuth discovery failing
        raise _map_sdk_error(exc, host=None) from None
    if not client.config.host:
        raise ConfigError("No Databricks workspace host is configured.", hint=ACCEPTED_AUTH)
    return client


def _clean_sdk_message(message: str) -> str:
    """First line of an SDK config error, without its trailing dump of the config (which masks secrets,
    but we do not need it) or its long doc URL."""
    first = message.splitlines()[0] if message else "unknown error"
    first = first.split(". Config:", 1)[0].split(". Env:", 1)[0]
    return first.replace("default auth: ", "").rstrip(".")


def _map_sdk_error(exc: BaseException, host: str | None) -> Exception:
    """databricks-sdk/requests exceptions -> mlopsctl's typed errors (never with a secret in them)."""
    from databricks.sdk import errors as dbx_errors

    where = f" at {host}" if host else ""
    message = _clean_sdk_message(str(exc))
    if isinstance(exc, (dbx_errors.Unauthenticated, dbx_errors.PermissionDenied)):
        return AuthError(
            f"Databricks rejected the credentials{where}: {message}.",
            hint="Check DATABRICKS_TOKEN (or the OAuth client id/secret or profile); tokens expire.",
        )
    if isinstance(exc, dbx_errors.NotFound):
        return NotFoundError(f"Databricks{where}: {message}.")
    if isinstance(exc, (dbx_errors.BadRequest, dbx_errors.InvalidParameterValue, dbx_errors.ResourceAlreadyExists)):
        return RejectedError(f"Databricks{where} refused the request: {message}.")
    if isinstance(exc, dbx_errors.DatabricksError):
        status = getattr(exc, "status_code", None) or getattr(getattr(exc, "response", None), "status_code", None)
        if status is not None and int(status) >= 500 or isinstance(exc, dbx_errors.TooManyRequests):
            return ServerError(f"Databricks{where} failed after retries: {message}.")
        return RejectedError(f"Databricks{where}: {message}.")
    import requests

    if isinstance(exc, (requests.ConnectionError, requests.Timeout, TimeoutError, ConnectionError)):
        return UnreachableError(
            f"Cannot reach the Databricks workspace{where}.",
            hint="Check DATABRICKS_HOST and your network/VPN.",
        )
    if isinstance(exc, ValueError):
        return ConfigError(f"Databricks configuration problem: {message}.", hint=ACCEPTED_AUTH)
    return ServerError(f"Databricks{where}: {type(exc).__name__}: {message}.")


@dataclass(frozen=True)
class Identity:
    host: str
    user_name: str
    display_name: str | None
    user_id: str | None
    auth_type: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "user_name": self.user_name,
            "display_name": self.display_name,
            "user_id": self.user_id,
            "auth_type": self.auth_type,
        }


def whoami(client: WorkspaceClient) -> Identity:
    """Verify the credentials with `current_user.me` (GET /api/2.0/preview/scim/v2/Me)."""
    host = client.config.host
    try:
        me = client.current_user.me()
    except Exception as exc:  # noqa: BLE001 - mapped to typed errors
        raise _map_sdk_error(exc, host) from None
    return Identity(
        host=host,
        user_name=me.user_name or "",
        display_name=me.display_name,
        user_id=me.id,
        auth_type=client.config.auth_type or "",
    )


# --- the Airflow connection ----------------------------------------------------------------------------
def managed_identity_config(profile: str | None = None, *, retry_timeout: int = RETRY_TIMEOUT_SECONDS) -> Any:
    """The workspace settings for a managed-identity connection, loaded by databricks-sdk from the environment
    and ~/.databrickscfg as always (host, ARM_CLIENT_ID of a user-assigned identity, DATABRICKS_AZURE_RESOURCE_ID),
    without signing in: the identity belongs to the Azure VMs the Airflow workers run on, and databricks-sdk has
    no managed-identity sign-in. Its `auth_type` is AZURE_MSI."""
    _quiet_sdk_logging()
    from databricks.sdk.config import Config
    from databricks.sdk.credentials_provider import CredentialsStrategy

    class _NotSignedIn(CredentialsStrategy):
        def auth_type(self) -> str:
            return AZURE_MSI

        def __call__(self, cfg: Any) -> Any:
            return dict  # never used: nothing is requested with this config

    kwargs: dict[str, Any] = {"retry_timeout_seconds": retry_timeout, "auth_type": AZURE_MSI}
    if profile:
        kwargs["profile"] = profile
    try:
        config = Config(credentials_strategy=_NotSignedIn(), **kwargs)
    except ValueError as exc:
        raise ConfigError(f"Databricks settings are incomplete ({_clean_sdk_message(str(exc))}).",
                          hint=ACCEPTED_AUTH) from None
    if not config.host:
        raise ConfigError("No Databricks workspace host is configured for the managed identity.",
                          hint="Set DATABRICKS_HOST to the workspace URL (https://adb-<id>.<n>.azuredatabricks.net).")
    return config


def _azure_cloud(config: Any) -> str | None:
    """The Azure cloud of the workspace (PUBLIC, USGOVERNMENT, CHINA) as databricks-sdk derives it, if Azure."""
    try:
        environment = getattr(config, "arm_environment", None)
    except Exception:  # noqa: BLE001 - a host the SDK cannot place: not known to be another cloud
        environment = None
    name = getattr(environment, "name", None) or getattr(config, "azure_environment", None)
    return str(name).upper() if name else None


def _azure_extra(config: Any) -> dict[str, Any]:
    """Extras every Entra ID connection may carry: the workspace's Azure resource id, for an identity that is
    not a workspace user (the provider then sends the management-token headers)."""
    resource_id = getattr(config, "azure_workspace_resource_id", None)
    return {"azure_resource_id": resource_id} if resource_id else {}


def connection_payload(config: Any, conn_id: str, *, insecure: bool = False) -> dict[str, Any]:
    """The body for Airflow's POST/PATCH /api/v2/connections, in the shape the Databricks provider reads.

    `config` is a databricks.sdk Config (host, auth_type and the credential fields of that type):

    * PAT (`pat`): token as `password`, login empty.
    * OAuth M2M (`oauth-m2m`): client id as `login`, secret as `password`, extra `service_principal_oauth`.
    * Azure service principal (`azure-client-secret`): ARM client id as `login`, client secret as `password`,
      extra `azure_tenant_id` (+ `azure_resource_id`); the provider signs in at the public Entra ID endpoint,
      so another Azure cloud is refused.
    * Azure managed identity (AZURE_MSI, see `managed_identity_config`): no secret (`password` emptied, so an
      update drops an earlier token), extra `use_azure_managed_identity` (+ `azure_managed_identity_client_id`
      for a user-assigned identity, + `azure_resource_id`).

    `extra` is a JSON *string*, as the REST API wants. The provider keeps only the hostname of `host` and
    defaults to https, so a plain-HTTP host (local tests only) needs `schema: http` + `port`, allowed only
    with `insecure=True`. Anything else the provider cannot take is a ConfigError.
    """
    host = (config.host or "").rstrip("/")
    parsed = urlparse(host if "://" in host else f"https://{host}")
    if not parsed.hostname:
        raise ConfigError(f"Databricks host {host!r} is not a URL.", hint=ACCEPTED_AUTH)
    payload: dict[str, Any] = {
        "connection_id": conn_id,
        "conn_type": "databricks",
        "description": "Databricks workspace (written by mlopsctl connect databricks)",
        "host": f"https://{parsed.hostname}" if parsed.scheme == "https" else parsed.hostname,
        # Empty (not None) so that an update clears what an earlier auth kind set: the REST client drops
        # None fields, and the provider treats "" like unset (login "" + password = token auth).
        "login": "",
        "password": None,
        "schema": "",
        "port": None,
        "extra": "{}",
    }
    if parsed.scheme == "http":
        if not insecure:
            raise ConfigError(
                f"Databricks host {host} uses plain HTTP.",
                hint="Real workspaces are https://. For a local test server pass --insecure.",
            )
        payload.update(schema="http", port=parsed.port or 80)
    elif parsed.port and parsed.port != 443:
        payload["port"] = parsed.port
    auth_type = config.auth_type or ""
    if auth_type == _PAT and config.token:
        payload["password"] = config.token
    elif auth_type == _OAUTH_M2M and config.client_id and config.client_secret:
        payload.update(login=config.client_id, password=config.client_secret,
                       extra=json.dumps({"service_principal_oauth": True}))
    elif auth_type == _AZURE_SP and config.azure_client_id and config.azure_client_secret:
        tenant = getattr(config, "azure_tenant_id", None)
        if not tenant:
            raise ConfigError(
                "The Azure service principal has no tenant id, which Airflow's Databricks provider needs.",
                hint="Set ARM_TENANT_ID (azure_tenant_id in a ~/.databrickscfg profile).",
            )
        cloud = _azure_cloud(config)
        if cloud not in (None, "PUBLIC"):
            raise ConfigError(
                f"The workspace is in the Azure {cloud} cloud, but Airflow's Databricks provider signs Azure "
                "service principals in at the public Entra ID endpoint only.",
                hint="Use a Databricks personal access token or an OAuth M2M service principal "
                     "(DATABRICKS_CLIENT_ID + DATABRICKS_CLIENT_SECRET) for this workspace.",
            )
        payload.update(login=config.azure_client_id, password=config.azure_client_secret,
                       extra=json.dumps({"azure_tenant_id": tenant, **_azure_extra(config)}))
    elif auth_type == AZURE_MSI:
        extra: dict[str, Any] = {"use_azure_managed_identity": True}
        if getattr(config, "azure_client_id", None):
            extra["azure_managed_identity_client_id"] = config.azure_client_id
        payload.update(password="", extra=json.dumps({**extra, **_azure_extra(config)}))
    else:
        raise ConfigError(
            f"Databricks auth type {auth_type or 'unknown'!r} cannot be handed to Airflow.",
            hint="Airflow needs a personal access token, an OAuth M2M service principal, an Azure service "
                 "principal or the workers' Azure managed identity: " + ACCEPTED_AUTH,
        )
    return payload


def needs_azure_identity(payload: dict[str, Any]) -> bool:
    """The connection signs in through Microsoft Entra ID: Airflow needs AZURE_PROVIDER_EXTRA installed."""
    try:
        extra = json.loads(payload.get("extra") or "{}")
    except ValueError:
        return False
    return bool(extra.get("azure_tenant_id") or extra.get("use_azure_managed_identity"))


def masked(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload safe to print: password masked, empty fields dropped."""
    out = {k: v for k, v in payload.items() if v not in (None, "", "{}")}
    if out.get("password"):
        out["password"] = MASK
    return out


# --- job files -------------------------------------------------------------------------------------------
def job_files(src: Path) -> list[Path]:
    """Every *.py under src (sorted, caches skipped): the entry scripts and the modules they import."""
    if not src.is_dir():
        raise NotFoundError(f"No spark_jobs directory at {src}.", hint="Run from the project root or pass --src.")
    files = sorted(p for p in src.rglob("*.py") if "__pycache__" not in p.parts)
    if not files:
        raise NotFoundError(f"No *.py job files in {src}.")
    return files


def deploy_files(src: Path, wheel: Path, packaged: Collection[str]) -> dict[str, Path]:
    """What `deploy jobs` uploads, by path relative to the versioned folder: src's job files except the
    modules the jobs' wheel carries (``packaged``: a task imports those from the installed wheel, so none
    may sit in its working directory), and the wheel itself, under its own file name."""
    files = {p.relative_to(src).as_posix(): p for p in job_files(src)}
    scripts = {rel: path for rel, path in files.items() if rel not in packaged}
    if not scripts:
        raise NotFoundError(f"No job scripts in {src}, only the modules of the jobs' wheel ({', '.join(files)}).")
    return {**scripts, wheel.name: wheel}


def content_version(files: Mapping[str, Path], prefix: str = "") -> str:
    """A deterministic version for a set of files (relative name -> local file):
    `<prefix>-<sha256 of names+contents, 12 hex>`."""
    digest = hashlib.sha256()
    for rel in sorted(files):
        digest.update(rel.encode() + b"\0" + files[rel].read_bytes() + b"\0")
    short = digest.hexdigest()[:12]
    return f"{prefix}-{short}" if prefix else short


def cluster_libraries(client: WorkspaceClient, cluster_id: str) -> list[dict[str, Any]]:
    """The Libraries API's status of a cluster's libraries, as ``LibraryFullStatus`` dicts (library, status)."""
    try:
        return [status.as_dict() for status in client.libraries.cluster_status(cluster_id)]
    except Exception as exc:  # noqa: BLE001 - mapped to typed errors
        raise _map_sdk_error(exc, client.config.host) from None


def validate_target(target: str) -> str:
    """`/Workspace/...` (workspace files) or `/Volumes/<catalog>/<schema>/<volume>/...` (UC volume)."""
    target = target.rstrip("/")
    parts = [p for p in target.split("/") if p]
    if target.startswith("/Workspace/") and len(parts) >= 2:
        return target
    if target.startswith("/Volumes/") and len(parts) >= 4:
        return target
    raise ConfigError(
        f"Upload target {target!r} is neither /Workspace/... nor /Volumes/<catalog>/<schema>/<volume>/....",
        hint="e.g. --to /Workspace/Shared/mlopsctl/jobs or --to /Volumes/main/mlops/jobs",
    )


def validate_experiment_folder(folder: str) -> str:
    """A workspace folder under /Shared/ or /Users/ (experiments are workspace paths; only admins can
    create top-level folders). The `/Workspace` prefix is accepted and dropped, as MLflow names omit it."""
    folder = folder.rstrip("/").removeprefix("/Workspace")
    parts = [p for p in folder.split("/") if p]
    if folder.startswith(("/Shared/", "/Users/")) and len(parts) >= 2 and ".." not in parts:
        return folder
    raise ConfigError(
        f"Experiment folder {folder!r} is not under /Shared/ or /Users/: on Databricks an MLflow experiment is a "
        "workspace path, and only admins can create top-level folders.",
        hint=f"set MLOPSCTL_DATABRICKS_EXPERIMENT_PREFIX (here and on the Airflow workers), e.g. "
             f"{DEFAULT_EXPERIMENT_FOLDER} or /Users/<you>/mlopsctl",
    )


def ensure_experiment_folder(client: WorkspaceClient, folder: str) -> str:
    """Create the experiments' parent folder (mkdirs: nothing happens when it exists)."""
    folder = validate_experiment_folder(folder)
    try:
        client.workspace.mkdirs(folder)
    except Exception as exc:  # noqa: BLE001 - mapped to typed errors
        raise _map_sdk_error(exc, client.config.host) from None
    return folder


def _with_throttle_retries(call: Any, *, attempts: int = 6, max_sleep: float = 10.0) -> Any:
    """Run `call()` again on 429/503. databricks-sdk does not retry `workspace.upload` (a multipart POST:
    its retry loop is disabled for non-seekable bodies), so a throttled upload would fail outright."""
    from databricks.sdk.errors import DatabricksError
    from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

    def throttled(exc: BaseException) -> bool:  # the SDK sets retry_after_secs for 429 and 503 only
        return isinstance(exc, DatabricksError) and getattr(exc, "retry_after_secs", None) is not None

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        return min(max_sleep, float(getattr(exc, "retry_after_secs", None) or state.attempt_number))

    retrying = Retrying(stop=stop_after_attempt(attempts), retry=retry_if_exception(throttled), wait=wait,
                        reraise=True)
    return retrying(call)


def upload_jobs(client: WorkspaceClient, files: Mapping[str, Path], target: str, version: str) -> tuple[str, list[str]]:
    """Upload ``files`` (relative name -> local file) to `<target>/<version>/`; returns (that path, uploaded
    file paths, sorted).

    Workspace targets use `workspace.mkdirs` + `workspace.upload(format=AUTO)` (files keep their name; the
    API is addressed without the `/Workspace` prefix, the job's python_file with it). Volume targets use
    `files.upload` (parents are created by the Files API).
    """
    from databricks.sdk.service.workspace import ImportFormat

    target = validate_target(target)
    dest = f"{target}/{version}"
    uploaded: list[str] = []
    host = client.config.host
    try:
        if dest.startswith("/Volumes/"):
            for rel in sorted(files):
                remote = f"{dest}/{rel}"
                data = files[rel].read_bytes()
                _with_throttle_retries(lambda remote=remote, data=data: client.files.upload(
                    remote, io.BytesIO(data), overwrite=True))
                uploaded.append(remote)
        else:
            api_dest = dest.removeprefix("/Workspace")
            made: set[str] = set()
            for rel in sorted(files):
                parent = f"{api_dest}/{rel}".rsplit("/", 1)[0]
                if parent not in made:
                    client.workspace.mkdirs(parent)
                    made.add(parent)
                data = files[rel].read_bytes()
                _with_throttle_retries(lambda remote=f"{api_dest}/{rel}", data=data: client.workspace.upload(
                    remote, io.BytesIO(data), format=ImportFormat.AUTO, overwrite=True))
                uploaded.append(f"{dest}/{rel}")
    except Exception as exc:  # noqa: BLE001 - mapped to typed errors
        raise _map_sdk_error(exc, host) from None
    return dest, uploaded
