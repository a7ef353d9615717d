"""Contexts: the TOML file (no secrets in it), Settings precedence, secret lookup, the `context` commands."""

from __future__ import annotations

import json
import stat
import sys
import types
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from mlopsctl import contexts
from mlopsctl.appcontext import AppContext
from mlopsctl.cli import app
from mlopsctl.errors import ConfigError, ExitCode
from mlopsctl.settings import load_settings

runner = CliRunner()


@pytest.fixture
def cfg_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "config"
    monkeypatch.setenv("MLOPSCTL_CONFIG_DIR", str(d))
    return d


@pytest.fixture
def no_keyring(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "keyring", None)  # `import keyring` -> ImportError


class FakeKeyring(types.ModuleType):
    """Stands in for the optional `keyring` package (an OS service we cannot run here)."""

    def __init__(self) -> None:
        super().__init__("keyring")
        self.store: dict[tuple[str, str], str] = {}
        self.reads: list[tuple[str, str]] = []

    def get_password(self, service: str, user: str) -> str | None:
        self.reads.append((service, user))
        return self.store.get((service, user))

    def set_password(self, service: str, user: str, secret: str) -> None:
        self.store[(service, user)] = secret

    def delete_password(self, service: str, user: str) -> None:
        del self.store[(service, user)]


@pytest.fixture
def fake_keyring(monkeypatch: pytest.MonkeyPatch) -> FakeKeyring:
    kr = FakeKeyring()
    monkeypatch.setitem(sys.modules, "keyring", kr)
    return kr


def add(name: str, **kw: object) -> None:
    cfg = contexts.load()
    cfg.contexts[name] = contexts.Context(**kw)
    contexts.save(cfg)


# --- file ------------------------------------------------------------------------------------------


def test_config_dir_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    assert contexts.contexts_path() == Path.home() / ".config" / "mlopsctl" / "contexts.toml"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert contexts.contexts_path() == tmp_path / "xdg" / "mlopsctl" / "contexts.toml"
    monkeypatch.setenv("MLOPSCTL_CONFIG_DIR", str(tmp_path / "explicit"))
    assert contexts.contexts_path() == tmp_path / "explicit" / "contexts.toml"


def test_save_load_roundtrip_private_file(cfg_dir: Path) -> None:
    assert contexts.load().contexts == {}  # missing file = no contexts
    add(
        "prod",
        airflow_url="https://af.example.com/",
        auth="token",
        token_env="ASTRO_API_TOKEN",
        mlflow_tracking_uri="databricks",
        description='quote " and \\ backslash',
    )
    cfg = contexts.load()
    cfg.current = "prod"
    path = contexts.save(cfg)
    again = contexts.load()
    assert again.current == "prod"
    prod = again.contexts["prod"]
    assert prod.airflow_url == "https://af.example.com"
    assert (prod.auth, prod.token_env, prod.mlflow_tracking_uri) == ("token", "ASTRO_API_TOKEN", "databricks")
    assert prod.description == 'quote " and \\ backslash'
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_a_secret_in_the_file_is_refused(cfg_dir: Path) -> None:
    cfg_dir.mkdir()
    (cfg_dir / "contexts.toml").write_text(
        '[targets.prod]\nairflow_url = "https://x.example"\ntoken = "abc"\n'
    )
    with pytest.raises(ConfigError, match="secrets never go in this file"):
        contexts.load()


