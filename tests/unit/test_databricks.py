"""mlopsctl.databricks: unified auth, credential check, the Airflow connection shape, job upload."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from mlopsctl import databricks as dbx
from mlopsctl.errors import AuthError, ConfigError, ExitCode, NotFoundError, UnreachableError
from tests.fixtures.databricks_server import databricks_server  # noqa: F401 - fixture
from tests.fixtures.stack import free_port


def _cfg(**kw):
    base = {"host": "https://adb-1.azuredatabricks.net", "auth_type": "pat", "token": "dapiSECRET",
            "client_id": None, "client_secret": None}
    base.update(kw)
    return SimpleNamespace(**base)


def test_pat_connection_has_token_as_password_and_empty_login() -> None:
    payload = dbx.connection_payload(_cfg(), "databricks_default")
    assert payload["conn_type"] == "databricks"
    assert payload["host"] == "https://adb-1.azuredatabricks.net"
    assert payload["password"] == "dapiSECRET"
    assert payload["login"] == ""  # the provider sends the password as a bearer token only when login is empty
    assert json.loads(payload["extra"]) == {}
    assert payload["port"] is None and payload["schema"] == ""


def test_oauth_m2m_connection_uses_service_principal_fields() -> None:
    cfg = _cfg(auth_type="oauth-m2m", token=None, client_id="sp-id", client_secret="sp-secret")
    payload = dbx.connection_payload(cfg, "dbx")
    assert (payload["login"], payload["password"]) == ("sp-id", "sp-secret")
    assert isinstance(payload["extra"], str)  # Airflow's REST API wants a JSON *string*
    assert json.loads(payload["extra"]) == {"service_principal_oauth": True}


def test_plain_http_host_needs_insecure_and_then_carries_schema_and_port() -> None:
    cfg = _cfg(host="http://127.0.0.1:48123")
    with pytest.raises(ConfigError, match="plain HTTP") as exc:
        dbx.connection_payload(cfg, "c")
    assert "--insecure" in exc.value.hint
    payload = dbx.connection_payload(cfg, "c", insecure=True)
    assert (payload["host"], payload["schema"], payload["port"]) == ("127.0.0.1", "http", 48123)


def test_https_host_with_custom_port_keeps_the_port() -> None:
    payload = dbx.connection_payload(_cfg(host="https://dbx.internal:8443"), "c")
    assert payload["port"] == 8443


@pytest.mark.parametrize("auth_type", ["databricks-cli", "azure-cli", "external-browser"])
def test_auth_types_airflow_cannot_use_are_refused(auth_type: str) -> None:
    with pytest.raises(ConfigError, match=auth_type) as exc:
        dbx.connection_payload(_cfg(auth_type=auth_type, token=None), "c")
    assert "service principal" in exc.value.hint


def test_masked_hides_the_secret_and_drops_empty_fields() -> None:
    shown = dbx.masked(dbx.connection_payload(_cfg(), "c"))
    assert shown["password"] == dbx.MASK
    assert "dapiSECRET" not in json.dumps(shown)
    assert "login" not in shown and "extra" not in shown


# --- Azure: a service principal of Entra ID, or the Airflow workers' managed identity ---------------------
def _azure_sp(**kw):
    base = {"auth_type": "azure-client-secret", "token": None, "azure_client_id": "arm-client-id",
            "azure_client_secret": "armSECRET", "azure_tenant_id": "tenant-1", "azure_workspace_resource_id": None,
            "arm_environment": SimpleNamespace(name="PUBLIC")}
    return _cfg(**{**base, **kw})


def _azure_msi(**kw):
    base = {"auth_type": dbx.AZURE_MSI, "token": None, "azure_client_id": None, "azure_workspace_resource_id": None}
    return _cfg(**{**base, **kw})


def test_azure_service_principal_connection_is_what_the_provider_reads() -> None:
    payload = dbx.connection_payload(_azure_sp(), "dbx")
    # DatabricksBaseHook: login = client id, password = client secret, extra azure_tenant_id -> ClientSecretCredential
    assert (payload["login"], payload["password"]) == ("arm-client-id", "armSECRET")
    assert json.loads(payload["extra"]) == {"azure_tenant_id": "tenant-1"}
    rid = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Databricks/workspaces/w"
    payload = dbx.connection_payload(_azure_sp(azure_workspace_resource_id=rid), "dbx")
    assert json.loads(payload["extra"]) == {"azure_tenant_id": "tenant-1", "azure_resource_id": rid}
    assert dbx.needs_azure_identity(payload)


def test_masked_hides_the_azure_client_secret() -> None:
    shown = dbx.masked(dbx.connection_payload(_azure_sp(), "dbx"))
    assert shown["password"] == dbx.MASK and shown["login"] == "arm-client-id"
    assert "armSECRET" not in json.dumps(shown)


def test_azure_service_principal_without_a_tenant_is_refused() -> None:
    with pytest.raises(ConfigError, match="no tenant id") as exc:
        dbx.connection_payload(_azure_sp(azure_tenant_id=None), "dbx")
    assert "ARM_TENANT_ID" in exc.value.hint


@pytest.mark.parametrize("cloud", ["USGOVERNMENT", "CHINA"])
def test_azure_service_principal_of_another_cloud_is_refused(cloud: str) -> None:
    with pytest.raises(ConfigError, match=f"Azure {cloud} cloud") as exc:
        dbx.connection_payload(_azure_sp(arm_environment=SimpleNamespace(name=cloud)), "dbx")
    assert "armSECRET" not in exc.value.message + exc.value.hint
    assert "OAuth M2M" in exc.value.hint


def test_managed_identity_connection_has_no_secret_and_clears_an_earlier_one() -> None:
    payload = dbx.connection_payload(_azure_msi(), "dbx")
    # login and password empty ("" so that a PATCH over a token connection drops the token), MI in the extra
    assert (payload["login"], payload["password"]) == ("", "")
    assert json.loads(payload["extra"]) == {"use_azure_managed_identity": True}
    assert dbx.needs_azure_identity(payload)
    user_assigned = dbx.connection_payload(_azure_msi(azure_client_id="mi-client-id"), "dbx")
    assert json.loads(user_assigned["extra"]) == {"use_azure_managed_identity": True,
                                                  "azure_managed_identity_client_id": "mi-client-id"}
    assert "password" not in dbx.masked(payload)


def test_token_connections_need_no_azure_identity() -> None:
    assert not dbx.needs_azure_identity(dbx.connection_payload(_cfg(), "c"))


def test_managed_identity_config_reads_the_workspace_without_signing_in(monkeypatch, databricks_server) -> None:  # noqa: F811
    monkeypatch.setenv("DATABRICKS_HOST", databricks_server.url)
    monkeypatch.setenv("ARM_CLIENT_ID", "mi-client-id")
    monkeypatch.setenv("DATABRICKS_TOKEN", "dapiIGNORED")  # another auth configured too: the flag decides
    config = dbx.managed_identity_config()
    assert config.host == databricks_server.url and config.auth_type == dbx.AZURE_MSI
    payload = dbx.connection_payload(config, "c", insecure=True)
    assert json.loads(payload["extra"])["azure_managed_identity_client_id"] == "mi-client-id"
    assert payload["password"] == "" and "dapiIGNORED" not in json.dumps(payload)


def test_managed_identity_needs_a_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARM_USE_MSI", "true")
    with pytest.raises(ConfigError, match="host") as exc:
        dbx.managed_identity_config()
    assert "DATABRICKS_HOST" in exc.value.hint


def test_no_credentials_lists_what_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as exc:
        dbx.workspace_client()
    assert exc.value.exit_code == ExitCode.CONFIG
    for name in ("DATABRICKS_TOKEN", "DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET", ".databrickscfg"):
        assert name in exc.value.hint


def test_host_without_token_is_incomplete(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABRICKS_HOST", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ConfigError, match="missing or incomplete"):
        dbx.workspace_client(retry_timeout=2)


def test_unknown_profile_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = tmp_path / "databrickscfg"
    cfg.write_text("[other]\nhost = https://a.cloud.databricks.com\ntoken = x\n")
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(cfg))
    with pytest.raises(ConfigError):
        dbx.workspace_client("nope")


def test_profile_credentials_verify_against_the_server(monkeypatch, tmp_path, databricks_server) -> None:  # noqa: F811
    cfg = tmp_path / "databrickscfg"
    cfg.write_text(f"[test]\nhost = {databricks_server.url}\ntoken = {databricks_server.token}\n")
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(cfg))
    ident = dbx.whoami(dbx.workspace_client("test"))
    assert ident.user_name == databricks_server.user
    assert ident.auth_type == "pat"
    assert ident.host == databricks_server.url


def test_wrong_token_is_an_auth_error_without_the_token(monkeypatch, databricks_server) -> None:  # noqa: F811
    monkeypatch.setenv("DATABRICKS_HOST", databricks_server.url)
    monkeypatch.setenv("DATABRICKS_TOKEN", "dapiWRONGTOKEN123")
    with pytest.raises(AuthError) as exc:
        dbx.whoami(dbx.workspace_client())
    assert "Invalid access token" in exc.value.message
    assert "dapiWRONGTOKEN123" not in exc.value.message + (exc.value.hint or "")


def test_unreachable_host_is_unreachable_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABRICKS_HOST", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("DATABRICKS_TOKEN", "dapiX")
    with pytest.raises(UnreachableError):
        dbx.whoami(dbx.workspace_client(retry_timeout=2))


@pytest.mark.parametrize("target", ["/Shared/x", "/Volumes/main/only", "dbfs:/x", "/Workspace"])
def test_upload_targets_are_validated(target: str) -> None:
    with pytest.raises(ConfigError):
        dbx.validate_target(target)


def test_content_version_changes_with_content_only(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "w.whl").write_bytes(b"PK1")
    files = {"a.py": tmp_path / "a.py", "w.whl": tmp_path / "w.whl"}
    v1 = dbx.content_version(files, prefix="v1")
    assert v1 == dbx.content_version(dict(reversed(files.items())), prefix="v1")  # order does not matter
    (tmp_path / "w.whl").write_bytes(b"PK2")  # the wheel counts like any file
    assert dbx.content_version(files, prefix="v1") != v1
    assert dbx.content_version({"b.py": tmp_path / "a.py", "w.whl": tmp_path / "w.whl"}, prefix="v1") != \
        dbx.content_version(files, prefix="v1")  # names count too
    assert v1.startswith("v1-") and len(v1) == len("v1-") + 12


def test_deploy_files_are_the_scripts_and_the_wheel_never_its_modules(tmp_path: Path) -> None:
    src = tmp_path / "spark_jobs"
    (src / "sub").mkdir(parents=True)
    (src / "__pycache__").mkdir()
    (src / "mlopsctl_jobs").mkdir()
    packaged = frozenset({"mlopsctl_jobs/__init__.py", "mlopsctl_jobs/data.py"})
    for name in ("train.py", *packaged, "sub/util.py", "__pycache__/junk.py"):
        (src / name).write_text("x = 1\n")
    wheel = tmp_path / "mlopsctl_jobs-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK")
    files = dbx.deploy_files(src, wheel, packaged)
    assert files == {"sub/util.py": src / "sub/util.py", "train.py": src / "train.py", wheel.name: wheel}
    (src / "train.py").unlink()
    (src / "sub" / "util.py").unlink()
    with pytest.raises(NotFoundError, match="No job scripts"):
        dbx.deploy_files(src, wheel, packaged)


def test_job_files_need_python_files(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        dbx.job_files(tmp_path / "missing")
    with pytest.raises(NotFoundError):
        dbx.job_files(tmp_path)


@pytest.mark.parametrize("root", ["/Workspace/Shared/mlopsctl/jobs", "/Volumes/main/mlops/jobs"])
def test_upload_jobs_to_workspace_and_volume(monkeypatch, tmp_path, databricks_server, root) -> None:  # noqa: F811
    src = tmp_path / "spark_jobs"
    (src / "common").mkdir(parents=True)
    (src / "train.py").write_text("print('train')\n")
    (src / "common" / "util.py").write_text("X = 1\n")
    monkeypatch.setenv("DATABRICKS_HOST", databricks_server.url)
    monkeypatch.setenv("DATABRICKS_TOKEN", databricks_server.token)
    wheel = tmp_path / "mlopsctl_jobs-0.1.0-py3-none-any.whl"
    wheel.write_bytes(bytes(range(256)) * 4)  # binary content survives the upload
    files = {"train.py": src / "train.py", "common/util.py": src / "common" / "util.py", wheel.name: wheel}
    dest, uploaded = dbx.upload_jobs(dbx.workspace_client(), files, root + "/", "v7")
    assert dest == f"{root}/v7"
    assert uploaded == [f"{root}/v7/common/util.py", f"{root}/v7/{wheel.name}", f"{root}/v7/train.py"]
    assert databricks_server.workspace_path(f"{dest}/train.py").read_text() == "print('train')\n"
    assert databricks_server.workspace_path(f"{dest}/common/util.py").read_text() == "X = 1\n"
    assert databricks_server.workspace_path(f"{dest}/{wheel.name}").read_bytes() == wheel.read_bytes()
    # Re-deploying the same version overwrites in place.
    (src / "train.py").write_text("print('v2')\n")
    dbx.upload_jobs(dbx.workspace_client(), files, root, "v7")
    assert databricks_server.workspace_path(f"{dest}/train.py").read_text() == "print('v2')\n"


@pytest.mark.parametrize(("root", "endpoint"), [("/Workspace/Shared/j", "/api/2.0/workspace/import"),
                                              ("/Volumes/c/s/v/j", "/api/2.0/fs/files/")])
def test_upload_survives_a_429_burst(monkeypatch, tmp_path, databricks_server, root, endpoint) -> None:  # noqa: F811
    """databricks-sdk does not retry its multipart workspace.upload: mlopsctl does."""
    src = tmp_path / "jobs"
    src.mkdir()
    (src / "a.py").write_text("1\n")
    monkeypatch.setenv("DATABRICKS_HOST", databricks_server.url)
    monkeypatch.setenv("DATABRICKS_TOKEN", databricks_server.token)
    client = dbx.workspace_client()
    databricks_server.inject(429, times=3, path_prefix=endpoint)
    dbx.upload_jobs(client, {"a.py": src / "a.py"}, root, "v1")
    assert databricks_server.workspace_path(f"{root}/v1/a.py").read_text() == "1\n"
    assert databricks_server.pending_faults() == 0


@pytest.mark.parametrize("folder", ["/mlopsctl", "/Shared", "/Users/", "/Repos/me/x", "Shared/x", "/Shared/../x"])
def test_experiment_folder_must_be_under_shared_or_users(folder: str) -> None:
    with pytest.raises(ConfigError, match="/Shared/ or /Users/") as exc:
        dbx.validate_experiment_folder(folder)
    assert "MLOPSCTL_DATABRICKS_EXPERIMENT_PREFIX" in exc.value.hint

