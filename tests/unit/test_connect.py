"""`mlopsctl connect databricks|status` and `mlopsctl deploy jobs|dags` through the CLI entry point.

Databricks is the local test server (real databricks-sdk calls); Airflow's connections API is an
in-memory httpx.MockTransport here (the real Airflow is exercised in tests/integration/).
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from mlopsctl import __version__
from mlopsctl.appcontext import Environment
from mlopsctl.errors import ExitCode
from mlopsctl.jobs_wheel import wheel_file_name
from tests.fixtures.databricks_server import (
    DatabricksTestServer,
    databricks_server,  # noqa: F401 - fixture
)
from tests.fixtures.files import write_files


class FakeAirflowConnections:
    """Airflow 3's /api/v2/connections and /variables: 201 on create, 409 for an existing id, 200 on PATCH,
    and a stored password shown as '***'."""

    def __init__(self) -> None:
        self.conns: dict[str, dict] = {}
        self.variables: dict[str, str] = {}
        self.calls: list[tuple[str, str, dict | None]] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        path = request.url.path
        self.calls.append((request.method, path, body))
        if path == "/api/v2/connections" and request.method == "POST":
            if not isinstance(body.get("extra", ""), str):
                return httpx.Response(422, json={"detail": "extra must be a string"})
            if body["connection_id"] in self.conns:
                return httpx.Response(409, json={"detail": "exists"})
            self.conns[body["connection_id"]] = dict(body)
            return httpx.Response(201, json=self._public(body["connection_id"]))
        if path == "/api/v2/connections" and request.method == "GET":
            items = [self._public(c) for c in self.conns]
            return httpx.Response(200, json={"connections": items, "total_entries": len(items)})
        if path.startswith("/api/v2/connections/") and request.method == "PATCH":
            cid = path.rsplit("/", 1)[1]
            self.conns[cid].update(body)
            return httpx.Response(200, json=self._public(cid))
        if path == "/api/v2/variables" and request.method == "POST":
            self.variables[body["key"]] = body["value"]
            return httpx.Response(201, json=body)
        return httpx.Response(404, json={"detail": "Not Found"})

    def _public(self, cid: str) -> dict:
        conn = dict(self.conns[cid])
        if conn.get("password"):
            conn["password"] = "***"
        return conn


@pytest.fixture
def airflow() -> FakeAirflowConnections:
    return FakeAirflowConnections()


@pytest.fixture
def environment(airflow: FakeAirflowConnections) -> Environment:
    """mlopsctl in this module reaches Airflow's API in `airflow`."""
    return Environment(settings={"airflow_auth": "none", "retries": 0},
                       airflow_transport=httpx.MockTransport(airflow.handler))


@pytest.fixture
def dbx_env(monkeypatch: pytest.MonkeyPatch, databricks_server: DatabricksTestServer) -> DatabricksTestServer:  # noqa: F811
    monkeypatch.setenv("DATABRICKS_HOST", databricks_server.url)
    monkeypatch.setenv("DATABRICKS_TOKEN", databricks_server.token)
    return databricks_server


