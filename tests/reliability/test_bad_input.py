"""Bad-input matrix: one table, each case with the exact message, the documented exit
code, no traceback, and -- when the input can be judged locally -- not one request sent.

"No request sent" is proven twice: the Airflow and MLflow URLs point at a port nobody listens on (a request
would end UNREACHABLE, not USAGE/CONFIG -- the control case below shows it), and every httpx transport is
replaced by a recorder that fails the test if anything is sent.

Inputs that only the remote side can judge (the contents of a data file) are the live part: the first
task fails without retrying, the CLI exits RUN_FAILED and prints the job's one-line reason in the log tail.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx
import pytest

from mlopsctl.errors import ExitCode
from tests.reliability._helpers import airflow_runs, assert_clean_error, cli, json_out, mlflow_runs

DEAD = "http://127.0.0.1:9"  # discard port: nothing listens there

# (id, extra env, argv, exit code, exact first line of the error on stderr (regex, anchored))
U, C = ExitCode.USAGE, ExitCode.CONFIG
LOCAL_CASES: list[tuple[str, dict[str, str], list[str], ExitCode, str]] = [
    # --- hyperparameters ---------------------------------------------------------------------------
    ("max-depth zero", {}, ["run", "build-model", "--max-depth", "0"], U,
     r"Error: --max-depth must be between 1 and 1000, got 0\."),
    ("max-depth negative", {}, ["run", "build-model", "--max-depth", "-3"], U,
     r"Error: --max-depth must be between 1 and 1000, got -3\."),
    ("max-depth float", {}, ["run", "build-model", "--max-depth", "1.5"], U,
     r"Error: Invalid value for '--max-depth': .*valid integer"),
    ("max-depth string", {}, ["run", "build-model", "--max-depth", "abc"], U,
     r"Error: Invalid value for '--max-depth': .*valid integer"),
    ("max-depth huge", {}, ["run", "build-model", "--max-depth", "9" * 30], U,
     r"Error: --max-depth must be between 1 and 1000, got 9{30}\."),
    ("max-depth empty", {}, ["run", "build-model", "--max-depth", ""], U,
     r"Error: Invalid value for '--max-depth': .*valid integer"),
    ("n-estimators zero", {}, ["run", "build-model", "--n-estimators", "0"], U,
     r"Error: --n-estimators must be between 1 and 5000, got 0\."),
    ("n-estimators negative", {}, ["run", "build-model", "--n-estimators", "-1"], U,
     r"Error: --n-estimators must be between 1 and 5000, got -1\."),
    ("n-estimators float", {}, ["run", "build-model", "--n-estimators", "2.5"], U,
     r"Error: Invalid value for '--n-estimators': .*valid integer"),
    ("n-estimators huge", {}, ["run", "build-model", "--n-estimators", "5001"], U,
     r"Error: --n-estimators must be between 1 and 5000, got 5001\."),
    ("test-size zero", {}, ["run", "build-model", "--test-size", "0"], U,
     r"Error: --test-size must be strictly between 0 and 1, got 0\.0\."),
    ("test-size one", {}, ["run", "build-model", "--test-size", "1"], U,
     r"Error: --test-size must be strictly between 0 and 1, got 1\.0\."),
    ("test-size nan", {}, ["run", "build-model", "--test-size", "nan"], U, r"Error: --test-size must be a number, got nan\."),
    ("test-size string", {}, ["run", "build-model", "--test-size", "half"], U,
     r"Error: Invalid value for '--test-size': .*valid number"),
    ("random-state negative", {}, ["run", "build-model", "--random-state", "-1"], U,
     r"Error: --random-state must be between 0 and 4294967295, got -1\."),
    ("random-state above 2**32-1", {}, ["run", "build-model", "--random-state", "4294967296"], U,
     r"Error: --random-state must be between 0 and 4294967295, got 4294967296\."),
    ("target empty", {}, ["run", "build-model", "--target", ""], U, r"Error: --target must not be empty or blank\."),
    ("grid cv too small", {}, ["grid-search", "--cv", "1"], U, r"Error: --cv must be between 2 and 20, got 1\."),
    ("grid cv too large", {}, ["grid-search", "--cv", "21"], U, r"Error: --cv must be between 2 and 20, got 21\."),
    # --- grid lists --------------------------------------------------------------------------------
    ("grid empty item", {}, ["grid-search", "--max-depth", "80,,90"], U,
     r"Error: --max-depth: empty item at position 2 in '80,,90'\."),
    ("grid trailing comma", {}, ["grid-search", "--n-estimators", "100,"], U,
     r"Error: --n-estimators: empty item at position 2 in '100,'\."),
    ("grid duplicate", {}, ["grid-search", "--max-depth", "80,90,80"], U,
     r"Error: --max-depth: 80 appears more than once in '80,90,80'; grid values must be unique\."),
    ("grid non-numeric", {}, ["grid-search", "--max-depth", "a,b"], U,
     r"Error: --max-depth: 'a' is not an integer \(in 'a,b'\)\."),
    ("grid wrong separator", {}, ["grid-search", "--max-depth", "80;90"], U,
     r"Error: --max-depth: '80;90' is not an integer \(in '80;90'\)\."),
    ("grid float item", {}, ["grid-search", "--n-estimators", "1.5,2"], U,
     r"Error: --n-estimators: '1\.5' is not an integer \(in '1\.5,2'\)\."),
    ("grid out of range", {}, ["grid-search", "--spark", "--max-depth", "0,5"], U,
     r"Error: --max-depth: 0 is out of range; values must be between 1 and 1000\."),
    ("grid empty", {}, ["grid-search", "--n-estimators", ""], U, r"Error: --n-estimators needs at least one value"),
    # --- data paths ----------------------------------------------------------------------------------
    ("data missing", {}, ["run", "build-model", "--data", "missing.csv"], U, r"Error: --data: missing\.csv does not exist\."),
    ("data empty dir", {}, ["run", "build-model", "--data", "emptydir"], U,
     r"Error: --data: directory emptydir holds no \.csv or \.parquet files\."),
    ("data wrong format", {}, ["run", "build-model", "--data", "data.txt"], U,
     r"Error: --data: data\.txt is not a CSV or Parquet file \(expected \.csv, \.parquet, \.pq\)\."),
    ("data empty string", {}, ["run", "build-model", "--data", ""], U, r"Error: --data must not be empty\."),
    pytest.param(
        {}, ["run", "build-model", "--data", "secret.csv"], U,
        r"Error: --data: secret\.csv is not readable \(permission denied\)\.", id="data unreadable",
        marks=pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file: cannot make one unreadable"),
    ),
    # --- settings (exit CONFIG) ----------------------------------------------------------------------
    ("airflow url malformed", {"MLOPSCTL_AIRFLOW_URL": "notaurl"}, ["status"], C,
     (r"Error: Invalid settings: airflow_url \(MLOPSCTL_AIRFLOW_URL\): must be an http\(s\):// URL with a host, "
      r"got 'notaurl'\.")),
    ("airflow url flag scheme", {}, ["--airflow-url", "ftp://127.0.0.1", "status"], C,
     r"Error: Invalid settings: airflow_url \(MLOPSCTL_AIRFLOW_URL\): must be an http\(s\):// URL"),
    ("airflow url bad port", {"MLOPSCTL_AIRFLOW_URL": "http://127.0.0.1:99999"}, ["status"], C,
     r"Error: Invalid settings: airflow_url \(MLOPSCTL_AIRFLOW_URL\): bad port in 'http://127\.0\.0\.1:99999'\."),
    ("airflow port not a number", {"MLOPSCTL_AIRFLOW_PORT": "abc"}, ["status"], C,
     r"Error: Invalid settings: airflow_port \(MLOPSCTL_AIRFLOW_PORT\): Input should be a valid integer"),
    ("mlflow port out of range", {"MLOPSCTL_MLFLOW_PORT": "70000"}, ["dev", "status"], C,
     r"Error: Invalid settings: mlflow_port \(MLOPSCTL_MLFLOW_PORT\): Input should be less than or equal to 65535\."),
    ("mlflow uri malformed", {"MLOPSCTL_MLFLOW_TRACKING_URI": "notauri"}, ["status"], C,
     r"Error: Invalid settings: mlflow_tracking_uri \(MLOPSCTL_MLFLOW_TRACKING_URI\): must be http\(s\)://host"),
    ("unknown context flag", {}, ["--context", "nope", "status"], C, r"Error: Unknown context 'nope' \(known: none defined\)\."),
    ("unknown context env", {"MLOPSCTL_CONTEXT": "nope"}, ["status"], C, r"Error: Unknown context 'nope'"),
    ("empty token", {"MLOPSCTL_AIRFLOW_AUTH": "token", "MLOPSCTL_AIRFLOW_TOKEN": ""}, ["status"], C,
     r"Error: Airflow token auth is selected but no token is set\."),
    ("empty password", {"MLOPSCTL_AIRFLOW_PASSWORD": ""}, ["status"], C,
     r"Error: No Airflow password is set for http://127\.0\.0\.1:9\."),
    ("unknown auth kind", {"MLOPSCTL_AIRFLOW_AUTH": "kerberos"}, ["status"], C,
     r"Error: Invalid settings: airflow_auth \(MLOPSCTL_AIRFLOW_AUTH\): Input should be 'password', 'token' or 'none'\."),
    ("zero timeout", {"MLOPSCTL_REQUEST_TIMEOUT": "0"}, ["status"], C,
     r"Error: Invalid settings: request_timeout \(MLOPSCTL_REQUEST_TIMEOUT\): Input should be greater than 0\."),
    # --- unknown pipelines / commands ----------------------------------------------------------------
    ("unknown pipeline status", {}, ["status", "--pipeline", "nope"], U, r"Error: Unknown pipeline 'nope'\."),
    ("unknown pipeline logs", {}, ["logs", "r1", "-p", "nope"], U, r"Error: Unknown pipeline 'nope'\."),
    ("unknown run subcommand", {}, ["run", "train-everything"], U, r"Error: No such command 'train-everything'\."),
    # --- conflicting / incomplete flags --------------------------------------------------------------
    ("register and no-register", {}, ["run", "build-model", "--register", "m", "--no-register"], U,
     r"Error: --register and --no-register are mutually exclusive\."),
    ("register empty", {}, ["grid-search", "--register", " "], U,
     r"Error: --register needs a model name \(use --no-register to skip registration\)\."),
    ("wait without run id", {}, ["status", "--wait"], U, r"Error: --wait needs a RUN_ID\."),
    ("negative timeout", {}, ["run", "build-model", "--timeout", "-1"], U,
     r"Error: --timeout must be a positive number of seconds, got -1\."),
    ("limit zero", {}, ["status", "--limit", "0"], U, r"Error: --limit must be between 1 and 500, got 0\."),
    ("try zero", {}, ["logs", "r1", "--try", "0"], U, r"Error: --try must be >= 1, got 0\."),
]


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch, project: Path) -> list[httpx.Request]:
    """A project with a few data files; Airflow/MLflow at a dead port; every httpx request recorded."""
    (project / "emptydir").mkdir()
    (project / "data.txt").write_text("a,b\n1,2\n")
    secret = project / "secret.csv"
    secret.write_text("x,target\n1,2\n")
    secret.chmod(0)
    monkeypatch.setenv("MLOPSCTL_AIRFLOW_URL", DEAD)
    monkeypatch.setenv("MLOPSCTL_MLFLOW_TRACKING_URI", DEAD)
    monkeypatch.setenv("MLOPSCTL_AIRFLOW_PASSWORD", "not-used")
    monkeypatch.setenv("MLOPSCTL_RETRIES", "0")
    seen: list[httpx.Request] = []

    def record(self, request: httpx.Request) -> httpx.Response:
        seen.append(request)
        raise httpx.ConnectError("connection refused (recorded by the test)", request=request)

    monkeypatch.setattr(httpx.HTTPTransport, "handle_request", record)
    return seen


@pytest.mark.parametrize(("env", "argv", "code", "message"), [
    c if isinstance(c, type(pytest.param(0))) else pytest.param(*c[1:], id=c[0]) for c in LOCAL_CASES
])
def test_bad_input_is_refused_locally(sent, monkeypatch, cli, env, argv, code, message) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    exit_code, out, err = cli(*argv)
    assert exit_code == code, err
    assert "Traceback" not in err and "Traceback" not in out
    assert re.search(rf"^{message}", err, re.MULTILINE), err
    assert sent == [], [str(r.url) for r in sent]


def test_control_a_valid_command_with_this_setup_would_reach_the_network(sent, cli) -> None:
    """Proves the matrix' setup: a valid input does send a request, and ends UNREACHABLE (not USAGE)."""
    code, _, err = cli("run", "build-model", "--max-depth", "5")
    assert code == ExitCode.UNREACHABLE
    assert "Error: Airflow is not reachable at http://127.0.0.1:9" in err
    assert [r.url.port for r in sent] == [9]


