"""End-to-end: the CLI against the real local stack (Airflow 3 + MLflow + Spark local).

Each CLI call runs `python -m mlopsctl` in a subprocess with the stack's MLOPSCTL_* env, and the test
asserts on what the user sees (exit code, stdout/stderr) and on the state behind it (the Airflow run
via the REST client, the MLflow run via MLflow's REST API).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from mlopsctl.errors import ExitCode
from tests.fixtures.signals import popen_with_default_sigint

REPO = Path(__file__).resolve().parents[2]
SMALL_GRID = ["--max-depth", "3,5", "--n-estimators", "10,20", "--cv", "2"]
CLI_TIMEOUT = 1200  # a bound so a hang fails the test instead of the CI job; asserts nothing about speed


def _env(stack, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPSCTL_")}
    env.update(stack.env)
    env.update(NO_COLOR="1", COLUMNS="200", PYTHONPATH=str(REPO))
    env.update(extra)
    return env


def cli(stack, *argv: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlopsctl", *argv],
        env=env or _env(stack),
        cwd=str(cwd or stack.project_dir),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )


def mlflow_runs(stack, dag_id: str, dag_run_id: str) -> list[dict]:
    """What MLflow itself holds for an Airflow run (read directly, not through mlopsctl.tracking)."""
    base = f"{stack.mlflow_url}/api/2.0/mlflow"
    with httpx.Client(timeout=30) as http:
        exp = http.get(f"{base}/experiments/get-by-name", params={"experiment_name": f"/mlopsctl/{dag_id}"})
        exp.raise_for_status()
        body = http.post(
            f"{base}/runs/search",
            json={
                "experiment_ids": [exp.json()["experiment"]["experiment_id"]],
                "filter": f"tags.`airflow.dag_run_id` = '{dag_run_id}'",
                "max_results": 1000,
            },
        )
        body.raise_for_status()
        return body.json().get("runs", [])


def _metrics(run: dict) -> dict[str, float]:
    return {m["key"]: m["value"] for m in run["data"].get("metrics", [])}


def _tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


@pytest.fixture(scope="module")
def built(local_stack):
    """One successful `run build-model --json` shared by the tests that read its result."""
    t0 = time.monotonic()
    res = cli(local_stack, "run", "build-model", "--max-depth", "80", "--n-estimators", "100", "--json")
    wall = time.monotonic() - t0
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout), wall


def test_run_build_model_prints_what_mlflow_holds(local_stack, built) -> None:
    doc, wall = built
    assert doc["state"] == "success" and doc["dag_id"] == "build_model"
    assert [t["task_id"] for t in doc["tasks"]] == ["preprocess_data", "train_model"]
    assert all(t["state"] == "success" for t in doc["tasks"])
    runs = mlflow_runs(local_stack, "build_model", doc["dag_run_id"])
    assert len(runs) == 1
    held = runs[0]
    assert doc["mlflow"]["run"]["run_id"] == held["info"]["run_id"]
    for key in ("rmse", "mae", "r2"):
        assert doc["mlflow"]["run"]["metrics"][key] == _metrics(held)[key]
    assert doc["mlflow"]["run"]["params"]["max_depth"] == "80"
    assert doc["mlflow"]["run"]["params"]["n_estimators"] == "100"
    tags = _tags(held)
    if tags.get("mlopsctl.registered_model_name"):
        assert doc["mlflow"]["run"]["registered_model"] == {
            "name": tags["mlopsctl.registered_model_name"],
            "version": tags.get("mlopsctl.registered_model_version"),
        }
    assert doc["links"]["airflow"] == f"{local_stack.airflow_url}/dags/build_model/runs/{doc['dag_run_id']}"
    assert doc["links"]["mlflow"].endswith(f"/#/experiments/{held['info']['experiment_id']}/runs/{held['info']['run_id']}")
    # measured, reported, never asserted: CLI wall time vs. the run's own time, requests while waiting
    follow = doc["follow"]
    print(
        f"\n[measure] run build-model: CLI wall {wall:.1f}s, follow {follow['waited_s']:.1f}s, "
        f"airflow run {doc['duration_s']:.1f}s, tasks "
        + ", ".join(f"{t['task_id']}={t['duration']:.1f}s" for t in doc["tasks"] if t["duration"])
        + f"; {follow['requests']} requests in {follow['polls']} polls "
        f"= {60 * follow['requests'] / max(follow['waited_s'], 1e-9):.1f}/min"
    )


def test_status_of_a_run_prints_tables_metrics_and_links(local_stack, built) -> None:
    doc, _ = built
    res = cli(local_stack, "status", doc["dag_run_id"])
    assert res.returncode == 0, res.stderr[-3000:]
    for needle in ("build-model", "success", "rmse", "mae", "r2", "preprocess_data", "train_model", "max_depth",
                   f"Airflow: {doc['links']['airflow']}", f"MLflow: {doc['links']['mlflow']}"):
        assert needle in res.stdout, needle


@pytest.mark.slow
@pytest.mark.parametrize("spark", [False, True], ids=["sklearn", "spark"])
def test_grid_search_one_row_per_point(local_stack, spark: bool) -> None:
    argv = ["grid-search", *(["--spark"] if spark else []), *SMALL_GRID, "--no-register", "--json"]
    res = cli(local_stack, *argv)
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads(res.stdout)
    points = doc["mlflow"]["points"]
    assert sorted((p["max_depth"], p["n_estimators"]) for p in points) == [(3, 10), (3, 20), (5, 10), (5, 20)]
    ok = [p for p in points if p["status"] == "ok"]
    assert ok and [p["rank"] for p in ok] == list(range(1, len(ok) + 1))
    assert sum(p["best"] for p in points) == 1
    held = mlflow_runs(local_stack, doc["dag_id"], doc["dag_run_id"])
    children = [r for r in held if _tags(r).get("mlopsctl.role") == "child"]
    assert len(children) == 4
    by_id = {r["info"]["run_id"]: r for r in children}
    for p in ok:
        assert p["cv_rmse_mean"] == _metrics(by_id[p["run_id"]])["cv_rmse_mean"]
    # the human view: leaderboard + heatmap, one row per point
    text = cli(local_stack, "status", doc["dag_run_id"])
    assert text.returncode == 0, text.stderr
    assert "leaderboard" in text.stdout and "max_depth × n_estimators" in text.stdout


def test_status_lists_runs_with_key_metric(local_stack, built) -> None:
    doc, _ = built
    res = cli(local_stack, "status", "--json", "--limit", "50")
    assert res.returncode == 0, res.stderr
    rows = {r["dag_run_id"]: r for r in json.loads(res.stdout)["runs"]}
    assert doc["dag_run_id"] in rows
    row = rows[doc["dag_run_id"]]
    assert row["pipeline"] == "build-model" and row["state"] == "success"
    assert row["metric"] == "rmse" and row["metric_value"] == doc["mlflow"]["run"]["metrics"]["rmse"]
    one = cli(local_stack, "status", doc["dag_run_id"], "--json")
    assert one.returncode == 0 and json.loads(one.stdout)["mlflow"]["run"]["run_id"] == doc["mlflow"]["run"]["run_id"]
    table = cli(local_stack, "status", "-p", "build-model")
    assert table.returncode == 0 and doc["dag_run_id"] in table.stdout


def test_forced_failure_exits_run_failed_with_log_tail(local_stack, tmp_path: Path) -> None:
    data = tmp_path / "no_target.csv"
    data.write_text("a,b,c\n" + "".join(f"{i},{i * 2},{i % 3}\n" for i in range(50)))
    res = cli(local_stack, "run", "build-model", "--data", str(data), "--target", "price", "--json")
    assert res.returncode == ExitCode.RUN_FAILED, res.stderr[-3000:]
    doc = json.loads(res.stdout)
    assert doc["state"] == "failed" and doc["failed_task"] in ("preprocess_data", "train_model")
    assert doc["log_tail"] and "price" in "\n".join(doc["log_tail"])
    assert f"task {doc['failed_task']!r} failed" in res.stderr
    logs = cli(local_stack, "logs", doc["dag_run_id"], "--task", doc["failed_task"])
    assert logs.returncode == 0 and "price" in logs.stdout


def test_a_table_name_reaches_the_job_which_says_the_table_is_missing(local_stack) -> None:
    """`--data catalog.schema.table` is not a file to the CLI: it is triggered unchanged (the stack's DAGs are
    tagged compute:local), and the job's catalog answers; bad data fails the task once, without a retry."""
    with local_stack.client() as client:
        assert "compute:local" in [t["name"] for t in client.get_dag("build_model").tags]
    res = cli(local_stack, "run", "build-model", "--data", "main.sales.houses", "--json")
    assert res.returncode == ExitCode.RUN_FAILED, res.stderr[-3000:]
    assert "does not exist" not in res.stderr
    doc = json.loads(res.stdout)
    assert doc["conf"]["data"] == "main.sales.houses"
    assert doc["failed_task"] == "preprocess_data"
    assert "table main.sales.houses not found" in "\n".join(doc["log_tail"])
    [task] = [t for t in doc["tasks"] if t["task_id"] == "preprocess_data"]
    assert task["try_number"] == 1  # exit 3 (bad data): Airflow does not retry


