"""Settings: precedence flag > env > .env > default, secrets stay secret, bad values -> ConfigError."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from mlopsctl.appcontext import AppContext
from mlopsctl.errors import ConfigError, ExitCode
from mlopsctl.settings import Settings, load_settings


def write_dotenv(directory: Path, **values: str) -> None:
    (directory / ".env").write_text("".join(f"MLOPSCTL_{k.upper()}={v}\n" for k, v in values.items()))


def test_defaults(project: Path) -> None:
    s = load_settings()
    assert s.airflow_url == "http://127.0.0.1:8080"
    assert s.mlflow_tracking_uri == "http://127.0.0.1:5000"
    assert s.airflow_auth == "password" and s.airflow_username == "admin"
    assert s.airflow_password is None and s.airflow_token is None
    assert (s.airflow_port, s.mlflow_port) == (8080, 5000)
    assert s.project_dir == project.resolve()
    assert s.state == project.resolve() / ".mlopsctl"


def test_moving_the_local_stack_moves_the_default_targets(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPSCTL_AIRFLOW_PORT", "18480")
    write_dotenv(project, mlflow_port="18481")
    s = load_settings()
    assert (s.airflow_url, s.mlflow_tracking_uri) == ("http://127.0.0.1:18480", "http://127.0.0.1:18481")
    # an explicit target still wins over the local ports
    monkeypatch.setenv("MLOPSCTL_AIRFLOW_URL", "https://airflow.example.com")
    s = load_settings(mlflow_tracking_uri="databricks")
    assert (s.airflow_url, s.mlflow_tracking_uri) == ("https://airflow.example.com", "databricks")
    assert (s.local_airflow_url, s.local_mlflow_url) == ("http://127.0.0.1:18480", "http://127.0.0.1:18481")


def test_spark_remote_follows_the_local_connect_port_unless_set(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = load_settings()
    assert (s.spark_connect_port, s.spark_remote, s.spark_master) == (15002, "sc://127.0.0.1:15002", "local[*]")
    assert s.spark_remote_is_local
    monkeypatch.setenv("MLOPSCTL_SPARK_CONNECT_PORT", "18482")
    s = load_settings()
    assert s.spark_remote == s.local_spark_remote == "sc://127.0.0.1:18482" and s.spark_remote_is_local
    # an explicit server elsewhere: the tasks use it, the local port stays the local server's
    monkeypatch.setenv("MLOPSCTL_SPARK_REMOTE", "sc://spark.example.com:15002/;use_ssl=true")
    s = load_settings()
    assert s.spark_remote == "sc://spark.example.com:15002/;use_ssl=true" and not s.spark_remote_is_local
    assert s.local_spark_remote == "sc://127.0.0.1:18482"
    # the same local server spelled differently is still the local one
    assert load_settings(spark_remote="sc://localhost:18482").spark_remote_is_local


def test_a_token_in_the_spark_remote_is_refused_without_echoing_it(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPSCTL_SPARK_REMOTE", "sc://spark.example.com:443/;token=s3cr3t-t0ken")
    with pytest.raises(ConfigError) as info:
        AppContext().settings  # noqa: B018
    text = f"{info.value.message} {info.value.hint}"
    assert "SPARK_CONNECT_AUTHENTICATE_TOKEN" in text and "s3cr3t-t0ken" not in text


def test_dotenv_beats_default(project: Path) -> None:
    write_dotenv(project, airflow_url="http://dotenv.example:8080", airflow_port="18080")
    s = load_settings()
    assert s.airflow_url == "http://dotenv.example:8080"
    assert s.airflow_port == 18080


def test_env_beats_dotenv(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_dotenv(project, airflow_url="http://dotenv.example:8080", request_timeout="5")
    monkeypatch.setenv("MLOPSCTL_AIRFLOW_URL", "http://env.example:8080")
    s = load_settings()
    assert s.airflow_url == "http://env.example:8080"
    assert s.request_timeout == 5.0  # untouched .env values still apply


def test_flag_beats_env_and_dotenv(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_dotenv(project, airflow_url="http://dotenv.example:8080")
    monkeypatch.setenv("MLOPSCTL_AIRFLOW_URL", "http://env.example:8080")
    assert load_settings(airflow_url="http://flag.example:8080/").airflow_url == "http://flag.example:8080"
    # An unset flag (None) does not mask env
    assert load_settings(airflow_url=None).airflow_url == "http://env.example:8080"


def test_flag_precedence_through_app_context(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPSCTL_MLFLOW_TRACKING_URI", "http://env-mlflow.example:5000")
    ctx = AppContext(overrides={"mlflow_tracking_uri": "databricks", "airflow_url": None})
    assert ctx.settings.mlflow_tracking_uri == "databricks"
    assert ctx.settings.airflow_url == "http://127.0.0.1:8080"


def test_state_dir_follows_project_dir_unless_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings(project_dir=tmp_path / "proj")
    assert s.state == (tmp_path / "proj" / ".mlopsctl").resolve()
    monkeypatch.setenv("MLOPSCTL_STATE_DIR", str(tmp_path / "elsewhere"))
    assert load_settings(project_dir=tmp_path / "proj").state == (tmp_path / "elsewhere").resolve()


def test_secrets_are_secretstr_and_never_shown(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPSCTL_AIRFLOW_PASSWORD", "pw-from-env-123")
    write_dotenv(project, airflow_token="tok-from-dotenv-456")
    s = load_settings()
    assert isinstance(s.airflow_password, SecretStr) and isinstance(s.airflow_token, SecretStr)
    assert s.airflow_password.get_secret_value() == "pw-from-env-123"
    assert s.airflow_token.get_secret_value() == "tok-from-dotenv-456"
    for text in (repr(s), str(s), s.model_dump_json(), str(s.model_dump())):
        assert "pw-from-env-123" not in text and "tok-from-dotenv-456" not in text


@pytest.mark.parametrize(
    ("env", "value", "field"),
    [
        ("MLOPSCTL_AIRFLOW_URL", "ftp://airflow.example", "airflow_url"),
        ("MLOPSCTL_AIRFLOW_URL", "airflow.example:8080", "airflow_url"),
        ("MLOPSCTL_AIRFLOW_URL", "http://airflow.example:99999", "airflow_url"),
        ("MLOPSCTL_AIRFLOW_PORT", "70000", "airflow_port"),
        ("MLOPSCTL_MLFLOW_PORT", "not-a-port", "mlflow_port"),
        ("MLOPSCTL_AIRFLOW_AUTH", "kerberos", "airflow_auth"),
        ("MLOPSCTL_REQUEST_TIMEOUT", "0", "request_timeout"),
        ("MLOPSCTL_MLFLOW_TRACKING_URI", "mlflow.example", "mlflow_tracking_uri"),
        ("MLOPSCTL_SPARK_CONNECT_PORT", "0", "spark_connect_port"),
        ("MLOPSCTL_SPARK_DRIVER_MEMORY", "lots", "spark_driver_memory"),
        ("MLOPSCTL_SPARK_DRIVER_MEMORY", "1.5g", "spark_driver_memory"),
        ("MLOPSCTL_SPARK_REMOTE", "http://127.0.0.1:15002", "spark_remote"),
        ("MLOPSCTL_SPARK_REMOTE", "sc://", "spark_remote"),
        ("MLOPSCTL_SPARK_REMOTE", "sc://127.0.0.1:notaport", "spark_remote"),
        ("MLOPSCTL_SPARK_REMOTE", "sc://spark.example:443/;use_ssl=true;token=abc", "spark_remote"),
    ],
)
def test_bad_values_are_config_errors_naming_the_env_var(
    project: Path, monkeypatch: pytest.MonkeyPatch, env: str, value: str, field: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as info:
        AppContext().settings  # noqa: B018 - the property raises
    assert info.value.exit_code == ExitCode.CONFIG
    assert field in info.value.message and env in info.value.message
    assert info.value.hint


def test_bad_flag_value_is_a_config_error(project: Path) -> None:
    with pytest.raises(ConfigError, match="airflow_url"):
        AppContext(overrides={"airflow_url": "not a url"}).settings  # noqa: B018


def test_bad_secret_value_is_not_echoed(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A bad neighbouring value must not drag the password into the error text.
    monkeypatch.setenv("MLOPSCTL_AIRFLOW_PASSWORD", "pw-should-stay-hidden")
    monkeypatch.setenv("MLOPSCTL_AIRFLOW_PORT", "-1")
    with pytest.raises(ConfigError) as info:
        AppContext().settings  # noqa: B018
    assert "pw-should-stay-hidden" not in f"{info.value.message} {info.value.hint}"


def test_settings_class_reads_prefix_only(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_URL", "http://unprefixed.example:8080")
    assert Settings().airflow_url == "http://127.0.0.1:8080"


def test_experiment_prefix_comes_from_settings_including_dotenv(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert AppContext().tracking().experiment_name("build_model") == "/mlopsctl/build_model"
    (project / ".env").write_text("MLOPSCTL_MLFLOW_EXPERIMENT_PREFIX=/Shared/team/\n")
    assert AppContext().tracking().experiment_name("build_model") == "/Shared/team/build_model"
    monkeypatch.setenv("MLOPSCTL_MLFLOW_EXPERIMENT_PREFIX", "/Users/me@example.com/mlops")
    assert AppContext().tracking().experiment_name("grid_search") == "/Users/me@example.com/mlops/grid_search"


@pytest.mark.parametrize("uri", ["databricks", "databricks://prod"])
def test_with_databricks_tracking_the_experiments_are_where_the_databricks_backend_puts_them(
    project: Path, monkeypatch: pytest.MonkeyPatch, uri: str
) -> None:
    monkeypatch.setenv("MLOPSCTL_MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLOPSCTL_MLFLOW_EXPERIMENT_PREFIX", "/mlopsctl-local")  # the local stack's: not read here
    assert load_settings().experiment_prefix == "/Shared/mlopsctl"  # the backend's default folder
    assert AppContext().tracking().experiment_name("build_model") == "/Shared/mlopsctl/build_model"
    (project / ".env").write_text("MLOPSCTL_DATABRICKS_EXPERIMENT_PREFIX=/Shared/team/\n")
    assert AppContext().tracking().experiment_name("build_model") == "/Shared/team/build_model"
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_EXPERIMENT_PREFIX", "/Users/me@example.com/mlops")
    assert AppContext().tracking().experiment_name("grid_search") == "/Users/me@example.com/mlops/grid_search"


def test_elsewhere_the_databricks_experiment_folder_is_not_read(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPSCTL_DATABRICKS_EXPERIMENT_PREFIX", "/Shared/team")
    assert load_settings().experiment_prefix == "/mlopsctl"
    monkeypatch.setenv("MLOPSCTL_MLFLOW_TRACKING_URI", "https://mlflow.example.com")
    assert AppContext().tracking().experiment_name("build_model") == "/mlopsctl/build_model"
