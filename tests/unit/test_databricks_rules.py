"""The stand-in's rules (tests/fixtures/databricks/rules.py): serverless environment versions and cluster specs
are refused at submit as a workspace refuses them, in Databricks' error shape, each rule citing its source; a
declared package replaces the one the compute lends, and says so."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.databricks import rules
from tests.fixtures.databricks.environments import BASE, CLIENT_BASE, DependencySet, compute_of, environments
from tests.fixtures.databricks_server import (
    DatabricksTestServer,
    databricks_server,  # noqa: F401 - fixture
)

_PY = {"python_file": "/Workspace/a.py"}
_CLUSTER = {"spark_version": "17.3.x-cpu-ml-scala2.13", "node_type_id": "i3.xlarge", "num_workers": 1}


def _serverless(version: str) -> dict[str, Any]:
    return {"environments": [{"environment_key": "e", "spec": {"environment_version": version}}],
            "tasks": [{"task_key": "t", "environment_key": "e", "spark_python_task": _PY}]}


def _new_cluster(**cluster: Any) -> dict[str, Any]:
    return {"tasks": [{"task_key": "t", "new_cluster": {**_CLUSTER, **cluster}, "spark_python_task": _PY}]}


def _post(server: DatabricksTestServer, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.url}/api/2.2/jobs/runs/submit", json=body,
                      headers={"Authorization": f"Bearer {server.token}"})


#: where a rule's source may be: Databricks' docs, or the code Databricks publishes for its APIs
SOURCES = ("docs.databricks.com", "databricks-sdk", "terraform-provider-databricks")


def test_every_rule_names_what_it_refuses_and_its_databricks_source() -> None:
    assert rules.RULES
    for name, rule in rules.BY_NAME.items():
        assert rule.name == name and rule.rule.strip()
        assert any(source in rule.source for source in SOURCES), rule


@pytest.mark.parametrize(("body", "rule", "expected"), [
    # the release notes' table: versions 1-3 ship a Spark 3.5 client; an unknown version is not one
    (_serverless("1"), "environment-version", "Databricks Connect 14.3.7 (Spark 3.5 client)"),
    (_serverless("2"), "environment-version", "Python 3.11.10 and Databricks Connect 15.4.5 (Spark 3.5 client)"),
    (_serverless("3"), "environment-version", "Databricks Connect 16.4.2 (Spark 3.5 client)"),
    (_serverless("9"), "environment-version", "'9' is not a released version"),
    # DATA_SECURITY_MODE_* names, is_single_node and use_ml_runtime need kind CLASSIC_PREVIEW
    (_new_cluster(data_security_mode="DATA_SECURITY_MODE_DEDICATED"), "cluster-kind",
     "data_security_mode DATA_SECURITY_MODE_DEDICATED can only be used when kind = CLASSIC_PREVIEW"),
    (_new_cluster(data_security_mode="SINGLE_USER", is_single_node=True), "cluster-kind", "is_single_node"),
    (_new_cluster(spark_version="17.3.x-scala2.13", use_ml_runtime=True), "cluster-kind", "use_ml_runtime"),
    # a runtime this workspace offers
    (_new_cluster(spark_version="17.3.x-ml-scala2.13"), "spark-version", "'17.3.x-ml-scala2.13'"),
    (_new_cluster(spark_version="13.3.x-cpu-ml-scala2.12"), "spark-version", "Invalid spark version"),
    (_new_cluster(spark_version="17.3.x-cpu-ml-scala2.12"), "spark-version", "Invalid spark version"),
    # no ML runtime in standard access mode, under either name
    (_new_cluster(data_security_mode="USER_ISOLATION"), "ml-runtime-access-mode", "standard access mode"),
    (_new_cluster(kind="CLASSIC_PREVIEW", data_security_mode="DATA_SECURITY_MODE_STANDARD",
                  spark_version="17.3.x-scala2.13", use_ml_runtime=True), "ml-runtime-access-mode",
     "17.3.x-scala2.13 with use_ml_runtime"),
])
def test_submit_refuses_by_the_rules(databricks_server, body, rule, expected) -> None:  # noqa: F811
    resp = _post(databricks_server, body)
    assert resp.status_code == 400, resp.text
    error = resp.json()
    assert set(error) == {"error_code", "message"} and error["error_code"] == "INVALID_PARAMETER_VALUE"
    assert expected in error["message"]
    fixed = [part.strip() for part in re.split(r"\{[^}]*\}", rules.BY_NAME[rule].rule) if len(part.strip()) > 3]
    assert fixed and all(part in error["message"] for part in fixed)  # the rule's own words
    assert databricks_server.runs() == []


@pytest.mark.parametrize("body", [
    _serverless("4"),
    _serverless("5"),
    _new_cluster(data_security_mode="SINGLE_USER"),
    _new_cluster(data_security_mode="SINGLE_USER", spark_version="16.4.x-scala2.12", num_workers=0,
                 spark_conf={"spark.databricks.cluster.profile": "singleNode", "spark.master": "local[*, 4]"},
                 custom_tags={"ResourceClass": "SingleNode"}),
    _new_cluster(kind="CLASSIC_PREVIEW", data_security_mode="DATA_SECURITY_MODE_DEDICATED", is_single_node=True,
                 spark_version="18.0.x-scala2.13", use_ml_runtime=True),
    _new_cluster(data_security_mode="USER_ISOLATION", spark_version="17.3.x-scala2.13"),
])
def test_submit_accepts_what_the_rules_allow(databricks_server, body) -> None:  # noqa: F811
    """(The runs fail at once: /Workspace/a.py does not exist; nothing is installed for them.)"""
    resp = _post(databricks_server, body)
    assert resp.status_code == 200, resp.text
    databricks_server.wait_idle()


def test_a_registered_cluster_a_workspace_could_not_have_created_is_refused(databricks_server) -> None:  # noqa: F811
    databricks_server.clusters["0101-bad"] = {"spark_version": "17.3.x-cpu-ml-scala2.13",
                                              "data_security_mode": "USER_ISOLATION"}
    resp = _post(databricks_server, {"tasks": [{"task_key": "t", "existing_cluster_id": "0101-bad",
                                                "spark_python_task": _PY}]})
    assert resp.status_code == 400 and "Cluster 0101-bad" in resp.json()["message"]
    assert "standard access mode" in resp.json()["message"]


def test_serverless_versions_4_and_5_run_their_spark_clients() -> None:
    """The job of a serverless environment gets its version's Spark client (4.0.x for 4, Databricks Connect 18's
    Spark 4.1 for 5); the Connect server and its workers keep the stand-in's own PySpark."""
    for version, line in (("4", "4.0."), ("5", "4.1.")):
        env = {"e": {"environment_key": "e", "spec": {"environment_version": version}}}
        compute = compute_of({"environment_key": "e"}, env, {})
        assert compute.connect and compute.base == BASE and compute.runtime_version == f"client.{version}"
        assert compute.client is not None and compute.client[1:] == CLIENT_BASE
        assert compute.client[0].startswith(f"pyspark-client=={line}")
    assert [v for v, e in rules.SERVERLESS_ENVIRONMENTS.items() if e.client is None] == ["1", "2", "3"]


