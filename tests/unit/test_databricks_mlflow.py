"""The stand-in's MLflow routes without an MLflow server: workspace rules, UC registry, presigned URLs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.databricks_mlflow import (
    ApiError,
    DatabricksMlflow,
    mlmodel_signature_problem,
    server_artifact_path,
    to_server_uri,
    to_workspace_uri,
    uc_name,
)

TOKEN = "dapi-test"
UC = "/api/2.0/mlflow/unity-catalog"
SIGNED_MLMODEL = """flavors: {}
signature:
  inputs: '[{"type": "double", "name": "x", "required": true}]'
  outputs: '[{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1]}}]'
"""


@pytest.fixture
def app(tmp_path: Path):
    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    root = tmp_path / "workspace"
    (root / "Shared" / "team").mkdir(parents=True)

    def workspace_path(path: str) -> Path:
        return root.joinpath(*[p for p in path.split("/") if p])

    # nothing listens on port 9: a request that reached the forwarder would fail with 503
    state = DatabricksMlflow("http://127.0.0.1:9", workspace_path, tmp_path / "uc", token=TOKEN)
    client = TestClient(Starlette(routes=state.routes()), base_url="http://testserver")
    client.headers["Authorization"] = f"Bearer {TOKEN}"
    return state, client


def test_artifact_locations_map_both_ways() -> None:
    assert to_workspace_uri("mlflow-artifacts:/3/abc/artifacts") == "dbfs:/databricks/mlflow-tracking/3/abc/artifacts"
    assert (to_workspace_uri("mlflow-artifacts:/3/models/m-1/artifacts")
            == "dbfs:/databricks/mlflow-tracking/3/logged_models/m-1/artifacts")
    assert to_workspace_uri("mlflow-artifacts:/3") == "dbfs:/databricks/mlflow-tracking/3"
    for uri in ("mlflow-artifacts:/3/abc/artifacts", "mlflow-artifacts:/3/models/m-1/artifacts"):
        assert to_server_uri(to_workspace_uri(uri)) == uri
    assert server_artifact_path("/WorkspaceInternal/Mlflow/Artifacts/3/Runs/abc/artifacts/x.png") == "3/abc/artifacts/x.png"
    assert (server_artifact_path("/WorkspaceInternal/Mlflow/Artifacts/3/LoggedModels/m-1/artifacts/MLmodel")
            == "3/models/m-1/artifacts/MLmodel")
    with pytest.raises(ApiError) as exc:
        server_artifact_path("/WorkspaceInternal/Mlflow/Artifacts/3/Runs/../../etc")
    assert exc.value.code == "INVALID_PARAMETER_VALUE"


def test_uc_names_have_three_parts() -> None:
    assert uc_name("Main.Default.RF") == "main.default.rf"
    for bad in ("rf", "main.rf", "a.b.c.d", "a..c", "a.b.c d"):
        with pytest.raises(ApiError) as exc:
            uc_name(bad)
        assert exc.value.code == "INVALID_PARAMETER_VALUE"
    with pytest.raises(ApiError) as exc:
        uc_name("main.rf")
    assert "specify all three levels" in exc.value.message  # the text mlflow's client keys its hint on


def test_signature_check(tmp_path: Path) -> None:
    mlmodel = tmp_path / "MLmodel"
    assert mlmodel_signature_problem(mlmodel) == "the model version has no MLmodel file"
    mlmodel.write_text("flavors: {}\n")
    assert mlmodel_signature_problem(mlmodel) == "the model has no signature"
    mlmodel.write_text("flavors: {}\nsignature:\n  inputs: '[{\"type\": \"double\"}]'\n")
    assert mlmodel_signature_problem(mlmodel) == "the model signature has inputs only"
    mlmodel.write_text(SIGNED_MLMODEL)
    assert mlmodel_signature_problem(mlmodel) is None


def test_experiment_parent_folder_must_exist(app) -> None:
    _, client = app
    r = client.post("/api/2.0/mlflow/experiments/create", json={"name": "/Shared/missing/exp"})
    assert r.status_code == 404
    assert r.json() == {"error_code": "RESOURCE_DOES_NOT_EXIST",
                        "message": "Parent directory /Shared/missing does not exist."}
    r = client.post("/api/2.0/mlflow/experiments/create", json={"name": "exp"})
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    r = client.post("/api/2.0/mlflow/experiments/create", json={"name": "/Shared/team"})  # a folder
    assert r.status_code == 400 and r.json()["error_code"] == "RESOURCE_ALREADY_EXISTS"
    # an allowed name goes on to the MLflow server (down here: 503, which databricks-sdk retries)
    r = client.post("/api/2.0/mlflow/experiments/create", json={"name": "/Shared/team/exp"})
    assert r.status_code == 503 and r.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"


def test_auth_is_required_except_on_presigned_urls(app) -> None:
    _, client = app
    r = client.get(f"{UC}/registered-models/search", headers={"Authorization": ""})
    assert r.status_code == 401
    r = client.get(f"{UC}/registered-models/search", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 403 and r.json()["message"] == "Invalid access token."
    r = client.get("/_presigned/0000/Models/a/b/c/1/MLmodel", headers={"Authorization": ""})
    assert r.status_code == 403 and b"SignatureDoesNotMatch" in r.content


def _register(client, name: str, mlmodel: str) -> tuple[str, dict]:
    client.post(f"{UC}/registered-models/create", json={"name": name})
    mv = client.post(f"{UC}/model-versions/create", json={"name": name, "source": "models:/m-1"}).json()
    version = mv["model_version"]["version"]
    creds = client.post(f"{UC}/model-versions/generate-temporary-credentials",
                        json={"name": name, "version": version, "operation": "MODEL_VERSION_OPERATION_READ_WRITE"})
    assert creds.json()["credentials"]["storage_mode"] == "DEFAULT_STORAGE"
    path = f"/Models/{name.replace('.', '/')}/{version}/MLmodel"
    url = client.post("/api/2.0/fs/create-upload-url", json={"path": path}).json()["url"]
    assert client.put(url, content=mlmodel.encode(), headers={"Authorization": ""}).status_code == 200
    return version, client.post(f"{UC}/model-versions/finalize", json={"name": name, "version": version}).json()


def test_uc_model_version_lifecycle(app) -> None:
    state, client = app
    r = client.post(f"{UC}/registered-models/create", json={"name": "main.rf"})
    assert r.status_code == 400 and "specify all three levels" in r.json()["message"]
    r = client.post(f"{UC}/model-versions/create", json={"name": "main.default.nope", "source": "models:/m-1"})
    assert r.status_code == 404 and r.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"

    version, finalized = _register(client, "Main.Default.RF", SIGNED_MLMODEL)
    assert finalized["model_version"]["status"] == "READY"
    assert finalized["model_version"]["name"] == "main.default.rf"
    assert (state.model_dir("main.default.rf", 1) / "MLmodel").read_text() == SIGNED_MLMODEL
    again = client.post(f"{UC}/registered-models/create", json={"name": "main.default.rf"})
    assert again.status_code == 400 and again.json()["error_code"] == "RESOURCE_ALREADY_EXISTS"

    # a READY version's files are read-only; reading them goes through a presigned GET
    path = "/Models/main/default/rf/1/MLmodel"
    r = client.post("/api/2.0/fs/create-upload-url", json={"path": path})
    assert r.status_code == 403
    url = client.post("/api/2.0/fs/create-download-url", params={"path": path}).json()["url"]
    assert client.get(url, headers={"Authorization": ""}).text == SIGNED_MLMODEL
    listing = client.get("/api/2.0/fs/directories/Models/main/default/rf/1/").json()["contents"]
    assert listing == [{"path": path, "name": "MLmodel", "is_directory": False, "file_size": len(SIGNED_MLMODEL)}]

    client.post(f"{UC}/model-versions/set-tag", json={"name": "main.default.rf", "version": version, "key": "k",
                                                     "value": "v"})
    client.post(f"{UC}/registered-models/alias", json={"name": "main.default.rf", "alias": "champion",
                                                      "version": version})
    got = client.get(f"{UC}/registered-models/alias", params={"name": "main.default.rf", "alias": "champion"})
    assert got.json()["model_version"]["tags"] == [{"key": "k", "value": "v"}]
    assert got.json()["model_version"]["aliases"] == [{"alias": "champion", "version": "1"}]
    # the searches leave aliases out, as Unity Catalog's do; the gets carry them
    search = client.get(f"{UC}/model-versions/search", params={"filter": "name='main.default.rf'"}).json()
    assert [v["version"] for v in search["model_versions"]] == ["1"]
    assert "aliases" not in search["model_versions"][0]
    models = client.get(f"{UC}/registered-models/search").json()["registered_models"]
    assert [m["name"] for m in models] == ["main.default.rf"] and "aliases" not in models[0]
    one = client.get(f"{UC}/model-versions/get", params={"name": "main.default.rf", "version": "1"}).json()
    assert one["model_version"]["aliases"] == [{"alias": "champion", "version": "1"}]
    model = client.get(f"{UC}/registered-models/get", params={"name": "main.default.rf"}).json()
    assert model["registered_model"]["aliases"] == [{"alias": "champion", "version": "1"}]


def test_uc_refuses_to_finalize_a_model_without_signature(app) -> None:
    state, client = app
    _, finalized = _register(client, "main.default.nosig", "flavors: {}\n")
    assert finalized["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "the model has no signature" in finalized["message"]
    assert state.models["main.default.nosig"].versions[1].status == "FAILED_REGISTRATION"


def test_uc_refuses_tag_keys_with_the_characters_unity_catalog_forbids(app) -> None:
    """rules.UC_TAG_KEYS: a dotted key (`airflow.dag_run_id`) is refused on a model version and a model."""
    state, client = app
    version, _ = _register(client, "main.default.tags", SIGNED_MLMODEL)
    for key in ("airflow.dag_run_id", "a-b", "a=b", "a/b", "a:b", "a,b", " lead", "trail ", "", "k" * 256):
        r = client.post(f"{UC}/model-versions/set-tag", json={"name": "main.default.tags", "version": version,
                                                             "key": key, "value": "v"})
        assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE", key
        r = client.post(f"{UC}/registered-models/set-tag", json={"name": "main.default.tags", "key": key, "value": "v"})
        assert r.status_code == 400, key
    r = client.post(f"{UC}/model-versions/create", json={"name": "main.default.tags", "source": "models:/m-2",
                                                        "tags": [{"key": "mlflow.source", "value": "x"}]})
    assert r.status_code == 400 and "are not allowed in Unity Catalog tag keys" in r.json()["message"]
    ok = client.post(f"{UC}/model-versions/set-tag", json={"name": "main.default.tags", "version": version,
                                                          "key": "airflow_dag_run_id", "value": "manual__1"})
    assert ok.status_code == 200
    assert state.models["main.default.tags"].versions[1].tags == {"airflow_dag_run_id": "manual__1"}


def test_uc_refuses_tag_values_over_a_thousand_characters_or_with_a_blank_at_either_end(app) -> None:
    """rules.UC_TAG_VALUES: 1000 characters are taken and 1001 are a 400, and so is a value that begins or ends
    with a blank, on a model version and a model."""
    state, client = app
    version, _ = _register(client, "main.default.values", SIGNED_MLMODEL)
    refused = {"v" * 1001: "longer than 1000 characters",
               **{value: "begins or ends with a blank" for value in ("price ", " price", "\tprice", "price\n")}}
    for path, body in ((f"{UC}/model-versions/set-tag", {"version": version}), (f"{UC}/registered-models/set-tag", {})):
        for value, why in refused.items():
            r = client.post(path, json={"name": "main.default.values", "key": "v", "value": value, **body})
            assert r.status_code == 400 and why in r.json()["message"], (path, value[:8])
        for value in ("v" * 1000, "unit price"):
            assert client.post(path, json={"name": "main.default.values", "key": "v", "value": value,
                                           **body}).status_code == 200
    assert state.models["main.default.values"].versions[1].tags == {"v": "unit price"}
    assert state.models["main.default.values"].tags == {"v": "unit price"}


def test_uc_keeps_at_most_fifty_tags_on_a_model_and_on_a_version(app) -> None:
    """rules.UC_TAG_COUNT: the 51st tag is a 400 on a version and on a model; a tag already held is replaced."""
    state, client = app
    version, _ = _register(client, "main.default.many", SIGNED_MLMODEL)
    for path, body in ((f"{UC}/model-versions/set-tag", {"version": version}), (f"{UC}/registered-models/set-tag", {})):
        for i in range(50):
            r = client.post(path, json={"name": "main.default.many", "key": f"k{i}", "value": "v", **body})
            assert r.status_code == 200, (path, i)
        r = client.post(path, json={"name": "main.default.many", "key": "k50", "value": "v", **body})
        assert r.status_code == 400 and "at most 50 tags" in r.json()["message"], path
        assert client.post(path, json={"name": "main.default.many", "key": "k0", "value": "w",
                                       **body}).status_code == 200
    assert len(state.models["main.default.many"].versions[1].tags) == 50
    assert state.models["main.default.many"].versions[1].tags["k0"] == "w"
    many = [{"key": f"k{i}", "value": "v"} for i in range(51)]
    r = client.post(f"{UC}/registered-models/create", json={"name": "main.default.crowded", "tags": many})
    assert r.status_code == 400 and "at most 50 tags" in r.json()["message"]


def test_the_jobs_model_version_tags_are_unity_catalog_tag_keys() -> None:
    """The tags `log_model` sets on a registered version pass the stand-in's UC rule (today's
    `airflow.dag_run_id` has a dot)."""
    import sys

    from tests.fixtures.databricks.rules import uc_tag_key_problem

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "spark_jobs"))
    try:
        from mlopsctl_jobs import tracking
    finally:
        sys.path.pop(0)
    tags = tracking.model_version_tags("abc123", "manual__2026-12-07T04:05:06+00:00",
                                       {"max_depth": 8, "n_estimators": 20, "cv": 3}, "price (USD)")
    assert tags == {"mlflow_run_id": "abc123", "airflow_dag_run_id": "manual__2026-12-07T04:05:06+00:00",
                    "max_depth": "8", "n_estimators": "20", "cv": "3", "mlopsctl_input": "raw",
                    "mlopsctl_target": "price (USD)"}
    assert [k for k in tags if uc_tag_key_problem(k)] == []
    assert tracking.uc_tag_key(" a.b-c=d/e:f,g ") == "a_b_c_d_e_f_g"


@pytest.mark.parametrize("target", ["price", "price ", " price", "\u00a0price", '"quoted"', '"', "unit price (€)"])
def test_the_target_tag_takes_any_column_name_unity_catalog_allows_and_reads_it_back(target: str) -> None:
    """A column named with a blank at either end still makes a tag value UC takes (rules.UC_TAG_VALUES), and
    the evaluation reads the same name back."""
    import sys
    from types import SimpleNamespace

    from tests.fixtures.databricks.rules import uc_tag_value_problem

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "spark_jobs"))
    try:
        from mlopsctl_jobs import evaluate, tracking
    finally:
        sys.path.pop(0)
    tags = tracking.model_version_tags("r", "manual__1", {}, target)
    value = tags[tracking.TARGET_TAG]
    assert uc_tag_value_problem(tracking.TARGET_TAG, value) is None, value
    assert tracking.target_from_tag(value) == target
    version = SimpleNamespace(version="3", run_id="r", tags=tags)
    assert evaluate.contender("main.ml.m", version, "candidate").target == target
    assert (value == target) == (target == target.strip() and not target.startswith('"'))
