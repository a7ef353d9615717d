"""The jobs' wheel (distribution ``mlopsctl-jobs``): spark_jobs/rf_core.py packaged, so that a Databricks
task installs it and imports ``rf_core`` from it, never from its working directory.

spark_jobs/pyproject.toml declares it; its version is mlopsctl's, set here when it is built. mlopsctl's own
wheel carries one as package data (``mlopsctl/_bundled/wheels/``, built by hatch_build.py), so a CLI-only
install deploys the stock jobs with no build backend. `deploy jobs` takes that one when the project's
spark_jobs/ has the stock rf_core.py and pyproject.toml, and otherwise builds the project's own with
hatchling (`for_deploy`).

Only the standard library is imported at module level: hatch_build.py loads this file by path inside the
build backend, where mlopsctl itself is not importable.
"""

from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path
from typing import NamedTuple

#: the wheel file name's distribution part (``mlopsctl-jobs`` normalised)
DISTRIBUTION = "mlopsctl_jobs"
#: the module the wheel packages (spark_jobs/pyproject.toml's only-include); the entry scripts import it
MODULE = "rf_core.py"
PROJECT_FILE = "pyproject.toml"


def wheel_file_name(version: str) -> str:
    return f"{DISTRIBUTION}-{version}-py3-none-any.whl"


def bundled_wheel() -> Path | None:
    """The jobs' wheel built into mlopsctl's own wheel (hatch_build.py); None in a source checkout."""
    from mlopsctl import paths

    found = sorted(paths.bundled_wheels_dir().glob(f"{DISTRIBUTION}-*.whl"))
    return found[-1] if found else None


def build(src: Path, out_dir: Path, version: str, project_file: Path | None = None) -> Path:
    """Build the jobs' wheel of ``src`` into ``out_dir`` with hatchling's wheel builder, at ``version``.

    ``project_file`` is the pyproject.toml to build with (default: src's own). Hatchling writes
    reproducible wheels (fixed timestamps and permissions), so the same sources give the same bytes.
    """
    import tomllib

    from hatchling.builders.wheel import WheelBuilder

    config = tomllib.loads((project_file or src / PROJECT_FILE).read_text(encoding="utf-8"))
    project = config.setdefault("project", {})
    project["version"] = version
    project["dynamic"] = [field for field in project.get("dynamic", []) if field != "version"]
    builder = WheelBuilder(str(src), config=config)
    # explicit flags: the HATCH_BUILD_* variables of an enclosing build (hatch_build.py) must not apply here
    built = builder.build(directory=str(out_dir), versions=["standard"], hooks_only=False, clean=False,
                          clean_hooks_after=False)
    return Path(next(built))


def top_level_modules(wheel: Path) -> dict[str, bytes]:
    """The ``*.py`` files at the root of a wheel (its top-level modules), with their content."""
    with zipfile.ZipFile(wheel) as archive:
        return {name: archive.read(name) for name in archive.namelist() if "/" not in name and name.endswith(".py")}


class JobsWheel(NamedTuple):
    path: Path
    #: top-level modules it carries (`deploy jobs` uploads none of them as files)
    modules: frozenset[str]
    #: "bundled" (the one mlopsctl ships) or "built" (from the project's spark_jobs/)
    origin: str


def for_deploy(src: Path, version: str, build_dir: Path) -> JobsWheel:
    """The jobs' wheel for the job files in ``src``.

    The wheel's sources are src's rf_core.py and pyproject.toml, each falling back to the stock one (the
    bundled spark_jobs/) when src lacks it. The bundled wheel serves when both equal the stock files;
    otherwise the wheel is built into ``build_dir``, which needs hatchling: without it, ConfigError.
    """
    from mlopsctl import paths
    from mlopsctl.errors import ConfigError

    stock_dir = paths.bundled_spark_jobs_dir()
    module = src / MODULE if (src / MODULE).is_file() else stock_dir / MODULE
    project_file = src / PROJECT_FILE if (src / PROJECT_FILE).is_file() else stock_dir / PROJECT_FILE
    for path in (module, project_file):
        if not path.is_file():
            raise ConfigError(f"No {path.name} in {src} nor in mlopsctl's bundled jobs ({stock_dir}): the jobs' "
                              "wheel cannot be made.", hint="Run `mlopsctl init` to get the stock spark_jobs/.")
    bundled = bundled_wheel()
    if bundled is not None and _same(project_file, stock_dir / PROJECT_FILE) and \
            top_level_modules(bundled).get(MODULE) == module.read_bytes():
        return JobsWheel(bundled, frozenset(top_level_modules(bundled)), "bundled")
    if importlib.util.find_spec("hatchling") is None:
        why = (f"its {MODULE} or {PROJECT_FILE} differ from the ones in mlopsctl's bundled jobs wheel"
               if bundled is not None else "this mlopsctl is installed from a source checkout, which carries no built "
                                           "jobs wheel")
        stock = f", or deploy the stock jobs with --src {stock_dir}" if bundled is not None else ""
        raise ConfigError(
            f"The jobs' wheel (rf_core, which the Databricks tasks install) must be built from {src}, because {why}, "
            "and building it needs hatchling, which is not installed.",
            hint=f"Install it beside mlopsctl (pip install hatchling, or pip install 'mlopsctl[local]'){stock}.",
        )
    build_src = module.parent
    try:
        wheel = build(build_src, build_dir, version, project_file)
    except Exception as exc:  # noqa: BLE001 - a hatchling/config error, reported in one line
        raise ConfigError(f"Building the jobs' wheel from {build_src} failed: {type(exc).__name__}: {exc}",
                          hint=f"Check {project_file} (a hatchling project whose wheel includes {MODULE}).") from None
    modules = frozenset(top_level_modules(wheel))
    if MODULE not in modules:
        raise ConfigError(f"The jobs' wheel built from {build_src} has no {MODULE}.",
                          hint=f"{project_file} must include it in the wheel (only-include = [\"{MODULE}\"]).")
    return JobsWheel(wheel, modules, "built")


def _same(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve() or (b.is_file() and a.read_bytes() == b.read_bytes())
