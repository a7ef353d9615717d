"""The shape of a component's declaration (`Component`) and of its parts; the declarations themselves are the
list in `mlopsctl.devenv.components`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlopsctl.errors import ConfigError

if TYPE_CHECKING:
    from mlopsctl.devenv.health import ProbeContext
    from mlopsctl.devenv.layout import StackLayout
    from mlopsctl.devenv.stack import ComponentSpec
    from mlopsctl.settings import Settings


@dataclass(frozen=True)
class PortSetting:
    """The setting that names a component's port: the Settings attribute ``setting``, MLOPSCTL_<SETTING> in
    the environment and .env, ``flag`` on `dev start`/`dev status`. The ports Settings declares as fields take
    its defaults; a port Settings does not declare is read from the same sources, with ``default``."""

    setting: str
    flag: str
    what: str  # what listens there, for --help and messages
    default: int | None = None

    @property
    def env_var(self) -> str:
        return "MLOPSCTL_" + self.setting.upper()

    def read(self, settings: Settings) -> int:
        value = getattr(settings, self.setting, None)
        if value is None:
            value = settings.component_ports.get(self.setting, self.default)
        if value is None:
            raise ConfigError(f"No port is set for the {self.what}.", hint=f"Set {self.env_var}=<port>.")
        return int(value)


@dataclass(frozen=True)
class UrlLine:
    """How `dev start`/`dev status` show where a component answers: ``label``, then ``template`` formatted with
    the port, then ``note`` (which may name {username} and {passwords_file}); ``key`` in their JSON."""

    key: str
    label: str
    template: str
    note: str = ""

    def url(self, port: int | None) -> str:
        return self.template.format(port=port)


@dataclass(frozen=True)
class Group:
    """Components started together as forks of one process (``zygote``), which imports their code once.
    ``prepare`` runs before any of them starts (True when it changed something, such as a database
    migration); ``watch`` builds what `dev start` waits for once they are all healthy (the DAG files parsed);
    ``fork_hint`` is the hint when the zygote cannot fork them."""

    name: str
    zygote: Callable[[Settings, StackLayout], ComponentSpec]
    prepare: Callable[[Any], bool] | None = None
    watch: Callable[[Settings, StackLayout], Any] | None = None
    fork_hint: str = ""


@dataclass(frozen=True)
class Component:
    """One component of the local stack (see the module docstring). ``order``: lower starts first.
    ``before_start(settings, layout)`` runs before its command is built when it is about to start;
    ``after_start(settings, layout, started)`` once the whole stack is healthy, ``started`` saying whether this
    start launched it."""

    name: str
    order: int
    command: Callable[[Settings, StackLayout], ComponentSpec]
    probe: Callable[[ProbeContext, Component], str]
    port: PortSetting | None = None
    url: UrlLine | None = None
    group: Group | None = None
    before_start: Callable[[Settings, StackLayout], None] | None = None
    after_start: Callable[[Settings, StackLayout, bool], None] | None = None