def test_no_wait_then_sigint_while_reattached_then_reattach_again(local_stack) -> None:
    # the DAG is paused first, so the run is still waiting (queued) whenever the Ctrl-C arrives: a fast
    # machine would otherwise finish it before the reattached command had printed its first line
    with local_stack.client() as client:
        client.set_paused("build_model", True)
    try:
        res = cli(local_stack, "run", "build-model", "--max-depth", "4", "--n-estimators", "5", "--no-register",
                  "--no-wait", "--no-auto-unpause")
        assert res.returncode == 0, res.stderr
        run_id = res.stdout.strip()
        assert run_id.startswith("mlopsctl__") and f"mlopsctl status {run_id} --wait" in res.stderr

        # reattach, then Ctrl-C while it waits: exit 130, the reattach hint, and the run is NOT cancelled
        proc = popen_with_default_sigint(
            [sys.executable, "-m", "mlopsctl", "status", run_id, "--wait"],
            env=_env(local_stack), cwd=str(local_stack.project_dir), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )
        first = proc.stderr.readline()  # the first progress line: it is following now
        assert run_id in first, first
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == ExitCode.INTERRUPTED == 130, first + err
        assert f"mlopsctl status {run_id} --wait" in err
        with local_stack.client() as client:
            assert client.get_run("build_model", run_id).state == "queued"  # still there, not cancelled
    finally:
        with local_stack.client() as client:
            client.set_paused("build_model", False)

    # reattach again once the DAG runs: follows to the end with the same result/exit code as `run`
    again = cli(local_stack, "status", run_id, "--wait", "--json")
    assert again.returncode == 0, again.stderr[-3000:]
    doc = json.loads(again.stdout)
    assert doc["dag_run_id"] == run_id and doc["state"] == "success" and doc["mlflow"]["run"]["metrics"]["rmse"] > 0


