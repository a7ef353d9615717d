"""`mlopsctl init` scaffolding: what a new project gets, and writing it without clobbering anything.

The plan is: the bundled `dags/` and `spark_jobs/` (see :mod:`mlopsctl.paths`), `.env.example`, a
`.gitignore` that ignores `.env` and `.mlopsctl/`, and `tests/test_dag_integrity.py` (templates here are
package data). Files that already exist with the same content are left alone; an existing `.gitignore`
gets the missing lines appended; any other existing file with different content is a conflict, and
nothing at all is written unless ``force`` is set. Nothing is ever deleted: files of an older job layout
(`LEFT_OVER`) are reported for the user to move and delete.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mlopsctl import paths
from mlopsctl.errors import InputError

TEMPLATES = Path(__file__).resolve().parent / "templates"
GITIGNORE_LINES = (".env", ".mlopsctl/")
_SKIP_DIRS = frozenset({"__pycache__", ".ipynb_checkpoints", ".pytest_cache"})
_SKIP_SUFFIXES = (".pyc", ".pyo")
#: files of an older scaffold that the current one replaces -> what to do with them
LEFT_OVER = {
    "spark_jobs/rf_core.py": "the jobs now share the package spark_jobs/mlopsctl_jobs/: move your changes of "
                             "rf_core.py into it, then delete rf_core.py",
}


@dataclass(frozen=True)
class PlannedFile:
    """One file `init` wants to have in the project."""

    relpath: str  # POSIX path relative to the project root
    content: bytes


@dataclass
class InitResult:
    directory: Path
    created: list[str] = field(default_factory=list)
    overwritten: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)  # .gitignore lines appended
    unchanged: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # missing from this installation's bundle
    left_over: dict[str, str] = field(default_factory=dict)  # files of an older layout -> what to do with them

    @property
    def changed(self) -> bool:
        return bool(self.created or self.overwritten or self.updated)

    @property
    def already_initialised(self) -> bool:
        return not self.changed and bool(self.unchanged)

    def to_dict(self) -> dict:
        return {
            "directory": str(self.directory),
            "already_initialised": self.already_initialised,
            "created": self.created,
            "overwritten": self.overwritten,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "skipped": self.skipped,
            "left_over": self.left_over,
        }


def _tree(src: Path, dest_prefix: str) -> list[PlannedFile]:
    out: list[PlannedFile] = []
    if not src.is_dir():
        return out
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if (
            any(part in _SKIP_DIRS for part in rel.parts)
            or path.suffix in _SKIP_SUFFIXES
            or not path.is_file()
        ):
            continue
        out.append(PlannedFile(f"{dest_prefix}/{rel.as_posix()}", path.read_bytes()))
    return out


def plan(
    *,
    dags_dir: Path | None = None,
    spark_jobs_dir: Path | None = None,
    env_example: Path | None = None,
) -> tuple[list[PlannedFile], list[str]]:
    """The files a new project gets, and the names of bundled parts missing from this installation."""
    dags_dir = dags_dir or paths.bundled_dags_dir()
    spark_jobs_dir = spark_jobs_dir or paths.bundled_spark_jobs_dir()
    env_example = env_example or paths.bundled_env_example()
    files: list[PlannedFile] = []
    missing: list[str] = []
    for src, prefix in ((dags_dir, "dags"), (spark_jobs_dir, "spark_jobs")):
        tree = _tree(src, prefix)
        if tree:
            files += tree
        else:
            missing.append(f"{prefix}/")
    if env_example.is_file():
        files.append(PlannedFile(".env.example", env_example.read_bytes()))
    else:
        missing.append(".env.example")
    files.append(PlannedFile(".gitignore", (TEMPLATES / "gitignore").read_bytes()))
    files.append(
        PlannedFile("tests/test_dag_integrity.py", (TEMPLATES / "test_dag_integrity.py.tmpl").read_bytes())
    )
    return files, missing


def _gitignore_missing(existing: bytes) -> list[str]:
    present = {line.strip() for line in existing.decode("utf-8", errors="replace").splitlines()}
    aliases = {
        ".mlopsctl/": {".mlopsctl", ".mlopsctl/", "/.mlopsctl", "/.mlopsctl/"},
        ".env": {".env", "/.env"},
    }
    return [line for line in GITIGNORE_LINES if not (aliases[line] & present)]


def conflicts(directory: Path, files: list[PlannedFile]) -> list[str]:
    """Planned files that exist in `directory` with different content (.gitignore never conflicts)."""
    out = []
    for f in files:
        target = directory / f.relpath
        if f.relpath == ".gitignore":
            if target.exists() and not target.is_file():
                out.append(f.relpath)
            continue
        if target.is_dir() or (target.exists() and target.read_bytes() != f.content):
            out.append(f.relpath)
    return out


def init_project(
    directory: Path,
    *,
    force: bool = False,
    dags_dir: Path | None = None,
    spark_jobs_dir: Path | None = None,
    env_example: Path | None = None,
) -> InitResult:
    """Scaffold `directory`. Raises InputError (listing the conflicts) when files would be overwritten
    and `force` is not set; in that case nothing is written."""
    directory = Path(directory).expanduser()
    if directory.exists() and not directory.is_dir():
        raise InputError(
            f"{directory} exists and is not a directory.", hint="Pick another DIRECTORY for `mlopsctl init`."
        )
    files, missing = plan(dags_dir=dags_dir, spark_jobs_dir=spark_jobs_dir, env_example=env_example)
    clashes = conflicts(directory, files)
    if clashes and not force:
        shown = ", ".join(clashes[:10]) + (f" and {len(clashes) - 10} more" if len(clashes) > 10 else "")
        raise InputError(
            f"{len(clashes)} file(s) in {directory} differ from what `mlopsctl init` would write: {shown}.",
            hint="Nothing was changed. Re-run with --force to overwrite them (commit or back them up first).",
        )
    bad_dirs = [c for c in clashes if (directory / c).is_dir()]
    if bad_dirs:
        raise InputError(
            f"Cannot overwrite directories with files: {', '.join(bad_dirs)}.",
            hint="Move those directories away and re-run `mlopsctl init`.",
        )
    result = InitResult(directory=directory.resolve() if directory.exists() else directory.absolute())
    result.skipped = missing
    result.left_over = {rel: why for rel, why in LEFT_OVER.items() if (directory / rel).is_file()}
    directory.mkdir(parents=True, exist_ok=True)
    result.directory = directory.resolve()
    for f in files:
        target = directory / f.relpath
        if f.relpath == ".gitignore" and target.is_file():
            existing = target.read_bytes()
            add = _gitignore_missing(existing)
            if not add:
                result.unchanged.append(f.relpath)
                continue
            sep = b"" if not existing or existing.endswith(b"\n") else b"\n"
            target.write_bytes(
                existing + sep + b"# mlopsctl\n" + "".join(f"{line}\n" for line in add).encode()
            )
            result.updated.append(f.relpath)
            continue
        if target.exists():
            if target.read_bytes() == f.content:
                result.unchanged.append(f.relpath)
                continue
            target.write_bytes(f.content)
            result.overwritten.append(f.relpath)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(f.content)
        result.created.append(f.relpath)
    return result
