"""`mlopsctl models list|versions|show` on a real MLflow registry (a sqlite store, read through MLflow's client as
a workspace's registry is): aliases per model and per version, client-side sorts, the resolved version in full,
and one clear exit code for each kind of bad reference. The REST path against a real MLflow server and the
Unity Catalog path against the Databricks stand-in: tests/integration/test_databricks_mlflow.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlopsctl.appcontext import Environment
from mlopsctl.errors import ExitCode, InputError
from mlopsctl.tracking import Tracking, parse_model_ref, signature_of, sort_versions

MLMODEL = """\
flavors:
  python_function: {loader_module: mlflow.sklearn}
signature:
  inputs: '[{"type": "double", "name": "age", "required": true}, {"type": "string", "name": "sex", "required": true}]'
  outputs: '[{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1]}}]'
  params: null
"""
# version -> (rmse, r2, mae, pipeline dag id)
VERSIONS = {1: (55.0, 0.40, 44.0, "build_model"), 2: (51.0, 0.48, 42.0, "grid_search"), 3: (58.0, 0.35, 47.0, "build_model")}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A sqlite tracking store with model `rf` (versions 1-3, each from its own run; alias champion -> 2;
    version 2 carries an MLmodel with a signature and a promotion record) and model `empty` (no versions)."""
    from mlflow import MlflowClient

    home = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{home / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.create_experiment("/mlopsctl/build_model", artifact_location=(home / "artifacts").as_uri())
    mlmodel = home / "model" / "MLmodel"
    mlmodel.parent.mkdir()
    mlmodel.write_text(MLMODEL)
    client.create_registered_model("rf")
    client.create_registered_model("empty")
    for number, (rmse, r2, mae, dag_id) in VERSIONS.items():
        run = client.create_run(exp, tags={"mlopsctl.pipeline": dag_id, "mlopsctl.role": "single"})
        rid = run.info.run_id
        client.log_param(rid, "data", f"data{number}.csv")
        for key, value in (("rmse", rmse), ("r2", r2), ("mae", mae)):
            client.log_metric(rid, key, value)
        client.log_artifact(rid, str(mlmodel), artifact_path="model")
        client.set_terminated(rid)
        client.create_model_version("rf", f"runs:/{rid}/model", run_id=rid)
    client.set_registered_model_alias("rf", "champion", "2")
    client.set_registered_model_alias("rf", "challenger", "3")
    client.set_model_version_tag("rf", "2", "mlopsctl_prev_champion", "1")
    return uri


@pytest.fixture
def environment(registry: str, project: Path) -> Environment:
    return Environment(tracking=lambda settings: Tracking(registry))


def test_list_shows_each_model_with_aliases_latest_version_and_count(cli) -> None:
    code, out, err = cli("models", "list", "--json")
    assert code == 0, err
    assert json.loads(out)["models"] == [
        {"name": "empty", "aliases": {}, "latest_version": None, "versions": 0},
        {"name": "rf", "aliases": {"champion": "2", "challenger": "3"}, "latest_version": "3", "versions": 3},
    ]
    code, out, _ = cli("models", "list")
    print(out)
    print(cli("models", "versions", "rf").stdout)
    assert code == 0 and "champion -> 2" in out and "challenger -> 3" in out


def test_versions_newest_first_with_run_pipeline_data_metrics_and_aliases(cli) -> None:
    code, out, err = cli("models", "versions", "rf", "--json")
    assert code == 0, err
    rows = json.loads(out)["versions"]
    assert [r["version"] for r in rows] == ["3", "2", "1"]
    assert [r["aliases"] for r in rows] == [["challenger"], ["champion"], []]
    assert [r["pipeline"] for r in rows] == ["build-model", "grid-search", "build-model"]
    assert [r["data"] for r in rows] == ["data3.csv", "data2.csv", "data1.csv"]
    assert [(r["rmse"], r["r2"], r["mae"]) for r in rows] == [VERSIONS[3][:3], VERSIONS[2][:3], VERSIONS[1][:3]]
    assert all(r["run_id"] and r["created"] for r in rows)
    code, out, _ = cli("models", "versions", "rf")
    assert code == 0 and "champion" in out and "grid-search" in out and "51.0000" in out


@pytest.mark.parametrize(("sort", "order"), [("rmse", ["2", "1", "3"]), ("mae", ["2", "1", "3"]),
                                             ("r2", ["2", "1", "3"]), ("created", ["3", "2", "1"])])
def test_versions_sort_on_the_client_and_limit_after_sorting(cli, sort: str, order: list[str]) -> None:
    code, out, err = cli("models", "versions", "rf", "--sort", sort, "--json")
    assert code == 0, err
    assert [r["version"] for r in json.loads(out)["versions"]] == order
    code, out, _ = cli("models", "versions", "rf", "--sort", sort, "--limit", "1", "--json")
    assert [r["version"] for r in json.loads(out)["versions"]] == order[:1]


def test_show_resolves_an_alias_and_prints_the_version_in_full(cli) -> None:
    code, out, err = cli("models", "show", "rf@champion", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert (doc["name"], doc["version"], doc["alias"], doc["aliases"]) == ("rf", "2", "champion", ["champion"])
    assert doc["metrics"] == {"rmse": 51.0, "r2": 0.48, "mae": 42.0} and doc["params"] == {"data": "data2.csv"}
    assert doc["signature"] == {"inputs": [{"name": "age", "type": "double"}, {"name": "sex", "type": "string"}],
                                "outputs": [{"name": None, "type": "tensor"}]}
    assert doc["promotion"] == {"mlopsctl_prev_champion": "1"}
    assert doc["run_url"].endswith(f"/runs/{doc['run_id']}")
    code, out, _ = cli("models", "show", "rf/1", "--json")
    assert code == 0 and json.loads(out)["version"] == "1" and json.loads(out)["promotion"] == {}
    code, out, _ = cli("models", "show", "rf@champion")
    print(out)
    assert code == 0
    for needle in ("rf version 2 (alias champion)", "age: double", "mlopsctl_prev_champion", "rmse", "Run: http"):
        assert needle in out, needle


@pytest.mark.parametrize(("argv", "code", "needle"), [
    (("show", "rf/9"), ExitCode.NOT_FOUND, "No version 9 of registered model 'rf'"),
    (("show", "nope/1"), ExitCode.NOT_FOUND, "No registered model 'nope'"),
    (("show", "rf@nope"), ExitCode.NOT_FOUND, "has no alias 'nope'"),
    (("show", "nope@champion"), ExitCode.NOT_FOUND, "No registered model 'nope'"),
    (("versions", "nope"), ExitCode.NOT_FOUND, "No registered model 'nope'"),
    (("show", "rf"), ExitCode.USAGE, "names no version or alias"),
    (("show", "rf/x"), ExitCode.USAGE, "positive integer"),
    (("versions", "rf", "--sort", "speed"), ExitCode.USAGE, "--sort must be one of created, rmse, mae, r2"),
    (("versions", "rf", "--limit", "0"), ExitCode.USAGE, "--limit"),
])
def test_bad_references_exit_with_one_clear_message(cli, argv: tuple[str, ...], code: int, needle: str) -> None:
    got, out, err = cli("models", *argv)
    assert got == code and needle in err, err
    assert out == "" and "Traceback" not in err


def test_reference_parsing_and_sorting_rules() -> None:
    assert parse_model_ref("main.ml.rf@champion") == ("main.ml.rf", None, "champion")
    assert parse_model_ref("rf/12") == ("rf", "12", None)
    for bad in ("rf", "rf/0", "@x", "rf@", "/3"):
        with pytest.raises(InputError):
            parse_model_ref(bad)
    rows = [{"version": "1", "rmse": 3.0}, {"version": "2", "rmse": None}, {"version": "3", "rmse": 1.0},
            {"version": "4", "rmse": 3.0}, {"version": "10", "rmse": None}]
    assert [r["version"] for r in sort_versions(rows, "rmse")] == ["3", "4", "1", "10", "2"]  # ties: newest first
    assert signature_of("flavors: {}\n") is None