BAD_INPUT = [
    ["run", "build-model", "--max-depth", "abc"],
    ["run", "build-model", "--max-depth", "0"],
    ["run", "build-model", "--n-estimators", "99999"],
    ["grid-search", "--max-depth", "80,,90"],
    ["grid-search", "--n-estimators", ""],
    ["grid-search", "--max-depth", "3,3"],
    ["status", "--pipeline", "nope"],
]


@pytest.mark.parametrize("argv", BAD_INPUT, ids=[" ".join(a) for a in BAD_INPUT])
def test_bad_input_is_usage_before_any_request(local_stack, argv: list[str]) -> None:
    # a URL nobody listens on: USAGE (not UNREACHABLE) proves nothing was sent
    res = cli(local_stack, "--airflow-url", "http://127.0.0.1:9", *argv)
    assert res.returncode == ExitCode.USAGE, res.stderr
    assert "Traceback" not in res.stderr and res.stderr.strip()


def test_unknown_run_id_is_not_found(local_stack) -> None:
    res = cli(local_stack, "status", "mlopsctl__nope")
    assert res.returncode == ExitCode.NOT_FOUND and "mlopsctl status" in res.stderr


def test_airflow_unreachable(local_stack) -> None:
    env = _env(local_stack, MLOPSCTL_AIRFLOW_URL="http://127.0.0.1:9", MLOPSCTL_AIRFLOW_PASSWORD="x",
               MLOPSCTL_RETRIES="0")
    res = cli(local_stack, "run", "build-model", env=env)
    assert res.returncode == ExitCode.UNREACHABLE, res.stderr
    assert "Traceback" not in res.stderr


