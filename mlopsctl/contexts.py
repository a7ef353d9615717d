"""Named Airflow/MLflow targets ("contexts"), stored in a small TOML file in the user config dir.

The file never holds a secret: a context names the environment variable that carries its bearer token
(`token_env`), and passwords/tokens may also live in the OS keyring when the optional `keyring` package
is installed. Settings pull a context in through `ContextSettingsSource` (precedence: flag > env >
.env > context > default).

File: `$MLOPSCTL_CONFIG_DIR/contexts.toml`, else `$XDG_CONFIG_HOME/mlopsctl/contexts.toml`, else
`~/.config/mlopsctl/contexts.toml`.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import PydanticBaseSettingsSource

from mlopsctl.errors import ConfigError, InputError, MlopsctlError

KEYRING_SERVICE = "mlopsctl"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def tracking_uri(value: str) -> str:
    """An MLflow tracking URI as mlopsctl accepts it, from a context or from any other source of Settings:
    http(s)://host[:port] (returned without its trailing slash), `databricks[://profile]`, `databricks-uc`, or
    a file:/sqlite: URI. Anything else is a ValueError saying what is accepted."""
    if value == "databricks" or value.startswith(("databricks://", "databricks-uc")):
        return value
    parsed = urlparse(value)
    if parsed.scheme in ("http", "https") and parsed.hostname:
        return value.rstrip("/")
    if parsed.scheme in ("file", "sqlite"):
        return value
    raise ValueError(f"must be http(s)://host[:port], databricks, or file:/sqlite: URI, got {value!r}")


class Context(BaseModel):
    """One named target. Everything here is safe to store in a plain file."""

    model_config = ConfigDict(extra="forbid")

    airflow_url: str
    auth: Literal["password", "token", "none"] = "password"
    username: str | None = None
    token_env: str | None = Field(default=None, description="Env var holding the bearer token.")
    mlflow_tracking_uri: str | None = None
    verify_tls: bool = True
    ca_bundle: str | None = None
    description: str | None = None

    @field_validator("airflow_url")
    @classmethod
    def _url(cls, value: str) -> str:
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"airflow_url must be an http(s):// URL with a host, got {value!r}")
        if parsed.username or parsed.password:
            raise ValueError("airflow_url must not carry credentials (user:password@)")
        return value.rstrip("/")

    @field_validator("token_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME_RE.match(value):
            raise ValueError(f"token_env must be an environment variable name, got {value!r}")
        return value

    @property
    def insecure_transport(self) -> bool:
        """True when credentials would travel over plain HTTP to a non-loopback host."""
        parsed = urlparse(self.airflow_url)
        return (
            self.auth != "none"
            and parsed.scheme == "http"
            and parsed.hostname not in ("127.0.0.1", "localhost", "::1")
        )


class ContextFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    current: str | None = None
    contexts: dict[str, Context] = Field(default_factory=dict)


# --- location --------------------------------------------------------------------------------------


def config_dir() -> Path:
    explicit = os.environ.get("MLOPSCTL_CONFIG_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".config"
    return base / "mlopsctl"


def contexts_path() -> Path:
    return config_dir() / "contexts.toml"


def validate_name(name: str, error: type[MlopsctlError] = ConfigError) -> str:
    """`name`, if it can name a context; else `error`: ConfigError for a name read from the settings, InputError
    (exit USAGE) for one typed as an argument."""
    if not _NAME_RE.match(name):
        raise error(
            f"Invalid context name {name!r}.",
            hint="Use letters, digits, '.', '_' or '-' (max 63 characters), starting with a letter or digit.",
        )
    return name


# --- read / write ----------------------------------------------------------------------------------


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()))
    msg = err.get("msg", "invalid").removeprefix("Value error, ")
    if err.get("type") == "extra_forbidden":
        msg = "unknown key (secrets never go in this file: use token_env or the keyring)"
    return f"{loc}: {msg}" if loc else msg


def load(path: Path | None = None) -> ContextFile:
    """Read the contexts file; a missing file is an empty one."""
    path = path or contexts_path()
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ContextFile()
    except OSError as exc:
        raise ConfigError(f"Cannot read {path}: {exc.strerror}.") from None
    try:
        data = tomllib.loads(raw)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}.", hint="Fix or delete the file.") from None
    try:
        return ContextFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            f"{path}: {_first_error(exc)}.", hint="Fix the entry or re-create it with `mlopsctl context add`."
        ) from None


HEADER = (
    "# mlopsctl contexts (`mlopsctl context --help`). No secrets here: tokens come from\n"
    "# the env var named by token_env, MLOPSCTL_AIRFLOW_PASSWORD, or the OS keyring.\n\n"
)


def dumps(cfg: ContextFile) -> str:
    import tomli_w

    data: dict[str, Any] = {}
    if cfg.current:
        data["current"] = cfg.current
    data["contexts"] = {name: cfg.contexts[name].model_dump(exclude_none=True) for name in sorted(cfg.contexts)}
    return HEADER + tomli_w.dumps(data)


def save(cfg: ContextFile, path: Path | None = None) -> Path:
    """Write atomically; the directory is 0700 and the file 0600."""
    path = path or contexts_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=".contexts-", suffix=".toml", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(dumps(cfg))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def unknown_context(name: str, cfg: ContextFile) -> ConfigError:
    known = ", ".join(sorted(cfg.contexts)) or "none defined"
    return ConfigError(
        f"Unknown context {name!r} (known: {known}).",
        hint="List them with `mlopsctl context list`; add one with `mlopsctl context add NAME --airflow-url URL`.",
    )


def get(name: str, cfg: ContextFile | None = None) -> Context:
    cfg = cfg if cfg is not None else load()
    try:
        return cfg.contexts[name]
    except KeyError:
        raise unknown_context(name, cfg) from None


# --- secrets (env var or OS keyring; never the file) ----------------------------------------------


def _keyring():
    try:
        import keyring  # optional dependency
    except ImportError:
        return None
    return keyring


def keyring_available() -> bool:
    return _keyring() is not None


def _keyring_user(name: str, kind: str, username: str | None = None) -> str:
    return f"{name}:token" if kind == "token" else f"{name}:password:{username or 'admin'}"


def keyring_get(name: str, kind: str, username: str | None = None) -> str | None:
    kr = _keyring()
    if kr is None:
        return None
    try:
        return kr.get_password(KEYRING_SERVICE, _keyring_user(name, kind, username))
    except Exception:  # noqa: BLE001 - a locked/absent keyring backend is "no secret", not a crash
        return None


def keyring_set(name: str, kind: str, secret: str, username: str | None = None) -> None:
    kr = _keyring()
    if kr is None:
        raise ConfigError(
            "The OS keyring is not available (the optional `keyring` package is not installed).",
            hint="`pip install keyring`, or export the secret in the env var the context names.",
        )
    try:
        kr.set_password(KEYRING_SERVICE, _keyring_user(name, kind, username), secret)
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"Could not store the secret in the keyring: {type(exc).__name__}.") from None


def keyring_delete(name: str, username: str | None = None) -> None:
    kr = _keyring()
    if kr is None:
        return
    for kind in ("token", "password"):
        with contextlib.suppress(Exception):  # nothing stored, or no usable backend
            kr.delete_password(KEYRING_SERVICE, _keyring_user(name, kind, username))


def token_source(name: str, ctx: Context) -> str | None:
    """Where this context's bearer token would come from right now ('$VAR', 'keyring'), or None."""
    if ctx.token_env and os.environ.get(ctx.token_env):
        return f"${ctx.token_env}"
    if keyring_get(name, "token"):
        return "keyring"
    return None


