""".env.example documents every setting mlopsctl reads, and nothing else; safe values, no secret."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mlopsctl.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / ".env.example"
ASSIGN = re.compile(r"^#?\s*(MLOPSCTL_[A-Z0-9_]+)=(.*)$")
# an env read in code: os.environ.get("X"), os.getenv("X"), os.environ["X"], typer envvar="X"
ENV_READ = re.compile(r"""(?:environ\.get\(|getenv\(|environ\[|envvar=)\s*["'](MLOPSCTL_[A-Z0-9_]+)["']""")
# Env only the DAG tasks read (set in Airflow's environment): documented even where no code here reads it.
DAG_RUNTIME_ONLY = {
    "MLOPSCTL_SPARK_JOBS_DIR",
    "MLOPSCTL_WORK_DIR",
    "MLOPSCTL_REGISTRY_URI",
}
SECRET_FIELDS = {"airflow_password", "airflow_token"}


def entries() -> dict[str, str]:
    found: dict[str, str] = {}
    for line in EXAMPLE.read_text().splitlines():
        m = ASSIGN.match(line.strip())
        if m:
            assert m.group(1) not in found, f"{m.group(1)} appears twice"
            found[m.group(1)] = m.group(2).strip()
    return found


def settings_names() -> set[str]:
    return {f"MLOPSCTL_{name.upper()}" for name in Settings.model_fields}


def names_read_in_code() -> set[str]:
    names: set[str] = set()
    for folder in ("mlopsctl", "dags", "spark_jobs"):
        for path in (REPO / folder).rglob("*.py"):
            names.update(ENV_READ.findall(path.read_text(encoding="utf-8")))
    return names


def test_every_settings_field_is_documented() -> None:
    missing = settings_names() - set(entries())
    assert not missing, f"add to .env.example: {sorted(missing)}"


def test_every_env_var_read_in_code_is_documented() -> None:
    missing = (names_read_in_code() | DAG_RUNTIME_ONLY) - set(entries())
    assert not missing, f"add to .env.example: {sorted(missing)}"


def test_nothing_documented_that_is_not_read() -> None:
    known = settings_names() | names_read_in_code() | DAG_RUNTIME_ONLY
    stale = set(entries()) - known
    assert not stale, f"in .env.example but read nowhere: {sorted(stale)}"


def test_each_entry_has_a_comment_line_above() -> None:
    lines = EXAMPLE.read_text().splitlines()
    for i, line in enumerate(lines):
        if ASSIGN.match(line.strip()):
            above = lines[i - 1].strip()
            assert above.startswith("#") and not ASSIGN.match(above) and len(above) > 3, (
                f"no comment for {line}"
            )


def test_no_secret_values() -> None:
    values = entries()
    for field in SECRET_FIELDS:
        assert values[f"MLOPSCTL_{field.upper()}"] == ""
    text = EXAMPLE.read_text()
    assert not re.search(r"dapi[0-9a-f]{8,}|eyJ[A-Za-z0-9_-]{10,}", text)  # Databricks PAT / JWT shapes
    assert not any(ln.strip() and not ln.startswith("#") for ln in text.splitlines()), (
        "keep every line commented"
    )


def test_placeholders_are_valid_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Uncommenting every entry gives a .env that Settings accept (the named context exists here)."""
    cfg = tmp_path / "cfg"
    monkeypatch.setenv("MLOPSCTL_CONFIG_DIR", str(cfg))
    from mlopsctl import contexts

    values = entries()
    contexts.save(
        contexts.ContextFile(
            contexts={values["MLOPSCTL_CONTEXT"]: contexts.Context(airflow_url="https://airflow.example.com")}
        )
    )
    fields = settings_names()
    body = "".join(f"{k}={v}\n" for k, v in values.items() if k in fields and v != "")
    (tmp_path / ".env").write_text(body)
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert s.airflow_url == values["MLOPSCTL_AIRFLOW_URL"]
    assert s.context == values["MLOPSCTL_CONTEXT"]
    assert s.airflow_port == int(values["MLOPSCTL_AIRFLOW_PORT"])
