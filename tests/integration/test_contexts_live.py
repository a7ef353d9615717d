"""Contexts against the real local Airflow: password -> JWT, a static bearer token minted by that Airflow
(`POST /auth/token`) and passed through the env var the context names, and auth=none against a second
api-server of the same stack running with all-admins (no login at all)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mlopsctl import contexts
from mlopsctl.airflow.client import AirflowClient
from mlopsctl.errors import AuthError, ExitCode
from mlopsctl.settings import load_settings
from tests.fixtures.stack import LocalStack, free_port

PIPELINE_DAGS = {"build_model", "grid_search", "grid_search_spark"}


@pytest.fixture
def cfg_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLOPSCTL_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setitem(__import__("sys").modules, "keyring", None)  # the machine's keyring stays out of it
    monkeypatch.chdir(tmp_path)  # no stray .env
    return tmp_path / "cfg"


def add_context(name: str, **fields: object) -> None:
    cfg = contexts.load()
    cfg.contexts[name] = contexts.Context(**fields)
    contexts.save(cfg)


def dag_ids(client: AirflowClient) -> set[str]:
    return {d.dag_id for d in client.list_dags()}


def mint_token(stack: LocalStack) -> str:
    resp = httpx.post(
        f"{stack.airflow_url}/auth/token", json={"username": "admin", "password": stack.password}, timeout=30
    )
    assert resp.status_code == 201, resp.text
    return resp.json()["access_token"]


def test_password_auth_through_a_context(local_stack: LocalStack, cfg_dir: Path, monkeypatch, cli) -> None:
    add_context(
        "local",
        airflow_url=local_stack.airflow_url,
        auth="password",
        username="admin",
        mlflow_tracking_uri=local_stack.mlflow_url,
    )
    monkeypatch.setenv("MLOPSCTL_AIRFLOW_PASSWORD", local_stack.password)
    settings = load_settings(context="local")
    assert settings.airflow_url == local_stack.airflow_url and settings.airflow_auth == "password"
    with AirflowClient.from_settings(settings) as client:
        assert PIPELINE_DAGS <= dag_ids(client)

    # the whole CLI path: --context picks the target, the password comes from the environment
    code, out, err = cli("--context", "local", "dags", "--json")
    assert code == 0, err
    assert PIPELINE_DAGS <= loaded(json.loads(out))

    monkeypatch.setenv("MLOPSCTL_AIRFLOW_PASSWORD", "wrong-password")
    with AirflowClient.from_settings(load_settings(context="local")) as client, pytest.raises(AuthError):
        client.list_dags()
    code, _out, err = cli("--context", "local", "dags", "--json")
    assert code == ExitCode.AUTH and "wrong-password" not in err


def test_bearer_token_from_the_env_var_the_context_names(
    local_stack: LocalStack, cfg_dir: Path, monkeypatch, cli
) -> None:
    token = mint_token(local_stack)
    add_context("tok", airflow_url=local_stack.airflow_url, auth="token", token_env="LIVE_AIRFLOW_TOKEN")
    cfg = contexts.load()
    cfg.current = "tok"  # selected by `context use`, not by a flag
    contexts.save(cfg)
    monkeypatch.setenv("LIVE_AIRFLOW_TOKEN", token)
    monkeypatch.delenv("MLOPSCTL_AIRFLOW_PASSWORD", raising=False)
    settings = load_settings()
    assert settings.context == "tok" and settings.airflow_auth == "token"
    with AirflowClient.from_settings(settings) as client:
        assert PIPELINE_DAGS <= dag_ids(client)

    code, out, err = cli("dags", "--json")
    assert code == 0, err
    assert token not in out + err

    code, out, _err = cli("context", "show", "--json")
    shown = json.loads(out)
    assert shown["token"] == "****" and shown["token_source"] == "$LIVE_AIRFLOW_TOKEN" and token not in out

    monkeypatch.setenv("LIVE_AIRFLOW_TOKEN", token[:-6] + "AAAAAA")  # tampered signature
    code, _out, err = cli("dags", "--json")
    assert code == ExitCode.AUTH


@pytest.fixture(scope="module")
def all_admins_api(local_stack: LocalStack) -> Iterator[str]:
    """A second api-server on the same Airflow DB/config, with SIMPLE_AUTH_MANAGER_ALL_ADMINS=True."""
    from mlopsctl.devenv.airflowstack import api_server_command
    from mlopsctl.devenv.layout import StackLayout

    port = free_port({local_stack.settings.airflow_port, local_stack.settings.mlflow_port})
    settings = local_stack.settings.model_copy(update={"airflow_port": port})
    spec = api_server_command(settings, StackLayout.from_settings(settings))
    env = dict(spec.env, AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True")
    log = (local_stack.state_dir / "logs" / "api-server-all-admins.log").open("ab")
    proc = subprocess.Popen(
        spec.argv, env=env, cwd=spec.cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, f"all-admins api-server exited {proc.returncode}; see {log.name}"
            try:
                if httpx.get(f"{url}/api/v2/monitor/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"all-admins api-server not up; see {log.name}"
            time.sleep(1)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        log.close()


def test_none_auth_against_an_all_admins_airflow(
    all_admins_api: str, local_stack: LocalStack, cfg_dir: Path, cli
) -> None:
    # the main stack wants a login; the all-admins server answers without one
    assert httpx.get(f"{local_stack.airflow_url}/api/v2/dags", timeout=30).status_code == 401
    add_context("open", airflow_url=all_admins_api, auth="none", mlflow_tracking_uri=local_stack.mlflow_url)
    settings = load_settings(context="open")
    assert settings.airflow_auth == "none" and settings.airflow_password is None
    with AirflowClient.from_settings(settings) as client:
        assert PIPELINE_DAGS <= dag_ids(client)
    code, out, err = cli("--context", "open", "dags", "--json")
    assert code == 0, err
    assert PIPELINE_DAGS <= loaded(json.loads(out))


def loaded(dags_json: dict) -> set[str]:
    """dag_ids that `dags --json` saw loaded on the server."""
    return {row["dag_id"] for row in dags_json["pipelines"] if row["loaded"]}
