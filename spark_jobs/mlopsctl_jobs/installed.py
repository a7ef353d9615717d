"""Which ``mlopsctl-jobs`` this interpreter has installed, and the check that it is the version the task
expects (`check`).

On Databricks a task names the version of the jobs' wheel it was deployed with (``--jobs-version``, derived
from the deploy folder's name). A cluster keeps the first version of a library it installed until it
restarts, so a task that finds another one would run stale code: the entry scripts (`mlopsctl_jobs.cli`) and
the Spark grid's workers (`mlopsctl_jobs.grid`) stop instead. Where no version is expected (a local run,
which ships the package as a zip and installs nothing), nothing is checked.
"""

from __future__ import annotations

#: the jobs' wheel's distribution (spark_jobs/pyproject.toml's name)
DISTRIBUTION = "mlopsctl-jobs"


class StaleJobsError(Exception):
    """The installed jobs' wheel is not the version the task expects (retrying cannot help: restart the
    cluster)."""


def installed_version() -> str | None:
    """The version of the installed ``mlopsctl-jobs`` distribution; None where it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return None


def mismatch(expected: str | None) -> str | None:
    """Why this interpreter cannot run a task that expects ``expected`` (None: it can, or nothing is expected)."""
    if not expected:
        return None
    found = installed_version()
    if found == expected:
        return None
    has = f"has {DISTRIBUTION} {found} installed" if found else f"has no {DISTRIBUTION} installed"
    return (f"this compute {has}, but the task was deployed with {expected}. A cluster keeps the first version "
            f"of a library it installed until it restarts: restart the cluster (`databricks clusters restart "
            f"<cluster-id>`, or Restart on its Compute page), then run again.")


def check(expected: str | None) -> None:
    """Raise StaleJobsError when the installed version is not ``expected``."""
    why = mismatch(expected)
    if why:
        raise StaleJobsError(why)
