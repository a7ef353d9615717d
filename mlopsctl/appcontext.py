"""The object every command receives (settings, console and lazily-built clients), and the Environment it is
built from: what `main(argv, environment)` is handed, so that tests bring their own transports and readers."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from mlopsctl.errors import ConfigError, StackError

if TYPE_CHECKING:
    import httpx

    from mlopsctl.airflow.client import AirflowClient
    from mlopsctl.console import Console
    from mlopsctl.pipelines import Pipeline
    from mlopsctl.runs import Reporter, RunsService
    from mlopsctl.settings import Settings
    from mlopsctl.tracking import Tracking


def _format_validation_error(exc) -> str:  # pydantic.ValidationError
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ())) or "settings"
        env = f"MLOPSCTL_{loc.upper()}" if loc != "settings" else ""
        msg = err.get("msg", "invalid").removeprefix("Value error, ")
        parts.append(f"{loc} ({env}): {msg}" if env else f"{loc}: {msg}")
    return "; ".join(parts)


def default_console(*, json_mode: bool, quiet: bool) -> Console:
    from mlopsctl.console import Console

    return Console(json_mode=json_mode, quiet=quiet)


def default_tracking(settings: Settings) -> Tracking:
    """The MLflow reader `settings` point at (the caller closes it)."""
    from mlopsctl.tracking import Tracking

    verify: bool | str = str(settings.ca_bundle) if settings.ca_bundle else settings.verify_tls
    return Tracking(settings.mlflow_tracking_uri, experiment_prefix=settings.experiment_prefix,
                    timeout=min(settings.request_timeout, 15.0), verify=verify)


@dataclass(frozen=True)
class Environment:
    """What an invocation runs against. The defaults are the real ones; a test passes its fakes.

    `settings`: Settings fields to start from; the global flags win over them, and they win over MLOPSCTL_*
    variables and .env. `console`: builds the Console from `json_mode` and `quiet`. `airflow_transport`: the
    Airflow client's httpx transport (None: the network). `tracking`: builds the MLflow reader from the Settings.
    """

    settings: Mapping[str, Any] = field(default_factory=dict)
    console: Callable[..., Console] = default_console
    airflow_transport: httpx.BaseTransport | None = None
    tracking: Callable[[Settings], Tracking] = default_tracking


@dataclass
class AppContext:
    overrides: dict[str, Any] = field(default_factory=dict)
    quiet: bool = False
    json_mode: bool = False
    environment: Environment = field(default_factory=Environment)

    @cached_property
    def settings(self) -> Settings:
        from pydantic import ValidationError

        from mlopsctl.settings import load_settings

        flags = {key: value for key, value in self.overrides.items() if value is not None}
        try:
            return load_settings(**{**self.environment.settings, **flags})
        except ValidationError as exc:
            raise ConfigError(
                f"Invalid settings: {_format_validation_error(exc)}.",
                hint="Fix the flag, the MLOPSCTL_* environment variable or the .env entry named above.",
            ) from None

    @cached_property
    def console(self) -> Console:
        return self.environment.console(json_mode=self.json_mode, quiet=self.quiet)

    def set_json(self, value: bool) -> None:
        if value and not self.json_mode:
            self.json_mode = True
            self.__dict__.pop("console", None)

    @cached_property
    def airflow(self) -> AirflowClient:
        from mlopsctl.airflow.client import AirflowClient

        return AirflowClient.from_settings(self.settings, transport=self.environment.airflow_transport)

    def tracking(self) -> Tracking:
        """A fresh MLflow reader (the caller closes it)."""
        return self.environment.tracking(self.settings)

    def runs(self, reporter: Reporter | None = None) -> RunsService:
        """The runs service on this context's Airflow and MLflow, sending notices to `reporter`."""
        from mlopsctl.runs import RunsService

        return RunsService(self.airflow, self.settings, tracking=self.tracking, reporter=reporter,
                           preflight_checks=(self._local_spark_serves,))

    def _local_spark_serves(self, pipeline: Pipeline) -> None:
        """Runs that go to this project's embedded stack run their Spark jobs on its Spark Connect server:
        refuse to trigger one while that server cannot take them."""
        from mlopsctl.devenv.preflight import runs_spark_down

        reason = runs_spark_down(self.settings)
        if reason:
            raise StackError(
                f"Not triggering {pipeline.dag_id}: its tasks run their Spark jobs on the stack's Spark Connect "
                f"server, which cannot take them. {reason}",
                hint="`mlopsctl dev status` shows every component; `mlopsctl dev start` brings back what is down.",
            )