def test_connect_creates_then_updates_the_connection(project, airflow, dbx_env, cli) -> None:
    code, out, err = cli("connect", "databricks", "--insecure")
    assert code == 0, err
    assert "Created Airflow connection databricks_default" in err
    assert dbx_env.user in out
    stored = airflow.conns["databricks_default"]
    assert stored["conn_type"] == "databricks"
    assert (stored["host"], stored["schema"], stored["port"]) == ("127.0.0.1", "http", dbx_env.port)
    assert stored["password"] == dbx_env.token and stored["login"] == ""
    assert isinstance(stored["extra"], str)

    code, out, err = cli("connect", "databricks", "--insecure", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["action"] == "updated"
    assert doc["connection"]["password"] == "***"
    assert doc["identity"]["user_name"] == dbx_env.user
    assert [c[0] for c in airflow.calls] == ["POST", "POST", "PATCH"]
    assert dbx_env.token not in out + err


def test_custom_conn_id(project, airflow, dbx_env, cli) -> None:
    code, _, err = cli("connect", "databricks", "--insecure", "--conn-id", "dbx_prod")
    assert code == 0, err
    assert set(airflow.conns) == {"dbx_prod"}


def test_dry_run_writes_nothing_and_masks_the_token(project, airflow, dbx_env, cli) -> None:
    code, out, err = cli("connect", "databricks", "--insecure", "--dry-run")
    assert code == 0, err
    assert airflow.calls == []
    assert "***" in out and '"conn_type": "databricks"' in out
    assert dbx_env.token not in out + err
    code, out, _ = cli("connect", "databricks", "--insecure", "--dry-run", "--json")
    assert json.loads(out)["action"] == "none"


def test_plain_http_without_insecure_is_refused(project, airflow, dbx_env, cli) -> None:
    code, _, err = cli("connect", "databricks")
    assert code == ExitCode.CONFIG
    assert "plain HTTP" in err and "--insecure" in err
    assert airflow.calls == []


def test_missing_credentials_message(project, airflow, cli) -> None:
    code, _, err = cli("connect", "databricks")
    assert code == ExitCode.CONFIG
    assert "DATABRICKS_TOKEN" in err and "DATABRICKS_CLIENT_ID" in err and ".databrickscfg" in err
    assert "Traceback" not in err


def test_wrong_token_is_exit_auth_without_traceback_or_token(project, airflow, monkeypatch, databricks_server,  # noqa: F811
                                                             cli) -> None:
    monkeypatch.setenv("DATABRICKS_HOST", databricks_server.url)
    monkeypatch.setenv("DATABRICKS_TOKEN", "dapiNOTTHERIGHTONE")
    code, out, err = cli("connect", "databricks", "--insecure")
    assert code == ExitCode.AUTH
    assert "Invalid access token" in err and "Traceback" not in err
    assert "dapiNOTTHERIGHTONE" not in out + err
    assert airflow.calls == []


def test_managed_identity_connection_is_written_without_signing_in(project, airflow, monkeypatch, databricks_server,  # noqa: F811
                                                                    cli) -> None:
    monkeypatch.setenv("DATABRICKS_HOST", databricks_server.url)
    monkeypatch.setenv("ARM_USE_MSI", "true")  # the SDK's variable; same as --azure-managed-identity
    monkeypatch.setenv("ARM_CLIENT_ID", "mi-client-id")
    before = len(databricks_server.requests)
    code, out, err = cli("connect", "databricks", "--insecure", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["identity"] == {"host": databricks_server.url, "auth_type": "azure-msi", "verified": False}
    assert doc["airflow_requires"] == "apache-airflow-providers-databricks[azure-identity]"
    stored = airflow.conns["databricks_default"]
    assert stored["login"] == "" and stored["password"] == ""
    assert json.loads(stored["extra"]) == {"use_azure_managed_identity": True,
                                           "azure_managed_identity_client_id": "mi-client-id"}
    assert not any("/scim/" in path for _, path in databricks_server.requests[before:])  # nobody signed in
    code, out, _ = cli("connect", "status", "--json")
    assert code == 0 and json.loads(out)["connections"][0]["auth"] == "azure-msi"


def test_managed_identity_replaces_a_token_connection(project, airflow, dbx_env, monkeypatch, cli) -> None:
    assert cli("connect", "databricks", "--insecure")[0] == 0
    assert airflow.conns["databricks_default"]["password"] == dbx_env.token
    code, _, err = cli("connect", "databricks", "--insecure", "--azure-managed-identity")
    assert code == 0, err
    assert "managed identity" in err and "azure-identity" in err
    stored = airflow.conns["databricks_default"]
    assert stored["password"] == ""  # the PATCH emptied the token: the provider now uses the identity
    assert json.loads(stored["extra"]) == {"use_azure_managed_identity": True}
    assert dbx_env.token not in err


def test_connect_status_names_the_azure_kinds() -> None:
    from types import SimpleNamespace

    from mlopsctl.commands.connect import _auth_kind

    def conn(login="", password=None, extra=None):
        return SimpleNamespace(login=login, password=password, extra=json.dumps(extra) if extra else None)

    assert _auth_kind(conn("client-id", "***", {"azure_tenant_id": "t"})) == "azure-sp"
    assert _auth_kind(conn(extra={"use_azure_managed_identity": True})) == "azure-msi"
    assert _auth_kind(conn("sp", "***", {"service_principal_oauth": True})) == "oauth-m2m"
    assert _auth_kind(conn(password="***")) == "token"


def test_connect_status_checks_matching_host(project, airflow, dbx_env, cli) -> None:
    code, out, _ = cli("connect", "status")
    assert code == 0 and "No Databricks connections" in out
    cli("connect", "databricks", "--insecure")
    code, out, err = cli("connect", "status", "--json")
    assert code == 0, err
    doc = json.loads(out)
    [row] = doc["connections"]
    assert row["connection_id"] == "databricks_default"
    assert row["host"] == dbx_env.url and row["auth"] == "token"
    assert row["check"].startswith("ok")
    assert doc["local_credentials"]["user_name"] == dbx_env.user


def test_deploy_jobs_uploads_versioned_and_sets_variable(project: Path, airflow, dbx_env, cli) -> None:
    jobs = project / "spark_jobs"
    jobs.mkdir()
    (jobs / "train_model.py").write_text("print('train')\n")
    code, out, err = cli("deploy", "jobs", "--to", "/Workspace/Shared/mlopsctl/jobs", "--json",
                             "--set-variable")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["path"].startswith("/Workspace/Shared/mlopsctl/jobs/v")
    wheel_version = f"{__version__}+{doc['path'].rsplit('-', 1)[1]}"  # the folder's: v<version>-<content hash>
    assert doc["files"] == [f"{doc['path']}/{wheel_file_name(wheel_version)}", doc["path"] + "/train_model.py"]
    assert doc["wheel"] == doc["files"][0]
    assert dbx_env.workspace_path(doc["files"][1]).read_text() == "print('train')\n"
    assert airflow.variables == {"MLOPSCTL_DATABRICKS_JOBS_PATH": doc["path"]}
    # Same content -> same version; changed content -> a new one.
    _, out2, _ = cli("deploy", "jobs", "--to", "/Workspace/Shared/mlopsctl/jobs", "--json")
    assert json.loads(out2)["path"] == doc["path"]
    (jobs / "train_model.py").write_text("print('v2')\n")
    _, out3, _ = cli("deploy", "jobs", "--to", "/Workspace/Shared/mlopsctl/jobs", "--json")
    assert json.loads(out3)["path"] != doc["path"]


def test_deploy_jobs_creates_the_experiment_folder(project: Path, airflow, dbx_env, cli, monkeypatch) -> None:
    (project / "spark_jobs").mkdir()
    (project / "spark_jobs" / "train_model.py").write_text("print('train')\n")
    code, out, err = cli("deploy", "jobs", "--json")
    assert code == 0, err
    assert json.loads(out)["experiment_folder"] == "/Shared/mlopsctl"  # the Databricks backend's default
    assert dbx_env.workspace_path("/Shared/mlopsctl").is_dir()
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_EXPERIMENT_PREFIX", "/Users/tester@example.com/mlops")
    code, out, err = cli("deploy", "jobs", "--json")
    assert code == 0, err
    assert dbx_env.workspace_path("/Users/tester@example.com/mlops").is_dir()
    code, _, err = cli("deploy", "jobs", "--experiment-folder", "/mlopsctl")  # refused before any upload
    assert code == ExitCode.CONFIG and "/Shared/ or /Users/" in err
    assert not dbx_env.workspace_path("/mlopsctl").exists()


def test_deploy_jobs_bad_target(project, dbx_env, cli) -> None:
    code, _, err = cli("deploy", "jobs", "--to", "dbfs:/jobs")
    assert code == ExitCode.CONFIG and "/Volumes" in err


def test_deploy_dags_copies_and_summarises(project: Path, cli) -> None:
    write_files(
        project,
        {
            "dags/build_model.py": "# dag\n",
            "dags/common/compute.py": "# compute\n",
            "dags/__pycache__/x.pyc": b"\0",
            "spark_jobs/train_model.py": "# job\n",
        },
    )
    target = project / "mnt" / "dags"
    code, out, err = cli("deploy", "dags", "--to", str(target), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert sorted(doc["dags"]["added"]) == ["build_model.py", "common/compute.py"]
    assert doc["spark_jobs"]["added"] == ["train_model.py"]
    assert (target / "common" / "compute.py").read_text() == "# compute\n"
    assert (project / "mnt" / "spark_jobs" / "train_model.py").is_file()
    assert not (target / "__pycache__").exists()
    (project / "dags" / "build_model.py").write_text("# dag v2\n")
    code, out, err = cli("deploy", "dags", "--to", str(target))
    assert code == 0
    # the summary names the target's path: a long temp path wraps it at the terminal's width
    assert "1 updated, 1 unchanged" in " ".join(err.split()) and "updated  build_model.py" in out