def test_a_declared_base_package_replaces_the_computes_and_only_its_pin_is_lifted(tmp_path: Path) -> None:
    wheel = tmp_path / "numpy-2.0.0-py3-none-any.whl"
    deps = DependencySet(BASE, ("pandas==2.2.3", "mlflow==3.17.2"), (wheel,))
    assert deps.replaced() == ("pandas", "numpy")
    assert deps.installs() == ("pyspark[connect]", "pyarrow", "pandas==2.2.3", "mlflow==3.17.2")
    builder = environments(tmp_path / "cache")
    full = builder.constraints().read_text().splitlines()
    narrowed = builder.constraints(deps.replaced()).read_text().splitlines()
    pins = [ln for ln in full if ln.startswith(("pandas==", "numpy==", "pyarrow=="))]
    assert {ln.split("==")[0] for ln in pins} == {"pandas", "numpy", "pyarrow"}  # (numpy: one line per marker)
    assert [ln for ln in narrowed if ln.startswith(("pandas==", "numpy==", "pyarrow=="))] == [
        ln for ln in pins if ln.startswith("pyarrow==")]
    assert len(narrowed) == len(full) - len(pins) + 1  # nothing else lifted
    assert DependencySet(BASE, ("mlflow==3.17.2",), ()).replaced() == ()
