"""The DAG Params of the mlopsctl pipelines, built from the pipeline registry (so Airflow rejects bad conf with
HTTP 400).

pipelines.json declares each pipeline once (dag id, CLI name, Param groups, result kind, help); params.json
holds the Param groups as JSON schemas. The CLI reads the same two files to build its options and validate a
run's conf before sending it. `SCHEMAS` is a pipeline's Params per dag_id (no Airflow import), and
`params_for(dag_id)` wraps them in `airflow.sdk.Param` for the DAG files.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
PARAMS_FILE = HERE / "params.json"
REGISTRY_FILE = HERE / "pipelines.json"

_GROUPS: dict[str, Any] = json.loads(PARAMS_FILE.read_text(encoding="utf-8"))
REGISTRY: dict[str, dict[str, Any]] = {
    entry["dag_id"]: entry for entry in json.loads(REGISTRY_FILE.read_text(encoding="utf-8"))["pipelines"]
}
SCHEMAS: dict[str, dict[str, dict[str, Any]]] = {
    dag_id: {name: schema for group in entry["params"] for name, schema in _GROUPS[group].items()}
    for dag_id, entry in REGISTRY.items()
}


def params_for(dag_id: str) -> dict[str, Any]:
    """The registered pipeline's Params, as `airflow.sdk.Param`s in the DAG's order."""
    from airflow.sdk import Param

    out = {}
    for name, schema in SCHEMAS[dag_id].items():
        schema = copy.deepcopy(schema)
        default = schema.pop("default")
        out[name] = Param(default, **schema)
    return out
