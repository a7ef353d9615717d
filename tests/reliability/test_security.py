"""Security, on the real local stack.

- every listening socket of every stack process (components, LocalExecutor workers, task supervisors,
  spark-submit JVMs) is on the loopback interface -- sampled while a pipeline runs;
- the state dir is 0700, the passwords file 0600;
- the MLflow server still rejects a foreign Host header (DNS rebinding) and a cross-origin POST;
- secrets (test tokens handed to the CLI, the stack's admin password, the JWT the CLI got) appear in no
  stdout/stderr, Airflow task log, MLflow param/tag, nor any file under the project/state dir;
- user strings with spaces, quotes, `;` and `$(...)` in the data path and target reach Spark as argv,
  unchanged, and no shell ever runs them.
"""

from __future__ import annotations

import csv
import secrets
import stat
import time
import uuid
from pathlib import Path

import httpx
import pytest

from mlopsctl.errors import ExitCode
from tests.reliability._helpers import (
    assert_clean_error,
    cli,
    cli_env,
    json_out,
    mlflow_runs,
    params,
    stack_processes,
    tags,
)

LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def _listening(procs) -> dict[tuple[str, int], str]:
    import psutil

    seen: dict[tuple[str, int], str] = {}
    for proc in procs:
        try:
            conns = proc.net_connections(kind="inet")
            name = " ".join(proc.cmdline()[:3])[:80]
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        for c in conns:
            if c.status == psutil.CONN_LISTEN or (c.type == 2 and c.laddr):  # TCP listen, or any bound UDP
                seen[(c.laddr.ip, c.laddr.port)] = name
    return seen


def _write_csv(path: Path, target: str, rows: int = 80) -> None:
    import random

    rng = random.Random(7)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["f1", "f2", target])
        for _ in range(rows):
            a, b = rng.random(), rng.random()
            w.writerow([f"{a:.4f}", f"{b:.4f}", f"{3 * a - b + rng.random() / 10:.4f}"])


@pytest.fixture(scope="module")
def weird_run(local_stack, tmp_path_factory):
    """One build-model run whose data path and target are full of shell metacharacters, started with
    test tokens in the CLI's environment; the test samples the stack's sockets while it runs."""
    base = tmp_path_factory.mktemp("sec")
    canary = f"pwned_{uuid.uuid4().hex[:8]}"
    target = f"price 'usd'; $(touch {canary}) `touch {canary}` & echo"
    data = base / f"we ird 'dir'; $(touch {canary})" / "my data;`touch x`.csv"
    _write_csv(data, target)
    tokens = {"DATABRICKS_TOKEN": f"dapi{secrets.token_hex(16)}", "MLOPSCTL_AIRFLOW_TOKEN": f"tok{secrets.token_hex(16)}"}
    env = cli_env(local_stack, **tokens)
    res = cli("run", "build-model", "--data", str(data), "--target", target, "--n-estimators", "5",
              "--max-depth", "4", "--no-register", "--no-wait", "--json", stack=local_stack, env=env)
    assert res.returncode == 0, res.stderr
    run_id = json_out(res)["dag_run_id"]
    listening: dict[tuple[str, int], str] = {}
    outputs = [res]
    # sample the sockets of every stack process (incl. the task's spark-submit) until the run ends
    with local_stack.client() as client:
        deadline = time.monotonic() + 1200
        while time.monotonic() < deadline:
            listening.update(_listening(stack_processes(local_stack)))
            if client.get_run("build_model", run_id).state in ("success", "failed"):
                break
            time.sleep(1)
    res = cli("status", run_id, "--wait", "--json", stack=local_stack, env=env)
    outputs.append(res)
    return {"run_id": run_id, "res": res, "data": data, "target": target, "canary": canary, "tokens": tokens,
            "listening": listening, "outputs": outputs, "base": base}


def test_every_listening_socket_of_the_stack_is_loopback(local_stack, weird_run) -> None:
    listening = weird_run["listening"]
    ports = {port for _, port in listening}
    assert local_stack.settings.airflow_port in ports and local_stack.settings.mlflow_port in ports, listening
    public = {k: v for k, v in listening.items() if k[0] not in LOOPBACK}
    assert public == {}, f"sockets reachable from the network: {public}"


def test_state_dir_is_private_and_password_file_0600(local_stack) -> None:
    state = local_stack.state_dir
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    pw = state / "airflow" / "passwords.json"
    assert stat.S_IMODE(pw.stat().st_mode) == 0o600
    # nothing in the state dir is writable by others (the keys in airflow.cfg, the SQLite DBs, logs)
    writable = [p for p in state.rglob("*") if not p.is_symlink() and p.stat().st_mode & stat.S_IWOTH]
    assert writable == []


