"""Every limit the CLI enforces is the DAG's: the CLI's local validation and Airflow's own `Param.resolve`
(on the Params of the parsed DAGs) give the same verdict at and just past every bound of every schema."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest

from mlopsctl.errors import InputError
from mlopsctl.pipelines import PIPELINES, build_conf, flag_for, param_schemas

# Every keyword a Param schema may use. A new limit keyword fails test_every_schema_keyword_is_probed
# until _probes() knows how to test it.
ANNOTATIONS = {"default", "title", "description", "examples"}
LIMITS = {"type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "pattern",
          "items", "minItems", "uniqueItems", "enum"}
WRONG_TYPE = {"integer": 1.5, "number": "0.5", "string": 5, "array": 5, "null": 5}


def _probes(schema: dict[str, Any], default: Any) -> list[tuple[str, Any, bool]]:
    """(what, value, valid) pairs at and just past each limit of `schema` (a grid Param: per point)."""
    out: list[tuple[str, Any, bool]] = []
    default = default if default is not None else (schema.get("examples") or [None])[0]
    types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    if "null" in types:
        out.append(("null", None, True))
    out.append((f"not {types}", WRONG_TYPE[types[-1]], False))
    if "minimum" in schema:
        out += [("minimum", schema["minimum"], True), ("minimum - 1", schema["minimum"] - 1, False)]
    if "maximum" in schema:
        out += [("maximum", schema["maximum"], True), ("maximum + 1", schema["maximum"] + 1, False)]
    if "exclusiveMinimum" in schema:
        lo = schema["exclusiveMinimum"]
        out += [("exclusiveMinimum", lo, False), ("just above", math.nextafter(lo, math.inf), True)]
    if "exclusiveMaximum" in schema:
        hi = schema["exclusiveMaximum"]
        out += [("exclusiveMaximum", hi, False), ("just below", math.nextafter(hi, -math.inf), True)]
    if "minLength" in schema or "pattern" in schema:
        out += [("empty", "", False), ("blank", " \t", False), ("one character", "y", True)]
    if "," in schema.get("pattern", ""):  # a list item that the CLI's comma-separated flag could not carry
        out += [("a comma", "a,b", False), ("no comma", "a b", True)]
    if "enum" in schema:
        out += [(f"enum {v!r}", v, True) for v in schema["enum"]] + [("not in enum", "__none__", False)]
    if "items" in schema:
        point = schema["items"]
        for what, value, valid in _probes(point, None):
            out.append((f"point {what}", [value], valid))
    if "minItems" in schema:
        out += [("no points", [], False), ("minItems points", default[: schema["minItems"]], True)]
    if schema.get("uniqueItems"):
        out += [("a repeated point", [default[0], default[0]], False), ("distinct points", default[:2], True)]
    return out


def _cli_accepts(dag_id: str, name: str, value: Any) -> bool:
    try:
        build_conf(dag_id, **{name: copy.deepcopy(value)})
    except InputError as exc:
        assert exc.message.startswith(flag_for(name)), exc.message  # the message names the flag
        return False
    return True


def _airflow_accepts(param: Any, value: Any) -> bool:
    from airflow.sdk.exceptions import ParamValidationError

    try:
        copy.deepcopy(param).resolve(copy.deepcopy(value))
    except ParamValidationError:
        return False
    return True


DAG_IDS = [p.dag_id for p in PIPELINES.values()]


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_the_cli_reads_the_dags_params(dagbag, dag_id: str) -> None:
    """Same Params, same defaults, same schemas: the CLI's file is the one the DAG was built from."""
    dag = dagbag.dags[dag_id]
    schemas = param_schemas(dag_id)
    assert list(dag.params.keys()) == list(schemas)
    for name, schema in schemas.items():
        param = dag.params.get_param(name)
        assert param.value == schema["default"], name
        assert {k: v for k, v in param.schema.items() if k in LIMITS} == {
            k: v for k, v in schema.items() if k in LIMITS
        }, name
    defaults = build_conf(dag_id)
    assert defaults == {name: dag.params.get_param(name).value for name in schemas}


def test_every_schema_keyword_is_probed() -> None:
    for pipeline in PIPELINES:
        for name, schema in param_schemas(pipeline).items():
            point = schema.get("items", {})
            assert set(schema) | set(point) <= ANNOTATIONS | LIMITS, (pipeline, name)


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_every_limit_the_cli_enforces_is_the_dags(dagbag, dag_id: str) -> None:
    dag = dagbag.dags[dag_id]
    checked = 0
    for name, schema in param_schemas(dag_id).items():
        param = dag.params.get_param(name)
        for what, value, valid in _probes(schema, schema["default"]):
            verdicts = {"expected": valid, "cli": _cli_accepts(dag_id, name, value),
                        "airflow": _airflow_accepts(param, value)}
            assert len(set(verdicts.values())) == 1, (name, what, value, verdicts)
            checked += 1
    # the probes of today's schemas: fewer means a limit went unprobed
    assert checked == {"build_model": 38, "evaluate_model": 14, "batch_score": 23}.get(dag_id, 53), checked