def test_wrong_credentials(local_stack) -> None:
    env = _env(local_stack, MLOPSCTL_AIRFLOW_PASSWORD="definitely-wrong")
    res = cli(local_stack, "status", env=env)
    assert res.returncode == ExitCode.AUTH, res.stderr
    assert "definitely-wrong" not in res.stderr + res.stdout


def test_mlflow_unreachable_prints_airflow_result_with_warning(local_stack, built) -> None:
    doc0, _ = built
    env = _env(local_stack, MLOPSCTL_MLFLOW_TRACKING_URI="http://127.0.0.1:9")
    res = cli(local_stack, "status", doc0["dag_run_id"], "--wait", "--json", env=env)  # same path as `run`
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads(res.stdout)
    assert doc["state"] == "success" and doc["mlflow"] is None and doc["tasks"]
    assert "Warning" in res.stderr and "MLflow" in res.stderr and "127.0.0.1:9" in res.stderr


def test_dags_lists_the_pipelines(local_stack) -> None:
    res = cli(local_stack, "dags", "--json")
    assert res.returncode == 0, res.stderr
    rows = {r["pipeline"]: r for r in json.loads(res.stdout)["pipelines"]}
    assert set(rows) == {"build-model", "grid-search", "grid-search-spark", "evaluate-model", "score"}
    assert all(r["loaded"] for r in rows.values())
    assert rows["build-model"]["params"]["max_depth"] == 80
    assert rows["grid-search"]["params"]["n_estimators"] == [100, 200, 300]


def _import_error_files(stack) -> list[str]:
    with stack.client() as client:
        return [e.filename or "" for e in client.import_errors()]


def _wait_until(what: str, predicate, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1)


def test_a_broken_file_named_after_a_dag_is_not_that_dags_import_error(local_stack) -> None:
    """grid_search_spark.py vs grid_search: a broken file whose name starts with a loaded DAG's id is listed
    as an import error of its own, not of that DAG."""
    broken = local_stack.dags_dir / "build_model_broken.py"
    broken.write_text("from airflow.sdk import dag\n\nthis is not python\n", encoding="utf-8")
    try:
        _wait_until("the dag-processor to record the import error",
                    lambda: any(f.endswith("build_model_broken.py") for f in _import_error_files(local_stack)))
        res = cli(local_stack, "dags", "--json")
        assert res.returncode == 0, res.stderr
        doc = json.loads(res.stdout)
        assert any(e["filename"].endswith("build_model_broken.py") for e in doc["import_errors"])
        rows = {r["dag_id"]: r for r in doc["pipelines"]}
        assert rows["build_model"]["loaded"] and rows["build_model"]["import_errors"] == []
        assert all(r["import_errors"] == [] for r in rows.values()), rows
    finally:
        broken.unlink(missing_ok=True)
    _wait_until("the import error to be cleared",
                lambda: not any(f.endswith("build_model_broken.py") for f in _import_error_files(local_stack)))


