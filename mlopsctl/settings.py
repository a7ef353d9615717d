"""All of mlopsctl's configuration, in one pydantic-settings class.

Precedence: command-line flag > environment (MLOPSCTL_*) > .env file > context file > default.
No I/O here beyond reading configuration.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from mlopsctl.contexts import ContextSettingsSource, tracking_uri

AuthKind = Literal["password", "token", "none"]
Port = Annotated[int, Field(ge=1, le=65535)]
_PORT_KEY = re.compile(r"mlopsctl_(\w+_port)")
#: Spark Connect's own default port (a sc:// URL without a port means this one)
CONNECT_DEFAULT_PORT = 15002
#: where the DAGs' MLflow experiments go on Databricks when databricks_experiment_prefix is not set: a folder
#: non-admins can create
DEFAULT_EXPERIMENT_FOLDER = "/Shared/mlopsctl"


class Settings(BaseSettings):
    """mlopsctl settings. Every field is settable as MLOPSCTL_<FIELD> (see .env.example)."""

    model_config = SettingsConfigDict(
        env_prefix="MLOPSCTL_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ):
        """flag > env > .env > named context (`mlopsctl context`) > default."""
        return (init_settings, env_settings, _PortsSource(settings_cls, dotenv_settings), dotenv_settings,
                ContextSettingsSource(settings_cls), file_secret_settings)

    # --- project -------------------------------------------------------------------------------
    project_dir: Path = Field(default_factory=Path.cwd, description="Project root (holds dags/, spark_jobs/).")
    state_dir: Path | None = Field(
        default=None, description="Local state (Airflow home, SQLite DBs, logs, PIDs). Default: <project_dir>/.mlopsctl"
    )
    context: str | None = Field(default=None, description="Named Airflow/MLflow target from `mlopsctl context`.")

    # --- Airflow -------------------------------------------------------------------------------
    airflow_url: str = Field(
        default="http://127.0.0.1:8080",
        description="Airflow base URL (api-server). Default: the local stack, http://127.0.0.1:<airflow_port>.",
    )
    airflow_auth: AuthKind = Field(default="password", description="password (JWT via /auth/token), token, none.")
    airflow_username: str = Field(default="admin", description="Airflow user for password auth.")
    airflow_password: SecretStr | None = Field(
        default=None, description="Airflow password. Default for the local stack: read from the state dir."
    )
    airflow_token: SecretStr | None = Field(
        default=None, description="Static bearer token (e.g. an Astronomer deployment API token)."
    )
    verify_tls: bool = Field(default=True, description="Verify HTTPS certificates.")
    ca_bundle: Path | None = Field(default=None, description="CA bundle file for HTTPS verification.")
    request_timeout: float = Field(default=30.0, gt=0, description="Per-request timeout in seconds.")
    retries: int = Field(default=3, ge=0, le=10, description="Retries of idempotent requests on connect errors/5xx/429.")

    # --- MLflow --------------------------------------------------------------------------------
    mlflow_tracking_uri: str = Field(
        default="http://127.0.0.1:5000",
        description="MLflow tracking URI (http(s)://... or `databricks`). Default: the local stack, "
        "http://127.0.0.1:<mlflow_port>.",
    )
    mlflow_ui_url: str | None = Field(default=None, description="Base URL for MLflow UI links (default: tracking URI).")
    mlflow_experiment_prefix: str = Field(
        default="/mlopsctl", min_length=1,
        description="MLflow experiment prefix: experiments are <prefix>/<dag_id> (tracking servers other than "
        "Databricks; see experiment_prefix).",
    )
    databricks_experiment_prefix: str | None = Field(
        default=None, min_length=1,
        description="Workspace folder of the experiments when the tracking URI is `databricks` (the variable the "
        "DAGs' Databricks backend reads). Default: /Shared/mlopsctl.",
    )

    # --- embedded local stack ------------------------------------------------------------------
    airflow_port: int = Field(default=8080, ge=1, le=65535, description="Local Airflow api-server port.")
    mlflow_port: int = Field(default=5000, ge=1, le=65535, description="Local MLflow server port.")
    parallelism: int = Field(default=4, ge=1, le=64, description="Local Airflow task slots (AIRFLOW__CORE__PARALLELISM).")
    scheduler_idle_sleep: float = Field(
        default=1.0, ge=0.05, le=60,
        description="Seconds the local scheduler sleeps between idle loops (AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_"
        "TIME, Airflow's default 1). A queued run, a finished task and the end of a run each wait for the next loop: "
        "half this on average. Shorter costs idle CPU (measured on the stack's scheduler: 1 s 2.4%, 0.25 s 7.6% of "
        "one core).",
    )
    start_timeout: float = Field(default=180.0, gt=0, description="Seconds `dev start` waits for health.")
    spark_connect_port: int = Field(
        default=CONNECT_DEFAULT_PORT,
        ge=1,
        le=65535,
        description="Local Spark Connect server port (gRPC, 127.0.0.1).",
    )
    component_ports: dict[str, Port] = Field(
        default_factory=dict,
        description="Ports of stack components that have no field above, by setting name (MLOPSCTL_<NAME>_PORT, "
        "or the component's --<name>-port flag).",
    )
    spark_driver_memory: str = Field(
        default="768m",
        pattern=r"^[1-9][0-9]*[kKmMgGtT]$",
        description="Heap of the local Spark Connect server's JVM (spark.driver.memory), e.g. 768m, 2g.",
    )

    # --- compute (read by the DAGs at run time) ------------------------------------------------
    compute: str = Field(
        default="local", description="Spark backend: local, a Spark master URL (spark://host:7077), or databricks."
    )
    spark_master: str = Field(
        default="local[*]",
        description="Master of the local Spark Connect server (and of spark-submit where no server is set): "
        "local[*], local[N], or spark://host:7077 to put the server in front of a standalone cluster.",
    )
    spark_remote: str = Field(
        default=f"sc://127.0.0.1:{CONNECT_DEFAULT_PORT}",
        description="Spark Connect URL the DAG tasks run their jobs on. Default: the local stack's server, "
        "sc://127.0.0.1:<spark_connect_port>.",
    )

    @field_validator("airflow_url", "mlflow_ui_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"must be an http(s):// URL with a host, got {value!r}")
        try:
            parsed.port  # noqa: B018 - raises on a bad port
        except ValueError as exc:
            raise ValueError(f"bad port in {value!r}") from exc
        return value.rstrip("/")

    @field_validator("mlflow_tracking_uri")
    @classmethod
    def _tracking_uri(cls, value: str) -> str:
        return tracking_uri(value)

    @field_validator("spark_remote")
    @classmethod
    def _connect_url(cls, value: str) -> str:
        parsed = urlparse(value)
        params = {p.split("=", 1)[0].strip().lower() for p in parsed.path.lstrip("/").split(";") if p}
        if "token" in params:  # checked first: the messages below echo the value
            raise ValueError(
                "must not carry a token (the URL is passed around in plain text): "
                "set SPARK_CONNECT_AUTHENTICATE_TOKEN in the environment instead"
            )
        if parsed.scheme != "sc" or not parsed.hostname:
            raise ValueError(f"must be a Spark Connect URL sc://host:port, got {value!r}")
        try:
            parsed.port  # noqa: B018 - raises on a bad port
        except ValueError as exc:
            raise ValueError(f"bad port in {value!r}") from exc
        if parsed.path not in ("", "/") and not parsed.path.startswith("/;"):
            raise ValueError(f"expected sc://host:port[/;param=value...], got {value!r}")
        return value.rstrip("/")

    @model_validator(mode="before")
    @classmethod
    def _component_ports(cls, data: Any) -> Any:
        """`<name>_port` values that have no field of their own go to `component_ports`."""
        if not isinstance(data, dict):
            return data
        extra = {k: data[k] for k in data if k.endswith("_port") and k not in cls.model_fields}
        if not extra:
            return data
        rest = {k: v for k, v in data.items() if k not in extra}
        return {**rest, "component_ports": {**extra, **(data.get("component_ports") or {})}}

    @model_validator(mode="after")
    def _defaults(self) -> Settings:
        self.project_dir = self.project_dir.expanduser().resolve()
        if self.state_dir is None:
            self.state_dir = self.project_dir / ".mlopsctl"
        else:
            self.state_dir = self.state_dir.expanduser().resolve()
        # Not given anywhere (flag, env, .env, context): the targets are the embedded stack, on its ports.
        if "airflow_url" not in self.model_fields_set:
            self.airflow_url = self.local_airflow_url
        if "mlflow_tracking_uri" not in self.model_fields_set:
            self.mlflow_tracking_uri = self.local_mlflow_url
        if "spark_remote" not in self.model_fields_set:
            self.spark_remote = self.local_spark_remote
        return self

    # --- derived -------------------------------------------------------------------------------
    @property
    def state(self) -> Path:
        assert self.state_dir is not None
        return self.state_dir

    def local_airflow_password(self) -> str:
        """The local stack's generated password for `airflow_username`, found through the stack's layout;
        ConfigError saying what is missing when there is none (before the first `mlopsctl dev start`)."""
        from mlopsctl.devenv.layout import StackLayout, admin_password

        return admin_password(StackLayout(self.state), self.airflow_username)

    @property
    def local_airflow_url(self) -> str:
        return f"http://127.0.0.1:{self.airflow_port}"

    @property
    def local_mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def local_spark_remote(self) -> str:
        return f"sc://127.0.0.1:{self.spark_connect_port}"

    @property
    def spark_remote_is_local(self) -> bool:
        """True when the tasks' Spark Connect URL is the embedded stack's own server."""
        parsed = urlparse(self.spark_remote)
        port = parsed.port or CONNECT_DEFAULT_PORT
        return parsed.hostname in ("127.0.0.1", "localhost", "::1") and port == self.spark_connect_port

    @property
    def tracking_is_databricks(self) -> bool:
        """The tracking URI is a Databricks workspace's MLflow (`databricks`, `databricks://<profile>`)."""
        uri = self.mlflow_tracking_uri
        return uri == "databricks" or uri.startswith("databricks://")

    @property
    def experiment_prefix(self) -> str:
        """The folder of the pipelines' experiments (<prefix>/<dag_id>), as the DAGs choose it: with Databricks
        tracking, databricks_experiment_prefix (default /Shared/mlopsctl); elsewhere mlflow_experiment_prefix."""
        if self.tracking_is_databricks:
            return (self.databricks_experiment_prefix or DEFAULT_EXPERIMENT_FOLDER).rstrip("/")
        return self.mlflow_experiment_prefix

    @property
    def mlflow_ui(self) -> str:
        return (self.mlflow_ui_url or self.mlflow_tracking_uri).rstrip("/")


class _PortsSource(PydanticBaseSettingsSource):
    """MLOPSCTL_<NAME>_PORT in the environment, then in .env, for ports Settings has no field for (the port
    setting of a stack component, `mlopsctl.devenv.spec.PortSetting`); they end up in `component_ports`."""

    def __init__(self, settings_cls: type[BaseSettings], dotenv: PydanticBaseSettingsSource) -> None:
        super().__init__(settings_cls)
        self._dotenv = dotenv

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        found: dict[str, str] = {}
        for values in (os.environ, getattr(self._dotenv, "env_vars", {}) or {}):
            for key, value in values.items():
                match = _PORT_KEY.fullmatch(key.lower())
                if match and match.group(1) not in self.settings_cls.model_fields and value is not None:
                    found.setdefault(match.group(1), value)
        return found


def load_settings(**overrides: Any) -> Settings:
    """Build Settings; explicit (flag) values win over env and .env. `None` overrides are ignored."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**clean)
