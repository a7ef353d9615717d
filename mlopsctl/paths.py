"""Where bundled resources live, in a wheel (package data) and in a source checkout."""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def _bundled(name: str) -> Path:
    packaged = _PKG / "_bundled" / name  # inside a built wheel
    if packaged.is_dir():
        return packaged
    return _PKG.parent / name  # editable install / source checkout


def bundled_dags_dir() -> Path:
    return _bundled("dags")


def bundled_spark_jobs_dir() -> Path:
    return _bundled("spark_jobs")


def bundled_env_example() -> Path:
    packaged = _PKG / "_bundled" / "env.example"
    return packaged if packaged.is_file() else _PKG.parent / ".env.example"


def bundled_wheels_dir() -> Path:
    """The wheels built into mlopsctl's own wheel (hatch_build.py); absent in a source checkout."""
    return _PKG / "_bundled" / "wheels"
