"""The DAG Params of the mlopsctl pipelines, as JSON schemas (so Airflow rejects bad conf with HTTP 400).

`SCHEMAS` is plain data (no Airflow import) so tests and tools can compare it with the contract;
`build_model_params()` / `grid_params()` wrap it in `airflow.sdk.Param` for the DAG files.
"""

from __future__ import annotations

import copy
from typing import Any

DEFAULT_REGISTERED_MODEL = "mlopsctl-random-forest"

_COMMON: dict[str, dict[str, Any]] = {
    "data": {
        "default": None,
        "type": ["null", "string"],
        "title": "Data",
        "description": "CSV or Parquet path (or a directory of Parquet files) readable by the Spark driver; "
        "null = scikit-learn's bundled diabetes data.",
    },
    "target": {
        "default": "target",
        "type": "string",
        "minLength": 1,
        "title": "Target column",
        "description": "Name of the numeric column to predict.",
    },
    "test_size": {
        "default": 0.2,
        "type": "number",
        "exclusiveMinimum": 0,
        "exclusiveMaximum": 1,
        "title": "Held-out fraction",
        "description": "Fraction of rows held out to compute rmse/mae/r2.",
    },
    "random_state": {
        "default": 42,
        "type": "integer",
        "minimum": 0,
        "maximum": 4294967295,  # numpy's seed range (2**32 - 1); the CLI checks the same bound locally
        "title": "Random seed",
        "description": "Seed of the held-out split, the CV folds and the random forest.",
    },
    "register_model": {
        "default": DEFAULT_REGISTERED_MODEL,
        "type": ["null", "string"],
        "title": "Registered model name",
        "description": "MLflow registered model to add a version to; null or empty = do not register.",
    },
}

BUILD_MODEL: dict[str, dict[str, Any]] = {
    "max_depth": {
        "default": 80,
        "type": "integer",
        "minimum": 1,
        "maximum": 1000,
        "title": "max_depth",
        "description": "Maximum depth of each tree of the RandomForestRegressor.",
    },
    "n_estimators": {
        "default": 100,
        "type": "integer",
        "minimum": 1,
        "maximum": 5000,
        "title": "n_estimators",
        "description": "Number of trees of the RandomForestRegressor.",
    },
    **_COMMON,
}

GRID: dict[str, dict[str, Any]] = {
    "max_depth": {
        "default": [80, 90, 100, 110],
        "type": "array",
        "items": {"type": "integer", "minimum": 1, "maximum": 1000},
        "minItems": 1,
        "uniqueItems": True,
        "title": "max_depth grid",
        "description": "Values of max_depth to try.",
    },
    "n_estimators": {
        "default": [100, 200, 300],
        "type": "array",
        "items": {"type": "integer", "minimum": 1, "maximum": 5000},
        "minItems": 1,
        "uniqueItems": True,
        "title": "n_estimators grid",
        "description": "Values of n_estimators to try.",
    },
    "cv": {
        "default": 3,
        "type": "integer",
        "minimum": 2,
        "maximum": 20,
        "title": "CV folds",
        "description": "Number of k-fold cross-validation folds.",
    },
    **_COMMON,
}

SCHEMAS: dict[str, dict[str, dict[str, Any]]] = {
    "build_model": BUILD_MODEL,
    "grid_search": GRID,
    "grid_search_spark": GRID,
}


def _to_params(spec: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from airflow.sdk import Param

    out = {}
    for name, schema in spec.items():
        schema = copy.deepcopy(schema)
        default = schema.pop("default")
        out[name] = Param(default, **schema)
    return out


def build_model_params() -> dict[str, Any]:
    return _to_params(BUILD_MODEL)


def grid_params() -> dict[str, Any]:
    return _to_params(GRID)
