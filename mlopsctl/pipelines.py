"""The bundled pipelines (name -> dag_id) and local validation mirroring the DAG Params contract.

Everything here is pure: it judges user input before any request is sent, and raises
`InputError` (exit USAGE) with a message that names the offending flag.
"""

from __future__ import annotations

import math
import os
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from mlopsctl.errors import InputError

MAX_DEPTH_RANGE = (1, 1000)
N_ESTIMATORS_RANGE = (1, 5000)
CV_RANGE = (2, 20)
RANDOM_STATE_MAX = 2**32 - 1
DEFAULT_REGISTERED_MODEL = "mlopsctl-random-forest"
DEFAULT_GRID_MAX_DEPTH = (80, 90, 100, 110)
DEFAULT_GRID_N_ESTIMATORS = (100, 200, 300)
DATA_SUFFIXES = (".csv", ".parquet", ".pq")
DEFAULT_GRID_MAX_DEPTH_TEXT = ",".join(map(str, DEFAULT_GRID_MAX_DEPTH))
DEFAULT_GRID_N_ESTIMATORS_TEXT = ",".join(map(str, DEFAULT_GRID_N_ESTIMATORS))


@dataclass(frozen=True)
class Pipeline:
    name: str  # CLI name, e.g. build-model
    dag_id: str  # Airflow dag_id, e.g. build_model
    kind: Literal["single", "grid"]
    key_metric: str  # metric shown by `status` (on the single run / the grid parent)
    summary: str

    @property
    def mlflow_role(self) -> str:
        """The `mlopsctl.role` tag of the run that carries the pipeline's headline metrics."""
        return "single" if self.kind == "single" else "parent"


PIPELINES: dict[str, Pipeline] = {
    p.name: p
    for p in (
        Pipeline("build-model", "build_model", "single", "rmse", "preprocess data, train one random forest"),
        Pipeline("grid-search", "grid_search", "grid", "best_cv_rmse", "grid search with scikit-learn (joblib)"),
        Pipeline(
            "grid-search-spark", "grid_search_spark", "grid", "best_cv_rmse", "grid search fanned out on Spark"
        ),
    )
}
PIPELINE_NAMES = tuple(PIPELINES)
_BY_DAG = {p.dag_id: p for p in PIPELINES.values()}


def get_pipeline(name: str) -> Pipeline:
    """Pipeline by CLI name (or dag_id); InputError listing the known names otherwise."""
    if name in PIPELINES:
        return PIPELINES[name]
    if name in _BY_DAG:
        return _BY_DAG[name]
    raise InputError(
        f"Unknown pipeline {name!r}.",
        hint=f"Known pipelines: {', '.join(PIPELINE_NAMES)} (see `mlopsctl dags`).",
    )


def pipeline_for_dag(dag_id: str) -> Pipeline | None:
    return _BY_DAG.get(dag_id)


def complete_pipeline(incomplete: str) -> list[str]:
    """Shell completion for --pipeline."""
    return [n for n in PIPELINE_NAMES if n.startswith(incomplete)]


def new_dag_run_id(now: datetime | None = None) -> str:
    """A client-chosen, unique dag_run_id: mlopsctl__20261124T030405Z__a1b2c3."""
    now = now or datetime.now(UTC)
    return f"mlopsctl__{now.astimezone(UTC):%Y%m%dT%H%M%SZ}__{secrets.token_hex(3)}"


# --- validation ----------------------------------------------------------------------------------