def test_bad_toml_is_a_config_error(cfg_dir: Path) -> None:
    cfg_dir.mkdir()
    (cfg_dir / "contexts.toml").write_text("[targets.prod\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        contexts.load()


@pytest.mark.parametrize("url", ["ftp://x.example", "x.example", "https://user:pw@x.example"])
def test_bad_airflow_url_rejected(url: str) -> None:
    with pytest.raises(ValueError):
        contexts.Context(airflow_url=url)


def test_insecure_transport_flag() -> None:
    assert contexts.Context(airflow_url="http://10.1.2.3:8080").insecure_transport
    assert not contexts.Context(airflow_url="http://127.0.0.1:8080").insecure_transport
    assert not contexts.Context(airflow_url="https://af.example.com").insecure_transport
    assert not contexts.Context(airflow_url="http://10.1.2.3:8080", auth="none").insecure_transport


# --- settings precedence -----------------------------------------------------------------------------


def test_context_supplies_settings(
    cfg_dir: Path, project: Path, monkeypatch: pytest.MonkeyPatch, no_keyring: None
) -> None:
    add(
        "prod",
        airflow_url="https://af.example.com",
        auth="token",
        token_env="ASTRO_API_TOKEN",
        mlflow_tracking_uri="https://mlflow.example.com",
        verify_tls=True,
        ca_bundle="/etc/ssl/corp.pem",
    )
    monkeypatch.setenv("ASTRO_API_TOKEN", "tok-123")
    s = load_settings(context="prod")
    assert s.context == "prod"
    assert (s.airflow_url, s.airflow_auth) == ("https://af.example.com", "token")
    assert s.airflow_token is not None and s.airflow_token.get_secret_value() == "tok-123"
    assert s.mlflow_tracking_uri == "https://mlflow.example.com"
    assert s.ca_bundle == Path("/etc/ssl/corp.pem")
    assert "tok-123" not in repr(s)


def test_precedence_flag_env_dotenv_context(
    cfg_dir: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add(
        "prod",
        airflow_url="https://ctx.example",
        auth="none",
        username="ctx-user",
        mlflow_tracking_uri="https://ctx-mlflow.example",
    )
    (project / ".env").write_text(
        "MLOPSCTL_CONTEXT=prod\nMLOPSCTL_AIRFLOW_USERNAME=dotenv-user\n"
        "MLOPSCTL_MLFLOW_TRACKING_URI=https://dotenv-mlflow.example\n"
    )
    monkeypatch.setenv("MLOPSCTL_MLFLOW_TRACKING_URI", "https://env-mlflow.example")
    s = load_settings(airflow_url="https://flag.example")
    assert s.context == "prod"  # selected through .env
    assert s.airflow_url == "https://flag.example"  # flag > context
    assert s.mlflow_tracking_uri == "https://env-mlflow.example"  # env > .env > context
    assert s.airflow_username == "dotenv-user"  # .env > context
    assert s.airflow_auth == "none"  # only the context sets it


def test_current_context_applies_and_explicit_choice_wins(
    cfg_dir: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add("a", airflow_url="https://a.example", auth="none")
    add("b", airflow_url="https://b.example", auth="none")
    cfg = contexts.load()
    cfg.current = "a"
    contexts.save(cfg)
    assert load_settings().airflow_url == "https://a.example"
    monkeypatch.setenv("MLOPSCTL_CONTEXT", "b")
    assert load_settings().airflow_url == "https://b.example"
    assert load_settings(context="a").airflow_url == "https://a.example"  # flag > env
    monkeypatch.setenv("MLOPSCTL_CONTEXT", "")  # explicit empty: ignore `current`
    assert load_settings().airflow_url == "http://127.0.0.1:8080"


def test_no_context_file_changes_nothing(cfg_dir: Path, project: Path) -> None:
    s = load_settings()
    assert s.context is None and s.airflow_url == "http://127.0.0.1:8080"
    assert not cfg_dir.exists()  # reading settings never creates the config dir


def test_unknown_context_lists_known_ones(cfg_dir: Path, project: Path) -> None:
    add("prod", airflow_url="https://p.example")
    add("staging", airflow_url="https://s.example")
    with pytest.raises(ConfigError) as exc:
        load_settings(context="nope")
    assert "nope" in exc.value.message and "prod, staging" in exc.value.message


def test_unknown_context_cli_exit_code(
    cfg_dir: Path, project: Path, cli
) -> None:
    add("prod", airflow_url="https://p.example")
    code, _out, err = cli("--context", "nope", "context", "show")
    assert code == ExitCode.CONFIG
    assert "Unknown context 'nope' (known: prod)" in err
    assert "Traceback" not in err


def test_token_from_keyring_when_env_var_unset(
    cfg_dir: Path, project: Path, fake_keyring: FakeKeyring
) -> None:
    add("astro", airflow_url="https://astro.example", auth="token", token_env="ASTRO_API_TOKEN")
    fake_keyring.store[("mlopsctl", "astro:token")] = "from-keyring"
    s = load_settings(context="astro")
    assert s.airflow_token is not None and s.airflow_token.get_secret_value() == "from-keyring"


def test_token_env_beats_keyring_and_explicit_token_beats_both(
    cfg_dir: Path, project: Path, fake_keyring: FakeKeyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    add("astro", airflow_url="https://astro.example", auth="token", token_env="ASTRO_API_TOKEN")
    fake_keyring.store[("mlopsctl", "astro:token")] = "from-keyring"
    monkeypatch.setenv("ASTRO_API_TOKEN", "from-env-var")
    assert load_settings(context="astro").airflow_token.get_secret_value() == "from-env-var"
    monkeypatch.setenv("MLOPSCTL_AIRFLOW_TOKEN", "explicit")
    assert load_settings(context="astro").airflow_token.get_secret_value() == "explicit"


def test_password_from_keyring_only_when_not_in_env(
    cfg_dir: Path, project: Path, fake_keyring: FakeKeyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    add("prod", airflow_url="https://p.example", auth="password", username="ops")
    fake_keyring.store[("mlopsctl", "prod:password:ops")] = "kr-pw"
    s = load_settings(context="prod")
    assert s.airflow_username == "ops" and s.airflow_password.get_secret_value() == "kr-pw"
    fake_keyring.reads.clear()
    monkeypatch.setenv("MLOPSCTL_AIRFLOW_PASSWORD", "env-pw")
    assert load_settings(context="prod").airflow_password.get_secret_value() == "env-pw"
    assert fake_keyring.reads == []  # the keyring is not even asked


def test_missing_token_reaches_the_client_as_config_error(
    cfg_dir: Path, project: Path, no_keyring: None
) -> None:
    add("astro", airflow_url="https://astro.example", auth="token", token_env="ASTRO_API_TOKEN")
    ctx = AppContext(overrides={"context": "astro"})
    assert ctx.settings.airflow_token is None  # settings still load (e.g. for `check`)
    with pytest.raises(ConfigError):
        _ = ctx.airflow


# --- the client built from a context (auth header on the wire; MockTransport) ------------------------


def _client_from(settings, seen: list[httpx.Request]):
    from mlopsctl.airflow.client import AirflowClient

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/auth/token":
            return httpx.Response(201, json={"access_token": "jwt-from-login"})
        return httpx.Response(200, json={"dags": [], "total_entries": 0})

    return AirflowClient(
        settings.airflow_url,
        auth=settings.airflow_auth,
        username=settings.airflow_username,
        password=settings.airflow_password.get_secret_value() if settings.airflow_password else None,
        token=settings.airflow_token.get_secret_value() if settings.airflow_token else None,
        verify=str(settings.ca_bundle) if settings.ca_bundle else settings.verify_tls,
        transport=httpx.MockTransport(handler),
    )


def test_none_auth_context_sends_no_credentials(cfg_dir: Path, project: Path) -> None:
    add("open", airflow_url="https://open.example", auth="none")
    seen: list[httpx.Request] = []
    with _client_from(load_settings(context="open"), seen) as client:
        assert client.list_dags() == []
    assert seen and all("authorization" not in r.headers for r in seen)
    assert all(r.url.path != "/auth/token" for r in seen)
    assert seen[0].url.host == "open.example"


def test_token_context_sends_bearer_token(
    cfg_dir: Path, project: Path, monkeypatch: pytest.MonkeyPatch, no_keyring: None
) -> None:
    add("astro", airflow_url="https://astro.example", auth="token", token_env="ASTRO_API_TOKEN")
    monkeypatch.setenv("ASTRO_API_TOKEN", "static-tok")
    seen: list[httpx.Request] = []
    with _client_from(load_settings(context="astro"), seen) as client:
        client.list_dags()
    assert [r.headers.get("authorization") for r in seen] == ["Bearer static-tok"]


# --- commands ------------------------------------------------------------------------------------------


def test_cli_add_list_use_show_remove(
    cli, cfg_dir: Path, project: Path, monkeypatch: pytest.MonkeyPatch, no_keyring: None
) -> None:
    r = cli(
        "context",
        "add",
        "astro",
        "--airflow-url",
        "https://astro.example/d1",
        "--auth",
        "token",
        "--token-env",
        "ASTRO_API_TOKEN",
        "--mlflow-uri",
        "databricks",
        "--use",
    )
    assert r.exit_code == 0, r.output
    r = cli("context", "add", "local", "--airflow-url", "http://127.0.0.1:8080", "--auth", "password")
    assert r.exit_code == 0, r.output

    r = cli("context", "list", "--json")
    data = json.loads(r.stdout)
    assert data["current"] == "astro"
    assert [(c["name"], c["current"], c["auth"]) for c in data["contexts"]] == [
        ("astro", True, "token"),
        ("local", False, "password"),
    ]

    r = cli("context", "list")
    assert r.exit_code == 0 and "https://astro.example/d1" in r.stdout

    monkeypatch.setenv("ASTRO_API_TOKEN", "super-secret-token-value")
    r = cli("context", "show", "--json")
    shown = json.loads(r.stdout)
    assert (
        shown["name"] == "astro" and shown["token"] == "****" and shown["token_source"] == "$ASTRO_API_TOKEN"
    )
    r = cli("context", "show")
    assert "super-secret-token-value" not in r.output and "****" in r.stdout
    assert "super-secret-token-value" not in contexts.contexts_path().read_text()

    r = cli("context", "use", "local")
    assert r.exit_code == 0 and contexts.load().current == "local"
    r = cli("context", "remove", "local")
    assert r.exit_code == 0
    cfg = contexts.load()
    assert cfg.current is None and list(cfg.contexts) == ["astro"]


def test_cli_show_reports_missing_token(cli, cfg_dir: Path, project: Path, no_keyring: None) -> None:
    add("astro", airflow_url="https://astro.example", auth="token", token_env="ASTRO_API_TOKEN")
    r = cli("context", "show", "astro", "--json")
    assert json.loads(r.stdout)["token"] is None
    r = cli("context", "show", "astro")
    assert "export ASTRO_API_TOKEN=" in r.stderr


def test_cli_add_refuses_duplicates_unless_forced(cli, cfg_dir: Path, project: Path) -> None:
    assert (
        cli("context", "add", "p", "--airflow-url", "https://a.example", "--auth", "none").exit_code == 0
    )
    r = cli("context", "add", "p", "--airflow-url", "https://b.example", "--auth", "none")
    assert r.exit_code == ExitCode.CONFIG
    assert contexts.load().contexts["p"].airflow_url == "https://a.example"
    r = cli("context", "add", "p", "--airflow-url", "https://b.example", "--auth", "none", "--force")
    assert r.exit_code == 0 and contexts.load().contexts["p"].airflow_url == "https://b.example"


@pytest.mark.parametrize(
    "args",
    [
        ["bad name!", "--airflow-url", "https://a.example"],
        ["p", "--airflow-url", "not-a-url"],
        ["p", "--airflow-url", "https://a.example", "--auth", "kerberos"],
        ["p", "--airflow-url", "https://a.example", "--auth", "token"],  # no --token-env, no keyring
        ["p", "--airflow-url", "https://a.example", "--token-env", "NOT A VAR", "--auth", "token"],
        ["p", "--airflow-url", "https://a.example", "--mlflow-uri", "ftp://m"],
        ["p", "--airflow-url", "https://a.example", "--ca-bundle", "/no/such/ca.pem"],
    ],
)
def test_cli_add_rejects_bad_input(
    cfg_dir: Path, project: Path, no_keyring: None, cli, args: list[str]
) -> None:
    code, _out, err = cli("context", "add", *args)
    assert code == ExitCode.USAGE  # each is a bad argument or flag of `context add`
    assert "Error:" in err and "Traceback" not in err
    assert contexts.load().contexts == {}


def test_cli_add_warns_on_plain_http_to_remote_host(cli, cfg_dir: Path, project: Path) -> None:
    r = cli("context", "add", "lan", "--airflow-url", "http://10.0.0.5:8080", "--username", "bob")
    assert r.exit_code == 0
    assert "plain HTTP" in r.stderr


def test_cli_insecure_and_ca_bundle(cli, cfg_dir: Path, project: Path, tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    assert (
        cli(
            "context", "add", "corp", "--airflow-url", "https://corp.example", "--ca-bundle", str(ca)
        ).exit_code
        == 0
    )
    r = cli("context", "add", "lab", "--airflow-url", "https://lab.example", "--insecure")
    assert r.exit_code == 0 and "verification is off" in r.stderr
    s = load_settings(context="corp")
    assert s.verify_tls is True and s.ca_bundle == ca.resolve()
    assert load_settings(context="lab").verify_tls is False


def test_cli_use_unknown_and_unset(cli, cfg_dir: Path, project: Path) -> None:
    add("a", airflow_url="https://a.example")
    r = cli("context", "use", "zzz")
    assert r.exit_code == ExitCode.CONFIG
    assert cli("context", "use", "a").exit_code == 0
    assert cli("context", "use", "--unset").exit_code == 0
    assert contexts.load().current is None
    assert cli("context", "use").exit_code == ExitCode.USAGE


def test_cli_set_secret_into_keyring(cli, cfg_dir: Path, project: Path, fake_keyring: FakeKeyring) -> None:
    add("astro", airflow_url="https://astro.example", auth="token", token_env="ASTRO_API_TOKEN")
    r = runner.invoke(app, ["context", "set-secret", "astro"], input="kr-token\n")
    assert r.exit_code == 0, r.output
    assert fake_keyring.store[("mlopsctl", "astro:token")] == "kr-token"
    assert "kr-token" not in contexts.contexts_path().read_text()
    assert load_settings(context="astro").airflow_token.get_secret_value() == "kr-token"
    assert cli("context", "remove", "astro").exit_code == 0
    assert fake_keyring.store == {}  # removing the context removes its stored secret


def test_cli_set_secret_without_keyring(cli, cfg_dir: Path, project: Path, no_keyring: None) -> None:
    add("astro", airflow_url="https://astro.example", auth="token", token_env="ASTRO_API_TOKEN")
    r = cli("context", "set-secret", "astro")
    assert r.exit_code == ExitCode.CONFIG


def test_cli_show_follows_the_context_named_in_dotenv(cli, cfg_dir: Path, project: Path, no_keyring: None) -> None:
    add("astro", airflow_url="https://astro.example", auth="token", token_env="ASTRO_API_TOKEN")
    add("local", airflow_url="http://127.0.0.1:8080")
    cfg = contexts.load()
    cfg.current = "astro"
    contexts.save(cfg)
    (project / ".env").write_text("MLOPSCTL_CONTEXT=local\n")
    r = cli("context", "show", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["name"] == "local"