def test_one_point_grid_is_valid(sent, monkeypatch, cli) -> None:
    """A 1x1 grid is allowed (minItems 1): it is triggered, with one-element lists in the conf sent."""
    import json

    def airflow(self, request: httpx.Request) -> httpx.Response:
        sent.append(request)
        if request.url.path == "/auth/token":
            return httpx.Response(201, json={"access_token": "t"}, request=request)
        if request.method == "GET" and request.url.path == "/api/v2/dags/grid_search":
            return httpx.Response(200, json={"dag_id": "grid_search", "is_paused": False}, request=request)
        raise httpx.ConnectError("connection refused (recorded by the test)", request=request)

    monkeypatch.setattr(httpx.HTTPTransport, "handle_request", airflow)
    code, _, err = cli("grid-search", "--max-depth", "5", "--n-estimators", "10")
    assert code == ExitCode.UNREACHABLE, err  # the trigger's answer never came: no retry (MLOPSCTL_RETRIES=0)
    [trigger] = [r for r in sent if r.method == "POST" and r.url.path == "/api/v2/dags/grid_search/dagRuns"]
    conf = json.loads(trigger.content)["conf"]
    assert (conf["max_depth"], conf["n_estimators"]) == ([5], [10])


# --- judged remotely: data contents ---------------------------------------------------------------------

