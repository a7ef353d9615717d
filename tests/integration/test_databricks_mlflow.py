"""The stand-in's MLflow through mlflow's own Databricks client: tracking URI `databricks`, registry
`databricks-uc`, a plain-http DATABRICKS_HOST, a real MLflow server behind it.

A subprocess with a clean environment (DATABRICKS_HOST/DATABRICKS_TOKEN only, no MLFLOW_*) runs the grid
job's own tracking code (`mlopsctl_jobs.tracking.setup_mlflow` + `log_grid`: nested runs, params, metrics, tags,
a figure, a logged model registered in UC, model version tags), loads the model back three ways, reads
the runs back with the CLI's `Tracking` (tracking URI `databricks`) and tries what a workspace refuses.
The test then checks what the real MLflow server holds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.databricks_mlflow import DatabricksMlflow
from tests.fixtures.stack import free_port

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "dapi-mlflow-test"
USER = "tester@example.com"
EXPERIMENT = "/Shared/mlopsctl-test/grid_search"  # <prefix>/<dag id>, as the jobs name it
MODEL = "main.default.rf_test"

SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path[:0] = [sys.argv[1], sys.argv[5]]
    from mlopsctl_jobs import grid, model, tracking
    from mlopsctl.tracking import Tracking
    import mlflow
    from sklearn.datasets import load_diabetes

    experiment, model_name, server_url = sys.argv[2:5]
    TARGET = "target "  # a header with a trailing blank, as spreadsheet exports have; UC refuses it as a tag value
    X, y = load_diabetes(return_X_y=True, as_frame=True)
    X, y = X.head(150), y.head(150)
    exp_id = tracking.setup_mlflow("databricks", experiment, "databricks-uc")
    results = [grid.PointResult(3, 4, 60.0, 2.0, 0.3), grid.PointResult(5, 4, error="boom")]

    def refit(best):
        fitted = model.train_model(X, y, best.max_depth, best.n_estimators, 0)
        return fitted, model.evaluate_model(fitted, X, y)

    out = tracking.log_grid(experiment_id=exp_id, dag_id="grid_search", dag_run_id="manual_1", try_number=1,
                           engine="test", results=results, cv=2, common_params={"data": "diabetes"},
                           refit=refit, X_sample=X, holdout_rows=(X, y), target=TARGET,
                           register_as=model_name)
    client = mlflow.MlflowClient()
    run = client.get_run(out.parent_run_id)
    model_id = run.outputs.model_outputs[0].model_id
    name, version = out.registered
    rows = X.head(3)
    report = {
        "experiment_id": exp_id, "parent": out.parent_run_id, "children": out.child_run_ids,
        "registered": [name, version], "model_id": model_id, "artifact_uri": run.info.artifact_uri,
        "logged_model_location": client.get_logged_model(model_id).artifact_location,
        "run_artifacts": sorted(a.path for a in client.list_artifacts(out.parent_run_id)),
        "again": tracking.setup_mlflow("databricks", experiment, "databricks-uc"),
        "uc_version": client.get_model_version(name, version).status,
        "predict_logged": [float(v) for v in mlflow.pyfunc.load_model(f"models:/{model_id}").predict(rows)],
        "predict_uc": [float(v) for v in mlflow.pyfunc.load_model(f"models:/{name}/{version}").predict(rows)],
    }
    for key, call in (("missing_folder", lambda: client.create_experiment("/Shared/no-such-folder/exp")),
                      ("two_part", lambda: client.create_registered_model("main.rf_two_part"))):
        try:
            call()
            report[key] = "accepted"
        except Exception as exc:
            report[key] = str(exc)
    # a plain MLflow client of the server behind the stand-in reads the same logged model
    mlflow.set_tracking_uri(server_url)
    report["predict_http"] = [float(v) for v in mlflow.pyfunc.load_model(f"models:/{model_id}").predict(rows)]
    # the CLI's reader with the same tracking URI
    read = Tracking("databricks", experiment_prefix=experiment.rsplit("/", 1)[0]).outcome(
        "parent", "grid_search", "manual_1")
    report["cli"] = {"parent": read.main.run_id, "children": sorted(c.run_id for c in read.children),
                     "metrics": read.main.metrics}
    print("REPORT " + json.dumps(report), flush=True)
""")


