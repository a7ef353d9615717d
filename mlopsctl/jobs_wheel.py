"""The jobs' wheel (distribution ``mlopsctl-jobs``): the package spark_jobs/mlopsctl_jobs/, which a Databricks
task installs and imports, never from its working directory.

spark_jobs/pyproject.toml declares it; its version is mlopsctl's, set here when it is built. mlopsctl's own
wheel carries one as package data (``mlopsctl/_bundled/wheels/``, built by hatch_build.py), so a CLI-only
install deploys the stock jobs with no build backend. `deploy jobs` takes that one when the project's
spark_jobs/ has the stock mlopsctl_jobs/ and pyproject.toml, and otherwise builds the project's own with
hatchling (`for_deploy`). A spark_jobs/ of the layout before the package (a shared rf_core.py) is refused
with the upgrade step (`check_layout`).

What `deploy jobs` uploads is that wheel re-versioned after the deploy folder (`wheel_version`: folder
``v0.1.0-<content hash>`` -> version ``0.1.0+<content hash>``, `with_version`), so that every change of the
jobs is a new version: a task passes the version it expects and the jobs refuse to run another one, which a
cluster that installed an earlier wheel keeps until it restarts. `stale_libraries` reads a cluster's library
status for such leftovers.

Only the standard library is imported at module level: hatch_build.py loads this file by path inside the
build backend, where mlopsctl itself is not importable.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import re
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

#: the wheel file name's distribution part (``mlopsctl-jobs`` normalised)
DISTRIBUTION = "mlopsctl_jobs"
#: the package the wheel holds (spark_jobs/pyproject.toml's only-include); the entry scripts import only it
PACKAGE = "mlopsctl_jobs"
PROJECT_FILE = "pyproject.toml"
#: the shared module of the layout before the package
OLD_MODULE = "rf_core.py"


#: a deploy folder's name: ``v<public version>-<label>``, the label a PEP 440 local version label
FOLDER = re.compile(r"v(?P<public>[0-9][0-9a-z.!]*)-(?P<local>[a-z0-9]+(?:\.[a-z0-9]+)*)")
#: library statuses (Libraries API) of a library the cluster has or is about to have
ACTIVE_STATUSES = frozenset({"INSTALLED", "INSTALLING", "PENDING", "RESOLVING", "RESTORED"})


def wheel_file_name(version: str) -> str:
    return f"{DISTRIBUTION}-{version}-py3-none-any.whl"


def wheel_version(folder: str) -> str:
    """The jobs' wheel version of a deploy folder: ``v0.1.0-1a2b3c4d5e6f`` -> ``0.1.0+1a2b3c4d5e6f``.
    dags/common/databricks_backend.py derives the wheel's name from the jobs path the same way (a copy,
    which tests/unit/test_databricks_backend.py compares). ValueError for a name of another shape."""
    match = FOLDER.fullmatch(folder)
    if match is None:
        raise ValueError(f"{folder!r} is not a jobs folder name of the form v<version>-<label> (e.g. "
                         "v0.1.0-1a2b3c4d5e6f; the label: lower-case letters, digits and dots)")
    return f"{match['public']}+{match['local']}"


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


def with_version(wheel: Path, version: str, out_dir: Path) -> Path:
    """A copy of ``wheel`` at ``version`` in ``out_dir``: the same files, its ``.dist-info`` folder renamed,
    METADATA's Version replaced and RECORD's hashes recomputed. Entries keep their timestamps and
    permissions, so the same wheel and version give the same bytes."""
    with zipfile.ZipFile(wheel) as source:
        infos = source.infolist()
        old_info = next(i.filename.split("/", 1)[0] for i in infos if i.filename.endswith(".dist-info/METADATA"))
        new_info = f"{DISTRIBUTION}-{version}.dist-info"
        members: list[tuple[zipfile.ZipInfo, bytes]] = []
        for info in infos:
            data = source.read(info)
            name = info.filename
            if name.startswith(f"{old_info}/"):
                name = f"{new_info}/{name.removeprefix(old_info + '/')}"
            if name == f"{new_info}/METADATA":
                data = re.sub(rb"^Version: .*$", f"Version: {version}".encode(), data, count=1, flags=re.MULTILINE)
            if name != f"{new_info}/RECORD":
                members.append((_renamed(info, name), data))
    record = "".join(f"{info.filename},sha256={_digest(data)},{len(data)}\n" for info, data in members)
    record += f"{new_info}/RECORD,,\n"
    record_info = next(i for i in infos if i.filename == f"{old_info}/RECORD")
    members.append((_renamed(record_info, f"{new_info}/RECORD"), record.encode()))
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / wheel_file_name(version)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as out:
        for info, data in members:
            out.writestr(info, data)
    return target


def _renamed(info: zipfile.ZipInfo, name: str) -> zipfile.ZipInfo:
    copy = zipfile.ZipInfo(name, date_time=info.date_time)
    copy.external_attr, copy.compress_type = info.external_attr, zipfile.ZIP_DEFLATED
    return copy


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def requirement(wheel: Path, name: str) -> str | None:
    """The wheel's ``Requires-Dist`` entry for the distribution ``name`` (e.g. mlflow), if it has one."""
    import email.parser

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    with zipfile.ZipFile(wheel) as archive:
        meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        message = email.parser.Parser().parsestr(archive.read(meta).decode())
    for entry in message.get_all("Requires-Dist") or []:
        if canonicalize_name(Requirement(entry).name) == canonicalize_name(name):
            return entry
    return None