REMOTE_DATA = {
    # file name -> (content, target, the job's reason as printed in the log tail)
    "no_target.csv": ("a,b\n1,2\n3,4\n", "target", r"target column 'target' not found; columns are: a, b"),
    "text_target.csv": ("a,target\n1,cheap\n2,dear\n", "target", r"target column 'target' is not numeric"),
    "nan_target.csv": ("a,target\n1,\n2,NaN\n3,\n", "target", r"target column 'target' has no values \(all null/NaN\)"),
    "empty.csv": ("", "target", r"data file is empty: .*empty\.csv"),
    "header_only.csv": ("a,target\n", "target", r"data has no rows"),
}


def test_data_judged_remotely_fails_the_first_task_with_a_clear_reason(local_stack, tmp_path: Path) -> None:
    """Trigger all bad-data runs at once (--no-wait), then reattach to each: RUN_FAILED, the reason in the
    log tail, preprocess_data failed on its first try (bad data is not retried), train_model never ran,
    and MLflow holds no run for it."""
    runs: dict[str, str] = {}
    for name, (content, target, _) in REMOTE_DATA.items():
        path = tmp_path / name
        path.write_text(content)
        res = cli("run", "build-model", "--data", str(path), "--target", target, "--n-estimators", "5",
                  "--no-register", "--no-wait", "--json", stack=local_stack)
        assert res.returncode == 0, res.stderr
        runs[name] = json_out(res)["dag_run_id"]
    for name, run_id in runs.items():
        reason = REMOTE_DATA[name][2]
        res = cli("status", run_id, "--wait", "--json", stack=local_stack)
        assert res.returncode == ExitCode.RUN_FAILED, (name, res.stdout, res.stderr)
        assert_clean_error(res)
        doc = json_out(res)
        assert doc["state"] == "failed" and doc["failed_task"] == "preprocess_data", doc
        assert any(re.search(reason, line) for line in doc["log_tail"]), (name, doc["log_tail"])
        tasks = {t["task_id"]: t for t in doc["tasks"]}
        assert tasks["preprocess_data"]["try_number"] == 1  # exit 3: no retry
        assert tasks["train_model"]["state"] == "upstream_failed"
        assert f"Run {run_id} of build_model ended failed: task 'preprocess_data' failed." in res.stderr
        assert mlflow_runs(local_stack, "build_model", run_id) == []
        assert len(airflow_runs(local_stack, "build_model", run_id)) == 1


def test_unknown_run_id_is_not_found(local_stack) -> None:
    for argv in (["status", "nope__42"], ["status", "nope__42", "--wait"], ["logs", "nope__42"]):
        res = cli(*argv, stack=local_stack)
        assert res.returncode == ExitCode.NOT_FOUND, (argv, res.stderr)
        assert_clean_error(res)
        assert ("Error: No run 'nope__42' in build_model, grid_search, grid_search_spark, evaluate_model, "
                "batch_score." in res.stderr)
        assert "List recent runs with: mlopsctl status" in res.stderr


def test_unknown_task_is_not_found(local_stack) -> None:
    res = cli("run", "build-model", "--n-estimators", "3", "--no-register", "--no-wait", "--json", stack=local_stack)
    run_id = json_out(res)["dag_run_id"]
    res = cli("logs", run_id, "--task", "no_such_task", stack=local_stack)
    assert res.returncode == ExitCode.NOT_FOUND, res.stderr
    assert f"Error: Run {run_id} of build_model has no task 'no_such_task'." in res.stderr
    assert cli("status", run_id, "--wait", "--json", stack=local_stack).returncode == 0