def test_mlflow_rejects_a_foreign_host_header(local_stack) -> None:
    url = f"{local_stack.mlflow_url}/api/2.0/mlflow/experiments/search"
    with httpx.Client(timeout=30) as http:
        ok = http.post(url, json={"max_results": 1})
        evil = http.post(url, json={"max_results": 1}, headers={"Host": "evil.example.com"})
    assert ok.status_code == 200
    assert evil.status_code in (400, 403), (evil.status_code, evil.text[:200])


def test_mlflow_rejects_a_cross_origin_post(local_stack) -> None:
    name = f"/sec/cors-{uuid.uuid4().hex[:8]}"
    base = f"{local_stack.mlflow_url}/api/2.0/mlflow"
    with httpx.Client(timeout=30) as http:
        evil = http.post(f"{base}/experiments/create", json={"name": name},
                         headers={"Origin": "http://evil.example.com"})
        assert evil.status_code in (400, 403), (evil.status_code, evil.text[:200])
        found = http.get(f"{base}/experiments/get-by-name", params={"experiment_name": name})
        assert found.status_code == 404  # nothing was created
        local = http.post(f"{base}/experiments/create", json={"name": name},
                          headers={"Origin": local_stack.mlflow_url})
        assert local.status_code == 200, local.text[:200]  # same-origin (the MLflow UI) still works


def test_shell_metacharacters_reach_spark_as_argv_unchanged(local_stack, weird_run) -> None:
    res = weird_run["res"]
    assert res.returncode == 0, (res.stdout, res.stderr)
    doc = json_out(res)
    assert doc["state"] == "success"
    runs = mlflow_runs(local_stack, "build_model", weird_run["run_id"])
    assert len(runs) == 1
    p = params(runs[0])
    assert p["data"] == str(weird_run["data"].resolve())  # the exact path the job read
    assert p["target"] == weird_run["target"]  # the exact column name the job trained on
    canary = weird_run["canary"]
    for root in (local_stack.project_dir, weird_run["base"], Path.cwd(), Path("/tmp")):
        assert not list(root.rglob(canary)) if root != Path("/tmp") else not (root / canary).exists(), root
    assert not (local_stack.state_dir / "airflow" / canary).exists()


def _secrets(local_stack, weird_run) -> dict[str, str]:
    found = dict(weird_run["tokens"])
    found["admin password"] = local_stack.password
    with local_stack.client() as client:
        client.check_auth()
        found["JWT"] = client._auth.token  # what the CLI-side client holds in memory only
    return found


def test_no_secret_in_output_logs_mlflow_or_files(local_stack, weird_run) -> None:
    hidden = _secrets(local_stack, weird_run)
    # a CLI failure that handles a secret: the token is rejected, and not echoed
    env = cli_env(local_stack, MLOPSCTL_AIRFLOW_AUTH="token", MLOPSCTL_AIRFLOW_TOKEN=hidden["MLOPSCTL_AIRFLOW_TOKEN"],
                  DATABRICKS_TOKEN=hidden["DATABRICKS_TOKEN"])
    bad = cli("status", stack=local_stack, env=env)
    assert bad.returncode == ExitCode.AUTH, bad.stderr
    assert_clean_error(bad)
    wrong_pw = f"pw-{secrets.token_hex(8)}"
    hidden["wrong password"] = wrong_pw
    bad_pw = cli("status", stack=local_stack, env=cli_env(local_stack, MLOPSCTL_AIRFLOW_PASSWORD=wrong_pw))
    assert bad_pw.returncode == ExitCode.AUTH, bad_pw.stderr
    outputs = [*weird_run["outputs"], bad, bad_pw]
    # 1. stdout / stderr of every CLI call
    for res in outputs:
        for what, value in hidden.items():
            assert value not in res.stdout and value not in res.stderr, f"{what} printed by {res.args}"
    # 2. the Airflow task logs, as the REST API serves them

    with local_stack.client() as client:
        for ti in client.task_instances("build_model", weird_run["run_id"]):
            text = "\n".join(client.read_log("build_model", weird_run["run_id"], ti.task_id, max(ti.try_number, 1)))
            assert text, ti.task_id
            for what, value in hidden.items():
                assert value not in text, f"{what} in the log of {ti.task_id}"
    # 3. MLflow params and tags of the run
    for run in mlflow_runs(local_stack, "build_model", weird_run["run_id"]):
        blob = repr(params(run)) + repr(tags(run))
        for what, value in hidden.items():
            assert value not in blob, f"{what} in MLflow params/tags"
    # 4. every file under the project (incl. the state dir: logs, SQLite DBs, artifacts, airflow.cfg)
    allowed = {local_stack.state_dir / "airflow" / "passwords.json"}  # the one place the password lives
    leaks = []
    for path in local_stack.project_dir.rglob("*"):
        if not path.is_file() or path.is_symlink() or path in allowed:
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        for what, value in hidden.items():
            if value.encode() in data:
                leaks.append(f"{what} in {path}")
    assert leaks == []
