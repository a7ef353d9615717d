"""The pipeline registry, and local validation against the DAGs' own Params schemas.

Each pipeline is declared once, as data, in dags/common/pipelines.json (dag id, CLI name, Param groups, result
kind, key metric, one-line help); the Param groups' JSON schemas are dags/common/params.json. Both are the copies
bundled with this installation (see :mod:`mlopsctl.paths`), the files the DAGs build their `Param`s from. The run
commands' options and their --help ranges (commands/_common.py), the `dags`/`status` listings and the reading of
a run's result (runs.py, tracking.py) all derive from `PIPELINES`.

Validation applies the schemas with `jsonschema`, the library Airflow's `Param` validates with. Everything here is
pure: it judges user input before any request is sent, and raises `InputError` (exit USAGE) with a message that
names the offending flag.
"""

from __future__ import annotations

import copy
import json
import math
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlopsctl.datasources import check_data
from mlopsctl.errors import InputError

#: The kind of result a pipeline logs, which is also the `mlopsctl.role` tag of its headline MLflow run. An open
#: enumeration: "single" (one run) and "parent" (a parent run, one child run per point) today; a kind that
#: tracking.py has no child reader for is read as its headline run alone.
ResultKind = str


@dataclass(frozen=True)
class Pipeline:
    name: str  # CLI name, e.g. build-model
    dag_id: str  # Airflow dag_id, e.g. build_model
    params: tuple[str, ...]  # its Param groups in params.json, in the DAG's order
    result: ResultKind
    key_metric: str  # metric shown by `status` (on the headline run)
    help: str  # one line, for listings

    @property
    def schemas(self) -> dict[str, dict[str, Any]]:
        """The DAG's Params, name -> JSON schema (with its default), in the DAG's order."""
        return {name: schema for group in self.params for name, schema in _GROUPS[group].items()}


def dags_common_file(name: str) -> Path:
    from mlopsctl.paths import bundled_dags_dir

    return bundled_dags_dir() / "common" / name


def _read(name: str) -> dict[str, Any]:
    return json.loads(dags_common_file(name).read_text(encoding="utf-8"))


_GROUPS: dict[str, dict[str, dict[str, Any]]] = {
    group: schemas for group, schemas in _read("params.json").items() if not group.startswith("$")
}
PIPELINES: dict[str, Pipeline] = {
    entry["name"]: Pipeline(entry["name"], entry["dag_id"], tuple(entry["params"]), entry["result"],
                            entry["key_metric"], entry["help"])
    for entry in _read("pipelines.json")["pipelines"]
}
PIPELINE_NAMES = tuple(PIPELINES)
_BY_DAG = {p.dag_id: p for p in PIPELINES.values()}


def get_pipeline(name: str | Pipeline) -> Pipeline:
    """Pipeline by CLI name (or dag_id); InputError listing the known names otherwise."""
    if isinstance(name, Pipeline):
        return name
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


# --- the Params contract ---------------------------------------------------------------------------


def param_schemas(pipeline: str | Pipeline) -> dict[str, dict[str, Any]]:
    """A pipeline's DAG Params (by CLI name, dag_id or Pipeline), name -> JSON schema with its default."""
    return get_pipeline(pipeline).schemas


def default_registered_model() -> str:
    """The register_model Param's default (the same in every pipeline that registers a model)."""
    return next(p.schemas["register_model"]["default"] for p in PIPELINES.values() if "register_model" in p.schemas)


_FLAG_NAMES = {"register_model": "--register"}


def flag_for(param: str) -> str:
    """The CLI flag that sets a Param: max_depth -> --max-depth."""
    return _FLAG_NAMES.get(param, "--" + param.replace("_", "-"))


_TYPE_NAMES = {"integer": "an integer", "number": "a number", "string": "a string", "array": "a list"}


def _bounds(schema: dict[str, Any]) -> str:
    lo, hi = schema.get("minimum"), schema.get("maximum")
    if lo is not None and hi is not None:
        return f"between {lo} and {hi}"
    return f">= {lo}" if lo is not None else f"<= {hi}"