def password_source(name: str, ctx: Context) -> str | None:
    if os.environ.get("MLOPSCTL_AIRFLOW_PASSWORD"):
        return "$MLOPSCTL_AIRFLOW_PASSWORD"
    if keyring_get(name, "password", ctx.username):
        return "keyring"
    return None


# --- the `context` commands' work (they parse flags and print; this reads, checks and writes) -----------

#: the fields `context show` prints, in order (those a context has)
SHOWN_FIELDS = (
    "name",
    "current",
    "airflow_url",
    "auth",
    "username",
    "token_env",
    "token",
    "token_source",
    "password",
    "password_source",
    "mlflow_tracking_uri",
    "verify_tls",
    "ca_bundle",
    "description",
)


def describe(name: str, ctx: Context, current: str | None) -> dict[str, Any]:
    """A printable view of a context: secret *sources* and whether they are set, never the values."""
    data: dict[str, Any] = {"name": name, "current": name == current, **ctx.model_dump()}
    if ctx.auth == "token":
        source = token_source(name, ctx)
        data["token"] = "****" if source else None
        data["token_source"] = source
    elif ctx.auth == "password":
        source = password_source(name, ctx)
        data["password"] = "****" if source else None
        data["password_source"] = source
    return data


def summaries(cfg: ContextFile) -> list[dict[str, Any]]:
    """One row per context, by name, for `context list`."""
    return [
        {
            "name": n,
            "current": n == cfg.current,
            "airflow_url": c.airflow_url,
            "auth": c.auth,
            "mlflow_tracking_uri": c.mlflow_tracking_uri,
            "description": c.description,
        }
        for n, c in sorted(cfg.contexts.items())
    ]


