"""Where bundled resources live, in a wheel (package data) and in a source checkout."""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

_PKG = Path(__file__).resolve().parent


def _bundled(name: str) -> Path:
    packaged = _PKG / "_bundled" / name  # inside a built wheel
    if packaged.is_dir():
        return packaged
    return _PKG.parent / name  # editable install / source checkout


def bundled_dags_dir() -> Path:
    return _bundled("dags")


#: the modules of the bundled dags/common/ that mlopsctl shares with the DAG tasks (standard library only): the
#: job launcher's protocol, and the facts about the local Spark installation
SHARED_DAG_MODULES = ("launcher_client", "localspark")


@functools.cache
def dags_common_module(name: str) -> ModuleType:
    """One of `SHARED_DAG_MODULES`, loaded from the bundled DAG folder's common/ (once per process): the DAG
    package imports nothing from mlopsctl, so what both sides need lives there."""
    if name not in SHARED_DAG_MODULES:
        raise ValueError(f"dags/common/{name}.py is not shared with mlopsctl (shared: {', '.join(SHARED_DAG_MODULES)})")
    module_name = f"_mlopsctl_dags_common_{name}"
    spec = importlib.util.spec_from_file_location(module_name, bundled_dags_dir() / "common" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def bundled_spark_jobs_dir() -> Path:
    return _bundled("spark_jobs")


def bundled_env_example() -> Path:
    packaged = _PKG / "_bundled" / "env.example"
    return packaged if packaged.is_file() else _PKG.parent / ".env.example"


def bundled_wheels_dir() -> Path:
    """The wheels built into mlopsctl's own wheel (hatch_build.py); absent in a source checkout."""
    return _PKG / "_bundled" / "wheels"