def check_int(value: Any, flag: str, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{flag} must be an integer, got {value!r}.")
    if value < lo or (hi is not None and value > hi):
        rng = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
        raise InputError(f"{flag} must be {rng}, got {value}.")
    return value


_INT_RE = re.compile(r"^[+-]?\d+$")


def parse_int_list(text: str, flag: str, lo: int, hi: int) -> list[int]:
    """Parse a grid list like '80,90,100': integers in [lo, hi], no empties, no duplicates."""
    if text is None or not str(text).strip():
        raise InputError(f"{flag} needs at least one value, e.g. {flag} {lo},{min(hi, lo * 10)}.")
    values: list[int] = []
    for i, raw in enumerate(str(text).split(",")):
        item = raw.strip()
        if not item:
            raise InputError(
                f"{flag}: empty item at position {i + 1} in {text!r}.",
                hint=f"Use a comma-separated list of integers, e.g. {flag} 80,90,100.",
            )
        if not _INT_RE.match(item):
            raise InputError(f"{flag}: {item!r} is not an integer (in {text!r}).")
        value = int(item)
        if value < lo or value > hi:
            raise InputError(f"{flag}: {value} is out of range; values must be between {lo} and {hi}.")
        if value in values:
            raise InputError(f"{flag}: {value} appears more than once in {text!r}; grid values must be unique.")
        values.append(value)
    return values


def check_test_size(value: Any, flag: str = "--test-size") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise InputError(f"{flag} must be a number, got {value!r}.")
    if not 0 < value < 1:
        raise InputError(f"{flag} must be strictly between 0 and 1, got {value}.")
    return float(value)


def _is_remote(path: str) -> bool:
    return "://" in path or path.startswith(("dbfs:", "/Volumes/", "/dbfs/"))


def check_data(data: str | None, flag: str = "--data") -> str | None:
    """None stays None (bundled diabetes data). A local path must exist and be CSV/Parquet (file or
    directory) and is made absolute (Airflow workers do not share our cwd). Remote URIs pass through."""
    if data is None:
        return None
    data = str(data).strip()
    if not data:
        raise InputError(f"{flag} must not be empty.")
    if _is_remote(data):
        return data
    path = Path(data).expanduser()
    if not path.exists():
        raise InputError(f"{flag}: {data} does not exist.", hint="Give a CSV or Parquet file (or directory).")
    if path.is_file():
        if not os.access(path, os.R_OK):
            raise InputError(f"{flag}: {data} is not readable (permission denied).")
        if path.suffix.lower() not in DATA_SUFFIXES:
            raise InputError(
                f"{flag}: {data} is not a CSV or Parquet file (expected {', '.join(DATA_SUFFIXES)})."
            )
    elif path.is_dir():
        names = [p.name.lower() for p in path.iterdir()]
        if not any(n.endswith(DATA_SUFFIXES) for n in names):
            raise InputError(f"{flag}: directory {data} holds no .csv or .parquet files.")
    else:
        raise InputError(f"{flag}: {data} is neither a file nor a directory.")
    return str(path.resolve())


def check_target(target: str, flag: str = "--target") -> str:
    if not isinstance(target, str) or not target.strip():
        raise InputError(f"{flag} must be a non-empty column name.")
    return target


def register_value(register: str | None, no_register: bool) -> str | None:
    if no_register and register:
        raise InputError("--register and --no-register are mutually exclusive.")
    if no_register:
        return None
    if register is None:
        return DEFAULT_REGISTERED_MODEL
    register = register.strip()
    if not register:
        raise InputError("--register needs a model name (use --no-register to skip registration).")
    return register


def _common_conf(
    *, data: str | None, target: str, test_size: float, random_state: int, register: str | None
) -> dict[str, Any]:
    return {
        "data": check_data(data),
        "target": check_target(target),
        "test_size": check_test_size(test_size),
        # numpy/scikit-learn seeds must fit in 32 bits: a larger one would only fail later, in the job
        "random_state": check_int(random_state, "--random-state", 0, RANDOM_STATE_MAX),
        "register_model": register,
    }


def build_model_conf(
    *,
    max_depth: int = 80,
    n_estimators: int = 100,
    data: str | None = None,
    target: str = "target",
    test_size: float = 0.2,
    random_state: int = 42,
    register: str | None = DEFAULT_REGISTERED_MODEL,
) -> dict[str, Any]:
    """The build_model conf, validated like the DAG's Params (InputError names the bad flag)."""
    conf = {
        "max_depth": check_int(max_depth, "--max-depth", *MAX_DEPTH_RANGE),
        "n_estimators": check_int(n_estimators, "--n-estimators", *N_ESTIMATORS_RANGE),
    }
    conf.update(
        _common_conf(data=data, target=target, test_size=test_size, random_state=random_state, register=register)
    )
    return conf


def grid_conf(
    *,
    max_depth: str | list[int] = DEFAULT_GRID_MAX_DEPTH_TEXT,
    n_estimators: str | list[int] = DEFAULT_GRID_N_ESTIMATORS_TEXT,
    cv: int = 3,
    data: str | None = None,
    target: str = "target",
    test_size: float = 0.2,
    random_state: int = 42,
    register: str | None = DEFAULT_REGISTERED_MODEL,
) -> dict[str, Any]:
    """The grid_search / grid_search_spark conf, validated like the DAG's Params."""

    def _list(value: str | list[int], flag: str, rng: tuple[int, int]) -> list[int]:
        if isinstance(value, str):
            return parse_int_list(value, flag, *rng)
        return parse_int_list(",".join(str(v) for v in value), flag, *rng)

    conf: dict[str, Any] = {
        "max_depth": _list(max_depth, "--max-depth", MAX_DEPTH_RANGE),
        "n_estimators": _list(n_estimators, "--n-estimators", N_ESTIMATORS_RANGE),
        "cv": check_int(cv, "--cv", *CV_RANGE),
    }
    conf.update(
        _common_conf(data=data, target=target, test_size=test_size, random_state=random_state, register=register)
    )
    return conf