def stale_libraries(statuses: Iterable[Mapping], version: str, mlflow: str | None) -> list[str]:
    """What a cluster's library status (``LibraryFullStatus`` dicts of the Libraries API) holds that tasks
    deployed at ``version`` would not run with: another ``mlopsctl-jobs`` wheel, or an MLflow other than
    ``mlflow`` (the jobs' wheel's requirement). One sentence per library; empty when nothing is stale."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    wanted = Requirement(mlflow) if mlflow else None
    found: list[str] = []
    for status in statuses:
        if status.get("status") not in ACTIVE_STATUSES:
            continue
        library = status.get("library") or {}
        whl = str(library.get("whl") or "")
        package = str((library.get("pypi") or {}).get("package") or "")
        name = whl.rsplit("/", 1)[-1]
        if name.startswith(f"{DISTRIBUTION}-") and name.split("-")[1] != version:
            found.append(f"mlopsctl-jobs {name.split('-')[1]} ({whl}), not {version}")
        elif name.startswith("mlflow-") and wanted is not None and not wanted.specifier.contains(name.split("-")[1]):
            found.append(f"MLflow {name.split('-')[1]} ({whl}), where the jobs ask for {mlflow}")
        elif package and wanted is not None:
            try:
                req = Requirement(package)
            except InvalidRequirement:
                continue
            if canonicalize_name(req.name) == "mlflow" and req.specifier != wanted.specifier:
                found.append(f"MLflow {package!r} (PyPI), where the jobs ask for {mlflow}")
    return found


def package_files(wheel: Path) -> dict[str, bytes]:
    """The package's files in a wheel (``mlopsctl_jobs/...``, as paths relative to spark_jobs/), with their content."""
    with zipfile.ZipFile(wheel) as archive:
        return {name: archive.read(name) for name in archive.namelist() if name.startswith(f"{PACKAGE}/")}