def _message(error: Any, schemas: dict[str, dict[str, Any]], texts: dict[str, str]) -> str:
    """One sentence naming the flag, for a jsonschema error on the conf object (path[0] is the Param)."""
    param = error.path[0]
    flag = flag_for(param)
    value, schema, keyword = error.instance, error.schema, error.validator
    item = len(error.path) > 1  # one element of a grid list
    in_text = f" in {texts[param]!r}" if param in texts else ""
    if keyword in ("minimum", "maximum"):
        if item:
            return f"{flag}: {value} is out of range; values must be {_bounds(schema)}."
        return f"{flag} must be {_bounds(schema)}, got {value}."
    if keyword in ("exclusiveMinimum", "exclusiveMaximum"):
        lo, hi = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
        return f"{flag} must be strictly between {lo} and {hi}, got {value}."
    if keyword in ("minLength", "pattern"):
        return f"{flag} must not be empty or blank."
    if keyword == "minItems":
        example = ",".join(map(str, schemas[param]["default"] or schemas[param]["examples"][0]))
        return f"{flag} needs at least one value, e.g. {flag} {example}."
    if keyword == "uniqueItems":
        dup = next(v for i, v in enumerate(value) if v in value[:i])
        return f"{flag}: {dup} appears more than once{in_text}; grid values must be unique."
    if keyword == "type":
        expected = schema["type"] if isinstance(schema["type"], str) else schema["type"][-1]
        kind = _TYPE_NAMES.get(expected, expected)
        if item:
            return f"{flag}: {value!r} is not {kind}{in_text}."
        return f"{flag} must be {kind}, got {value!r}."
    return f"{flag}: {error.message}."


def validate_conf(pipeline: str | Pipeline, conf: dict[str, Any], texts: dict[str, str] | None = None) -> None:
    """Judge `conf` with the DAG's own schemas, as Airflow's `Param.resolve` does at trigger time.

    The first failing Param (in the DAG's order) becomes an InputError naming its flag; `texts` holds the
    typed text of list flags, quoted in the message.
    """
    from jsonschema import FormatChecker
    from jsonschema.validators import validator_for

    schemas = param_schemas(pipeline)
    for name, value in conf.items():
        if isinstance(value, float) and math.isnan(value):  # JSON has no NaN; the schema cannot say so
            raise InputError(f"{flag_for(name)} must be a number, got nan.")
    document = {"type": "object", "properties": schemas}
    validator = validator_for(document)(document, format_checker=FormatChecker())
    order = list(schemas)
    errors = sorted(validator.iter_errors(conf), key=lambda e: order.index(e.path[0]) if e.path else -1)
    if errors:
        raise InputError(_message(errors[0], schemas, texts or {}))


_INT_RE = re.compile(r"^[+-]?\d+$")


def parse_token_list(text: str, flag: str) -> list[str]:
    """'NA, ?,-' -> ['NA', '?', '-'] (blanks around a token dropped); an empty list is an InputError."""
    tokens = [t.strip() for t in text.split(",") if t.strip()]
    if not tokens:
        raise InputError(f"{flag} needs at least one token, e.g. {flag} 'NA,?'.")
    return tokens


def parse_int_list(text: str, flag: str) -> list[int]:
    """Parse a grid list like '80,90,100' into integers (ranges and uniqueness are the schema's to judge)."""
    if text is None or not str(text).strip():
        return []
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
        values.append(int(item))
    return values


def register_value(register: str | None, no_register: bool) -> str | None:
    """--register NAME / --no-register -> the register_model Param (the schema's default name if neither)."""
    if no_register and register:
        raise InputError("--register and --no-register are mutually exclusive.")
    if no_register:
        return None
    if register is None:
        return default_registered_model()
    register = register.strip()
    if not register:
        raise InputError("--register needs a model name (use --no-register to skip registration).")
    return register


def build_conf(pipeline: str | Pipeline, **values: Any) -> dict[str, Any]:
    """A pipeline's conf: the DAG's defaults updated with `values` (Param names; `register` for register_model;
    a list flag may be given as its typed text, '80,90,100'), validated like the DAG's Params (InputError names
    the bad flag)."""
    pipeline = get_pipeline(pipeline)
    schemas = pipeline.schemas
    if "register" in values:
        values["register_model"] = values.pop("register")
    unknown = set(values) - set(schemas)
    if unknown:
        raise TypeError(f"unknown {pipeline.name} Params: {', '.join(sorted(unknown))}")
    conf = {name: copy.deepcopy(schema["default"]) for name, schema in schemas.items()}
    texts: dict[str, str] = {}
    for name, value in values.items():
        schema = schemas[name]
        if "array" in schema_types(schema) and isinstance(value, str):
            texts[name] = value
            if schema.get("items", {}).get("type") == "integer":
                value = parse_int_list(value, flag_for(name))
            else:
                value = parse_token_list(value, flag_for(name))
        conf[name] = value
    validate_conf(pipeline, conf, texts)
    if "data" in conf:
        conf["data"] = check_data(conf["data"])
    return conf


def schema_types(schema: dict[str, Any]) -> list[str]:
    """The JSON types a Param schema allows: "type" as a list."""
    kind = schema.get("type", [])
    return [kind] if isinstance(kind, str) else list(kind)