def _houses(rows: int, seed: int):
    """A user's export: raw column names (spaces, punctuation), two text columns (one with 60 categories), R's
    `NA` and empty fields in numeric and text columns, and 3% of the targets missing."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    zips = np.array([f"Z{i:03d}" for i in range(60)])[rng.integers(0, 60, rows)]
    heating = rng.choice(["gas", "oil", "heat pump", "wood"], rows)
    area = rng.uniform(30, 220, rows)
    rooms = rng.integers(1, 7, rows).astype("float64")
    price = (area * 3.1 + rooms * 12 + (np.char.find(zips.astype(str), "Z0") == 0) * 40
             + (heating == "heat pump") * 25 + rng.normal(0, 8, rows))
    frame = pd.DataFrame({"zip code": zips, "area (m2)": np.round(area, 2), "rooms": rooms,
                          "heating type": heating, "price": np.round(price, 2)})
    frame = frame.astype(object)
    frame.loc[rng.random(rows) < 0.04, "area (m2)"] = "NA"
    frame.loc[rng.random(rows) < 0.03, "rooms"] = ""
    frame.loc[rng.random(rows) < 0.05, "heating type"] = "NA"
    frame.loc[rng.random(rows) < 0.03, "price"] = "NA"
    return frame


def test_train_promote_score_and_roll_back_on_a_users_csv(local_stack, tmp_path: Path) -> None:
    """The loop users live in, on the embedded stack: two `run build-model` versions trained on a raw CSV,
    `models versions` with their metrics, `promote` behind a failing then a passing gate (each an evaluate_model
    run), the better version beating the champion on rows read by Spark, `score NAME@champion` on the CSV
    without its target equal to the version's own pyfunc predict, and `--rollback`; plus the bad input of each
    step: rows lacking a column, an existing output."""
    import secrets

    import mlflow
    import numpy as np
    import pandas as pd

    mlflow.set_tracking_uri(local_stack.mlflow_url)
    mlflow.set_registry_uri(local_stack.mlflow_url)
    client = mlflow.MlflowClient()
    name = f"houses-{secrets.token_hex(3)}"
    frame = _houses(3_000, 11)
    csv = tmp_path / "houses export.csv"
    frame.to_csv(csv, index=False)

    versions = []
    for depth, trees in ((2, 3), (12, 40)):
        res = cli(local_stack, "run", "build-model", "--data", str(csv), "--target", "price", "--max-depth",
                  str(depth), "--n-estimators", str(trees), "--register", name, "--json")
        assert res.returncode == 0, res.stderr[-3000:]
        versions.append(json.loads(res.stdout)["mlflow"]["run"]["registered_model"]["version"])
    v1, v2 = versions
    tags = client.get_model_version(name, v2).tags
    assert tags["mlopsctl_input"] == "raw" and tags["mlopsctl_target"] == "price"

    res = cli(local_stack, "models", "versions", name, "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    rows = {r["version"]: r for r in json.loads(res.stdout)["versions"]}
    assert set(rows) == {v1, v2} and all(rows[v]["rmse"] > 0 and rows[v]["pipeline"] == "build-model" for v in rows)

    def aliases() -> dict[str, str]:
        return {a: str(v) for a, v in client.get_registered_model(name).aliases.items()}

    t0 = time.monotonic()
    res = cli(local_stack, "promote", name, v1, "--gate", "rmse<=0.0001", "--yes")
    assert res.returncode == ExitCode.GATE_FAILED, res.stderr[-3000:]
    assert "FAIL" in res.stdout and "Nothing changed" in res.stderr and aliases() == {}
    first = time.monotonic() - t0

    res = cli(local_stack, "promote", name, v1, "--gate", "rmse<=1000", "--beat-champion", "rmse:2%", "--yes", "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads(res.stdout)
    assert doc["promoted"] and aliases() == {"champion": v1}
    held = mlflow_runs(local_stack, "evaluate_model", doc["evaluation"]["dag_run_id"])
    main = next(r for r in held if _tags(r)["mlopsctl.role"] == "evaluation")
    assert {k: v for k, v in _metrics(main).items() if k.startswith("candidate_")} == {
        f"candidate_{k}": v for k, v in doc["evaluation"]["candidate"].items()}
    tags = client.get_model_version(name, v1).tags
    assert tags["mlopsctl_prev_champion"] == "none" and tags["mlopsctl_eval_run_champion"] == main["info"]["run_id"]

    known = frame[frame["price"] != "NA"].head(400)
    eval_csv = tmp_path / "eval rows.csv"
    known.to_csv(eval_csv, index=False)
    res = cli(local_stack, "promote", name, v2, "--beat-champion", "rmse:0%", "--eval-data", str(eval_csv), "--yes",
              "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads(res.stdout)
    assert doc["evaluation"]["champion_version"] == v1 and set(doc["evaluation"]["champion"]) == {"rmse", "mae", "r2"}
    assert doc["evaluation"]["candidate"]["rmse"] < doc["evaluation"]["champion"]["rmse"]
    assert aliases() == {"champion": v2}
    assert client.get_model_version(name, v2).tags["mlopsctl_prev_champion"] == v1

    bad = tmp_path / "no heating column.csv"
    known.drop(columns=["heating type"]).to_csv(bad, index=False)
    res = cli(local_stack, "promote", name, v1, "--eval-data", str(bad), "--yes")
    assert res.returncode == ExitCode.RUN_FAILED, res.stdout + res.stderr[-3000:]
    assert "heating type" in res.stdout + res.stderr and aliases() == {"champion": v2}

    inputs = frame.drop(columns=["price"]).head(500).copy()
    inputs.loc[3, "zip code"] = "Z999"  # a category no version saw
    data = tmp_path / "new houses.csv"
    inputs.to_csv(data, index=False)
    output = tmp_path / "scored"
    res = cli(local_stack, "score", f"{name}@champion", "--data", str(data), "--output", str(output), "--json")
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-3000:]
    doc = json.loads(res.stdout)
    assert doc["dag_id"] == "batch_score" and doc["conf"]["model_version"] == int(v2)
    metrics = doc["mlflow"]["run"]["metrics"]
    assert metrics["rows_scored"] == len(inputs) == metrics["prediction_count"]
    scored = pd.read_parquet(output)
    assert list(scored.columns) == [*inputs.columns, "prediction", "model_name", "model_version", "scored_at"]
    assert set(scored["model_version"].astype(str)) == {v2}
    model = mlflow.pyfunc.load_model(f"models:/{name}/{v2}")
    expected = np.asarray(model.predict(scored[list(inputs.columns)]), dtype="float64")
    np.testing.assert_allclose(scored["prediction"].to_numpy(), expected, rtol=1e-9)
    assert metrics["prediction_mean"] == pytest.approx(float(expected.mean()), rel=1e-9)

    again = cli(local_stack, "score", f"{name}/{v2}", "--data", str(data), "--output", str(output))
    assert again.returncode == ExitCode.REJECTED and "exists" in again.stderr
    partial = tmp_path / "partial.csv"
    inputs.drop(columns=["rooms"]).to_csv(partial, index=False)
    res = cli(local_stack, "score", f"{name}@champion", "--data", str(partial), "--output", str(tmp_path / "o2"))
    assert res.returncode == ExitCode.RUN_FAILED and "rooms" in res.stdout + res.stderr
    assert not (tmp_path / "o2").exists()

    res = cli(local_stack, "promote", name, "--alias", "champion", "--rollback", "--yes")
    assert res.returncode == 0, res.stderr[-3000:]
    assert aliases() == {"champion": v1}
    res = cli(local_stack, "promote", name, "--rollback", "--yes")
    assert res.returncode == ExitCode.NOT_FOUND and "no record" in res.stderr
    print(f"\n[measure] promote (an evaluate_model run on the stack, gate failing): CLI wall {first:.1f}s")