def source_files(package: Path) -> dict[str, bytes]:
    """The package folder's files (caches skipped) as `package_files` names them, with their content."""
    return {f"{PACKAGE}/{p.relative_to(package).as_posix()}": p.read_bytes() for p in sorted(package.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")}


def check_layout(src: Path) -> None:
    """Refuse a spark_jobs/ of the layout before the package (its entry scripts import a shared rf_core.py),
    before anything is built or uploaded: its scripts would not find the package the wheel now holds."""
    from mlopsctl.errors import ConfigError

    if (src / OLD_MODULE).is_file():
        raise ConfigError(
            f"{src} has the jobs layout of an older mlopsctl: its scripts import the shared module {OLD_MODULE}, "
            f"while the jobs' wheel now holds the package {PACKAGE}/ and a Databricks task finds nothing else.",
            hint=f"Upgrade the project: commit it, run `mlopsctl init --force` (it writes the new spark_jobs/ "
                 f"with {PACKAGE}/ and overwrites the stock scripts), move your own changes of {OLD_MODULE} into "
                 f"spark_jobs/{PACKAGE}/, delete spark_jobs/{OLD_MODULE}, then run `mlopsctl deploy jobs` again.",
        )


class JobsWheel(NamedTuple):
    path: Path
    #: the package's files it carries, relative to spark_jobs/ (`deploy jobs` uploads none of them as files)
    modules: frozenset[str]
    #: "bundled" (the one mlopsctl ships) or "built" (from the project's spark_jobs/)
    origin: str


def for_deploy(src: Path, version: str, build_dir: Path) -> JobsWheel:
    """The jobs' wheel for the job files in ``src``.

    The wheel's sources are src's mlopsctl_jobs/ and pyproject.toml, each falling back to the stock one (the
    bundled spark_jobs/) when src lacks it. The bundled wheel serves when both equal the stock files;
    otherwise the wheel is built into ``build_dir``, which needs hatchling: without it, ConfigError.
    """
    from mlopsctl import paths
    from mlopsctl.errors import ConfigError

    check_layout(src)
    stock_dir = paths.bundled_spark_jobs_dir()
    package = src / PACKAGE if (src / PACKAGE).is_dir() else stock_dir / PACKAGE
    project_file = src / PROJECT_FILE if (src / PROJECT_FILE).is_file() else stock_dir / PROJECT_FILE
    for path, present in ((package, package.is_dir()), (project_file, project_file.is_file())):
        if not present:
            raise ConfigError(f"No {path.name} in {src} nor in mlopsctl's bundled jobs ({stock_dir}): the jobs' "
                              "wheel cannot be made.", hint="Run `mlopsctl init` to get the stock spark_jobs/.")
    bundled = bundled_wheel()
    if bundled is not None and _same(project_file, stock_dir / PROJECT_FILE) and \
            package_files(bundled) == source_files(package):
        return JobsWheel(bundled, frozenset(package_files(bundled)), "bundled")
    if importlib.util.find_spec("hatchling") is None:
        why = (f"its {PACKAGE}/ or {PROJECT_FILE} differ from the ones in mlopsctl's bundled jobs wheel"
               if bundled is not None else "this mlopsctl is installed from a source checkout, which carries no built "
                                           "jobs wheel")
        stock = f", or deploy the stock jobs with --src {stock_dir}" if bundled is not None else ""
        raise ConfigError(
            f"The jobs' wheel ({PACKAGE}, which the Databricks tasks install) must be built from {src}, because "
            f"{why}, and building it needs hatchling, which is not installed.",
            hint=f"Install it beside mlopsctl (pip install hatchling, or pip install 'mlopsctl[local]'){stock}.",
        )
    build_src = package.parent
    try:
        wheel = build(build_src, build_dir, version, project_file)
    except Exception as exc:  # noqa: BLE001 - a hatchling/config error, reported in one line
        raise ConfigError(f"Building the jobs' wheel from {build_src} failed: {type(exc).__name__}: {exc}",
                          hint=f"Check {project_file} (a hatchling project whose wheel includes {PACKAGE}/).") from None
    modules = frozenset(package_files(wheel))
    if f"{PACKAGE}/__init__.py" not in modules:
        raise ConfigError(f"The jobs' wheel built from {build_src} has no {PACKAGE} package.",
                          hint=f"{project_file} must include it in the wheel (only-include = [\"{PACKAGE}\"]).")
    return JobsWheel(wheel, modules, "built")


def _same(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve() or (b.is_file() and a.read_bytes() == b.read_bytes())