def check_new(
    name: str, *, auth: str, token_env: str | None, ca_bundle: Path | None, mlflow_uri: str | None
) -> Path | None:
    """`context add`'s checks of its flags beyond the model's own (errors name the flag); returns the CA
    bundle, resolved."""
    validate_name(name, InputError)
    if auth not in ("password", "token", "none"):
        raise InputError(f"--auth must be password, token or none, got {auth!r}.")
    if ca_bundle is not None:
        ca_bundle = ca_bundle.expanduser().resolve()
        if not ca_bundle.is_file():
            raise InputError(f"CA bundle {ca_bundle} does not exist.")
    if auth == "token" and not token_env and not keyring_available():
        raise InputError(
            "--auth token needs --token-env VAR (the env var that will hold the token).",
            hint="e.g. --token-env ASTRO_API_TOKEN, then `export ASTRO_API_TOKEN=...` before running mlopsctl.",
        )
    if mlflow_uri is not None:
        try:
            tracking_uri(mlflow_uri)
        except ValueError as exc:
            raise InputError(f"--mlflow-uri {exc}.") from None
    return ca_bundle


def parse_context(**fields: Any) -> Context:
    """A Context from its fields; what the model rejects becomes an InputError."""
    try:
        return Context(**fields)
    except ValidationError as exc:
        raise InputError(_first_error(exc) + ".") from None


def add(name: str, new: Context, *, use: bool, force: bool) -> tuple[ContextFile, Path]:
    """Store `new` as `name` (replacing one only with force), current too with use; the file and its path."""
    cfg = load()
    if name in cfg.contexts and not force:
        raise ConfigError(f"Context {name!r} already exists.", hint="Use --force to replace it.")
    cfg.contexts[name] = new
    if use:
        cfg.current = name
    return cfg, save(cfg)


def set_current(name: str | None) -> None:
    """Make `name` (an existing context) the current one; None clears it."""
    cfg = load()
    if name is not None:
        get(name, cfg)
    cfg.current = name
    save(cfg)


def remove(name: str) -> None:
    """Delete a context, and any secret stored for it in the OS keyring."""
    cfg = load()
    old = get(name, cfg)
    del cfg.contexts[name]
    if cfg.current == name:
        cfg.current = None
    save(cfg)
    keyring_delete(name, old.username)


def secret_kind(name: str) -> tuple[str, Context]:
    """What `context set-secret` would store for `name` ("token" or "password"), once the keyring is there."""
    target = get(name)
    if target.auth == "none":
        raise InputError(f"Context {name!r} uses auth=none: there is no secret to store.")
    if not keyring_available():
        raise ConfigError(
            "The OS keyring is not available (the optional `keyring` package is not installed).",
            hint="`pip install keyring`, or export the secret in an env var (token_env / MLOPSCTL_AIRFLOW_PASSWORD).",
        )
    return ("token" if target.auth == "token" else "password"), target


# --- settings integration ---------------------------------------------------------------------------


def settings_values(name: str, have: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Settings fields a context supplies. `have` holds values already set by higher-priority
    sources, so secrets are looked up (env var, keyring) only when still missing."""
    have = have or {}
    cfg = load()
    ctx = get(name, cfg)
    values: dict[str, Any] = {
        "context": name,
        "airflow_url": ctx.airflow_url,
        "airflow_auth": ctx.auth,
        "verify_tls": ctx.verify_tls,
    }
    if ctx.username:
        values["airflow_username"] = ctx.username
    if ctx.mlflow_tracking_uri:
        values["mlflow_tracking_uri"] = ctx.mlflow_tracking_uri
    if ctx.ca_bundle:
        values["ca_bundle"] = ctx.ca_bundle
    if ctx.auth == "token" and not have.get("airflow_token"):
        token = os.environ.get(ctx.token_env) if ctx.token_env else None
        token = token or keyring_get(name, "token")
        if token:
            values["airflow_token"] = token
    if ctx.auth == "password" and not have.get("airflow_password"):
        password = keyring_get(name, "password", have.get("airflow_username") or ctx.username)
        if password:
            values["airflow_password"] = password
    return values


def active_name(explicit: str | None) -> str | None:
    """The context to apply: an explicit name (flag/env/.env) wins over the file's `current`.
    An explicit empty string means "no context" (ignore `current`)."""
    if explicit is not None:
        return explicit.strip() or None
    return load().current


class ContextSettingsSource(PydanticBaseSettingsSource):
    """Supplies fields from the active context; sits below flag/env/.env in the source order."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False  # unused: __call__ builds the whole dict

    def __call__(self) -> dict[str, Any]:
        state = self.current_state or {}
        name = active_name(state.get("context"))
        if not name:
            return {}
        return settings_values(validate_name(name), have=state)