def _wait_http(url: str, proc: subprocess.Popen | None, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{what} did not answer {url} within {timeout:.0f} s")


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` (sqlite, proxied artifacts, one worker) on a free 127.0.0.1 port."""
    home = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DATABRICKS_"))}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    argv = [sys.executable, str(Path(sys.executable).parent / "mlflow"), "server",
            "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}", "--artifacts-destination", str(home / "artifacts"),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with open(home / "server.log", "wb") as log:
        proc = subprocess.Popen(argv, cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{url}/health", proc, 120, "mlflow server")
        yield url
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, mlflow_server: str) -> Iterator[tuple[DatabricksMlflow, str]]:
    """The MLflow routes in a minimal Starlette app (uvicorn, own port) over a fake workspace tree."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    base = tmp_path_factory.mktemp("workspace")
    tree = base / "tree"
    (tree / "Shared" / "mlopsctl-test").mkdir(parents=True)
    (tree / "Users" / USER).mkdir(parents=True)

    def workspace_path(path: str) -> Path:
        parts = [p for p in path.split("/") if p]
        return tree.joinpath(*(parts[1:] if parts[:1] == ["Workspace"] else parts))

    state = DatabricksMlflow(mlflow_server, workspace_path, base / "uc", token=TOKEN, user=USER)
    unmatched: list[str] = []

    async def not_found(request: Request) -> JSONResponse:
        unmatched.append(f"{request.method} {request.url.path}")
        return JSONResponse({"error_code": "ENDPOINT_NOT_FOUND", "message": f"No API found for '{request.url.path}'"},
                            status_code=404)

    app = Starlette(routes=[*state.routes(), Route("/{rest:path}", not_found,
                                                   methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"])])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    state.unmatched = unmatched  # type: ignore[attr-defined]
    try:
        _wait_http(f"http://127.0.0.1:{port}/.well-known/databricks-config", None, 30, "workspace app")
        yield state, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def job_report(workspace: tuple[DatabricksMlflow, str], mlflow_server: str, tmp_path_factory) -> dict:
    _, host = workspace
    work = tmp_path_factory.mktemp("job")
    script = work / "job.py"
    script.write_text(SCRIPT)
    env = {"PATH": os.environ["PATH"], "HOME": str(work), "DATABRICKS_HOST": host, "DATABRICKS_TOKEN": TOKEN,
           "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, str(script), str(ROOT / "spark_jobs"), EXPERIMENT, MODEL, mlflow_server,
                           str(ROOT)],
                          check=False, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT ")]
    assert proc.returncode == 0 and lines, f"job failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    return json.loads(lines[-1][len("REPORT "):])


def test_runs_params_metrics_and_artifacts_land_in_the_real_server(job_report: dict, mlflow_server: str) -> None:
    api = f"{mlflow_server}/api/2.0/mlflow"
    exp = httpx.get(f"{api}/experiments/get-by-name", params={"experiment_name": EXPERIMENT}).json()["experiment"]
    assert exp["experiment_id"] == job_report["experiment_id"] == job_report["again"]
    assert exp["artifact_location"] == f"mlflow-artifacts:/{exp['experiment_id']}"
    run = httpx.get(f"{api}/runs/get", params={"run_id": job_report["parent"]}).json()["run"]
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert params["best_max_depth"] == "3" and params["grid_size"] == "2" and params["data"] == "diabetes"
    assert metrics["best_cv_rmse"] == 60.0 and {"rmse", "mae", "r2"} <= set(metrics)
    assert tags["mlopsctl.registered_model_name"] == MODEL and tags["mlopsctl.registered_model_version"] == "1"
    assert run["info"]["status"] == "FINISHED"
    children = [httpx.get(f"{api}/runs/get", params={"run_id": c}).json()["run"] for c in job_report["children"]]
    assert [c["info"]["status"] for c in children] == ["FINISHED", "FAILED"]
    assert all({t["key"]: t["value"] for t in c["data"]["tags"]}["mlflow.parentRunId"] == job_report["parent"]
               for c in children)

    # the client saw the workspace's artifact locations; the bytes sit in the server's proxied store
    assert job_report["artifact_uri"] == (
        f"dbfs:/databricks/mlflow-tracking/{exp['experiment_id']}/{job_report['parent']}/artifacts")
    assert job_report["logged_model_location"].startswith(
        f"dbfs:/databricks/mlflow-tracking/{exp['experiment_id']}/logged_models/")
    assert job_report["run_artifacts"] == ["eval", "heatmap.png"]  # eval/: the held-out rows
    listing = httpx.get(f"{mlflow_server}/api/2.0/mlflow-artifacts/artifacts",
                        params={"path": f"{exp['experiment_id']}/models/{job_report['model_id']}/artifacts"}).json()
    assert {"MLmodel", "model.pkl"} <= {f["path"] for f in listing["files"]}


def test_model_loads_back_and_is_registered_in_uc(job_report: dict, workspace) -> None:
    state, _ = workspace
    assert job_report["registered"] == [MODEL, "1"] and job_report["uc_version"] == "READY"
    assert len(job_report["predict_logged"]) == 3
    assert job_report["predict_uc"] == job_report["predict_logged"] == job_report["predict_http"]
    mv = state.models[MODEL].versions[1]
    assert mv.source == f"models:/{job_report['model_id']}" and mv.model_id == job_report["model_id"]
    assert mv.tags["mlflow_run_id"] == job_report["parent"] and mv.tags["max_depth"] == "3"
    assert mv.tags["airflow_dag_run_id"] == "manual_1"  # a Unity Catalog tag key (no dot), as the stand-in requires
    assert mv.tags["mlopsctl_input"] == "raw" and mv.tags["mlopsctl_target"] == '"target "'  # JSON-quoted
    sys.path.insert(0, str(ROOT / "spark_jobs"))
    try:
        from mlopsctl_jobs.tracking import target_from_tag
    finally:
        sys.path.pop(0)
    assert target_from_tag(mv.tags["mlopsctl_target"]) == "target "
    assert (state.model_dir(MODEL, 1) / "model.pkl").is_file()


def test_cli_reads_the_runs_back_through_the_stand_in(job_report: dict) -> None:
    cli = job_report["cli"]
    assert cli["parent"] == job_report["parent"] and cli["children"] == sorted(job_report["children"])
    assert cli["metrics"]["best_cv_rmse"] == 60.0


def test_workspace_rules_are_enforced(job_report: dict) -> None:
    assert "RESOURCE_DOES_NOT_EXIST" in job_report["missing_folder"]
    assert "Parent directory /Shared/no-such-folder does not exist" in job_report["missing_folder"]
    assert "specify all three levels" in job_report["two_part"]


def test_client_took_the_default_databricks_paths(job_report: dict, workspace) -> None:
    """The SDK Files API for run/model artifacts and presigned URLs for UC: no silent fallback to the
    credentials-for-write/read APIs (not emulated), no request outside the emulated routes."""
    state, _ = workspace
    paths = [p for _, p in state.requests]
    assert not [p for p in paths if "credentials-for" in p]
    assert any(m == "PUT" and p.startswith("/api/2.0/fs/files/WorkspaceInternal/Mlflow/Artifacts/")
               for m, p in state.requests)
    assert "/api/2.0/fs/create-upload-url" in paths and "/api/2.0/fs/create-download-url" in paths
    assert [u for u in state.unmatched if "databricks-config" not in u] == []



def test_models_reads_an_mlflow_server_and_unity_catalog_alike(job_report: dict, workspace, mlflow_server: str,
                                                                 cli, project: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """`models list|versions|show` against the real MLflow server (REST) and the stand-in's Unity Catalog
    (tracking URI `databricks`, three-part names, searches without aliases): the same answers."""
    from mlflow import MlflowClient

    state, host = workspace
    model_id, parent = job_report["model_id"], job_report["parent"]
    plain = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    plain.create_registered_model("rf-http")
    for _ in range(2):
        plain.create_model_version("rf-http", f"models:/{model_id}", run_id=parent, model_id=model_id)
    plain.set_registered_model_alias("rf-http", "champion", "2")
    monkeypatch.setenv("DATABRICKS_HOST", host)
    monkeypatch.setenv("DATABRICKS_TOKEN", TOKEN)
    MlflowClient(tracking_uri="databricks", registry_uri="databricks-uc").set_registered_model_alias(
        MODEL, "champion", "1")
    seen = len(state.requests)

    for uri, name, count in ((mlflow_server, "rf-http", 2), ("databricks", MODEL, 1)):
        code, out, err = cli("--mlflow-uri", uri, "models", "list", "--json")
        assert code == 0, err
        [model] = [m for m in json.loads(out)["models"] if m["name"] == name]
        assert model["aliases"] == {"champion": str(count)} and model["versions"] == count
        assert model["latest_version"] == str(count)

        code, out, err = cli("--mlflow-uri", uri, "models", "versions", name, "--sort", "rmse", "--json")
        assert code == 0, err
        rows = json.loads(out)["versions"]
        assert [r["version"] for r in rows] == [str(v) for v in range(count, 0, -1)]  # equal rmse: newest first
        assert rows[0]["aliases"] == ["champion"] and all(r["aliases"] == [] for r in rows[1:])
        assert all(r["run_id"] == parent and r["pipeline"] == "grid-search" and r["data"] == "diabetes"
                   and r["rmse"] > 0 for r in rows)

        code, out, err = cli("--mlflow-uri", uri, "models", "show", f"{name}@champion", "--json")
        assert code == 0, err
        doc = json.loads(out)
        assert doc["version"] == str(count) and doc["run_id"] == parent and doc["metrics"]["best_cv_rmse"] == 60.0
        assert [c["name"] for c in doc["signature"]["inputs"]][:3] == ["age", "sex", "bmi"]
        assert doc["run_url"].endswith(f"/runs/{parent}")

        for ref, needle in ((f"{name}/9", "No version 9"), (f"{name}@nope", "has no alias 'nope'")):
            code, _, err = cli("--mlflow-uri", uri, "models", "show", ref)
            assert code == 6 and needle in err, err

    uc = [p for _, p in state.requests[seen:] if "/unity-catalog/" in p]
    assert any(p.endswith("/registered-models/search") for p in uc)  # searched, then read one by one
    assert any(p.endswith("/model-versions/get") for p in uc) and any(p.endswith("/registered-models/get") for p in uc)
    assert [u for u in state.unmatched if "databricks-config" not in u] == []
