"""The `local` extra: what `dev` and `check` need beyond the CLI-only install (`pip install mlopsctl`)."""

from __future__ import annotations

import importlib.util

from mlopsctl.errors import ConfigError

LOCAL_EXTRA_INSTALL = "pip install 'mlopsctl[local]'"
# top-level modules of the extra's main parts: Airflow, Spark, the training side (found without importing)
LOCAL_EXTRA_MODULES = ("airflow", "pyspark", "sklearn")


def require_local_extra(command: str, *modules: str) -> None:
    """Raise ConfigError (exit CONFIG) when a module `command` needs from the `local` extra is missing.

    `modules` defaults to the whole extra; found with `find_spec`, so nothing heavy is imported here.
    """
    missing = [m for m in modules or LOCAL_EXTRA_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(
            f"`mlopsctl {command}` needs the `local` extra, and {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not installed.",
            hint=LOCAL_EXTRA_INSTALL,
        )
