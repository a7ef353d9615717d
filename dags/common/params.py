"""The DAG Params of the mlopsctl pipelines, read from params.json (so Airflow rejects bad conf with HTTP 400).

params.json is the one statement of the contract: the CLI validates a run's conf against the same file
before sending it. `SCHEMAS` is that data per dag_id (no Airflow import), and `build_model_params()` /
`grid_params()` wrap it in `airflow.sdk.Param` for the DAG files.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

PARAMS_FILE = Path(__file__).with_name("params.json")
_DATA: dict[str, Any] = json.loads(PARAMS_FILE.read_text(encoding="utf-8"))

# a pipeline's Params: its kind's, then the common ones
BUILD_MODEL: dict[str, dict[str, Any]] = {**_DATA["single"], **_DATA["common"]}
GRID: dict[str, dict[str, Any]] = {**_DATA["grid"], **_DATA["common"]}
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
