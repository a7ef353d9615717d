"""`mlopsctl init`: scaffolds a project, never overwrites without --force, is safe to run twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlopsctl import paths
from mlopsctl.errors import ExitCode
from tests.fixtures.files import write_files

GOOD_DAG = """
from datetime import datetime, timezone
from airflow.sdk import dag, task

@dag(schedule=None, start_date=datetime(2024, 1, 1, tzinfo=timezone.utc), catchup=False,
     tags=["demo"], default_args={"retries": 1})
def good_dag():
    @task
    def hello():
        return 1
    hello()

good_dag()
"""


@pytest.fixture
def bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake bundled dags/ + spark_jobs/ + env.example, so the tests do not depend on the real pipelines."""
    root = tmp_path / "bundle"
    write_files(
        root,
        {
            "dags/build_model.py": "# build_model DAG\n",
            "dags/common/__init__.py": "",
            "dags/__pycache__/build_model.cpython-311.pyc": b"\0junk",
            "spark_jobs/train_model.py": "def main():\n    pass\n",
            "env.example": "MLOPSCTL_AIRFLOW_URL=http://127.0.0.1:8080\n",
        },
    )
    monkeypatch.setattr(paths, "bundled_dags_dir", lambda: root / "dags")
    monkeypatch.setattr(paths, "bundled_spark_jobs_dir", lambda: root / "spark_jobs")
    monkeypatch.setattr(paths, "bundled_env_example", lambda: root / "env.example")
    return root


EXPECTED = {
    "dags/build_model.py",
    "dags/common/__init__.py",
    "spark_jobs/train_model.py",
    ".env.example",
    ".gitignore",
    "tests/test_dag_integrity.py",
}


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file()
    }


def test_init_scaffolds_a_new_project(
    bundle: Path, tmp_path: Path, cli
) -> None:
    target = tmp_path / "proj"
    code, out, err = cli("init", str(target))
    assert code == 0, err
    assert files_under(target) == EXPECTED  # no __pycache__ copied
    assert (target / "dags" / "build_model.py").read_text() == "# build_model DAG\n"
    assert (target / ".env.example").read_text() == (bundle / "env.example").read_text()
    ignore = (target / ".gitignore").read_text().splitlines()
    assert ".env" in ignore and ".mlopsctl/" in ignore
    assert "def test_no_import_errors" in (target / "tests" / "test_dag_integrity.py").read_text()
    assert "Created dags/ (2 files)" in out and "Created .gitignore" in out
    assert "Next steps" in out and "mlopsctl dev start" in out


def test_second_run_is_safe_and_changes_nothing(
    bundle: Path, tmp_path: Path, cli
) -> None:
    target = tmp_path / "proj"
    assert cli("init", str(target))[0] == 0
    before = snapshot(target)
    code, out, err = cli("init", str(target))
    assert code == 0, err
    assert "already initialised" in out and "nothing changed" in out
    assert snapshot(target) == before


def test_refuses_to_overwrite_and_writes_nothing(
    bundle: Path, tmp_path: Path, cli
) -> None:
    target = tmp_path / "proj"
    write_files(target, {"dags/build_model.py": "# my own edits\n", ".env.example": "MINE=1\n"})
    code, _out, err = cli("init", str(target))
    assert code == ExitCode.USAGE == 2
    assert "dags/build_model.py" in err and ".env.example" in err and "--force" in err
    assert "Traceback" not in err
    assert files_under(target) == {"dags/build_model.py", ".env.example"}  # nothing else was written
    assert (target / "dags" / "build_model.py").read_text() == "# my own edits\n"


def test_force_overwrites_conflicts_and_keeps_other_files(
    bundle: Path, tmp_path: Path, cli
) -> None:
    target = tmp_path / "proj"
    write_files(target, {"dags/build_model.py": "# my own edits\n", "dags/extra_dag.py": "# not ours\n"})
    code, out, err = cli("init", str(target), "--force", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["overwritten"] == ["dags/build_model.py"]
    assert set(data["created"]) == EXPECTED - {"dags/build_model.py"}
    assert data["already_initialised"] is False and data["skipped"] == []
    assert (target / "dags" / "build_model.py").read_text() == "# build_model DAG\n"
    assert (target / "dags" / "extra_dag.py").read_text() == "# not ours\n"


def test_upgrading_an_old_layout_keeps_rf_core_and_says_what_to_do_with_it(
    bundle: Path, tmp_path: Path, cli
) -> None:
    """A project scaffolded before the jobs' package has spark_jobs/rf_core.py: `init --force` writes the new
    layout, deletes nothing, and names the left-over file with the step that finishes the upgrade."""
    target = tmp_path / "proj"
    write_files(target, {"spark_jobs/rf_core.py": "# my own edits\n"})
    code, out, err = cli("init", str(target), "--force")
    assert code == 0, err
    warning = " ".join(err.split())
    assert "spark_jobs/rf_core.py is left from an older mlopsctl" in warning
    assert "spark_jobs/mlopsctl_jobs/" in warning and "delete rf_core.py" in warning
    assert (target / "spark_jobs" / "rf_core.py").read_text() == "# my own edits\n"
    code, out, err = cli("init", str(target), "--json")
    assert code == 0, err
    assert list(json.loads(out)["left_over"]) == ["spark_jobs/rf_core.py"]
    (target / "spark_jobs" / "rf_core.py").unlink()
    code, out, err = cli("init", str(target), "--json")
    assert json.loads(out)["left_over"] == {}


def test_existing_gitignore_gets_missing_lines_once(
    bundle: Path, tmp_path: Path, cli
) -> None:
    target = tmp_path / "proj"
    target.mkdir()
    (target / ".gitignore").write_text("node_modules\n/.env")  # .env already ignored, no trailing newline
    code, out, _ = cli("init", str(target), "--json")
    assert code == 0
    assert json.loads(out)["updated"] == [".gitignore"]
    lines = (target / ".gitignore").read_text().splitlines()
    assert lines[:2] == ["node_modules", "/.env"]
    assert lines.count(".mlopsctl/") == 1 and ".env" not in lines  # only the missing line was added
    code, out, _ = cli("init", str(target), "--json")
    assert json.loads(out)["already_initialised"] is True
    assert (target / ".gitignore").read_text().splitlines() == lines


def test_missing_env_example_is_skipped_with_a_warning(
    bundle: Path, tmp_path: Path, cli
) -> None:
    (bundle / "env.example").unlink()
    target = tmp_path / "proj"
    code, _out, err = cli("init", str(target))
    assert code == 0
    assert ".env.example is not bundled" in err
    assert files_under(target) == EXPECTED - {".env.example"}


def test_default_directory_is_project_dir_flag_else_cwd(
    bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli("-C", str(tmp_path / "via_flag"), "init")[0] == 0
    assert files_under(tmp_path / "via_flag") == EXPECTED
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    code, out, _ = cli("init")
    assert code == 0 and files_under(here) == EXPECTED
    assert "cd " not in out  # already in the project: no `cd` step


def test_directory_that_is_a_file_is_a_usage_error(
    bundle: Path, tmp_path: Path, cli
) -> None:
    (tmp_path / "afile").write_text("x")
    code, _, err = cli("init", str(tmp_path / "afile"))
    assert code == ExitCode.USAGE and "not a directory" in err


def test_init_with_the_real_bundle_copies_it(tmp_path: Path, cli) -> None:
    code, out, err = cli("init", str(tmp_path / "proj"), "--json")
    assert code == 0, err
    data = json.loads(out)
    for name, src in (("dags", paths.bundled_dags_dir()), ("spark_jobs", paths.bundled_spark_jobs_dir())):
        bundled = {
            f"{name}/{p.relative_to(src).as_posix()}"
            for p in src.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
        }
        assert bundled <= set(data["created"])
        for rel in bundled:
            assert (tmp_path / "proj" / rel).read_bytes() == (src / rel.split("/", 1)[1]).read_bytes()
        if not bundled:
            assert f"{name}/" in data["skipped"]
    assert "dags/common/params.json" in data["created"]  # the Params contract ships with the DAGs


# --- the scaffolded DAG integrity test really catches problems -------------------------------------


def run_integrity_test(project: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLOPSCTL_", "PYTEST"))}
    env["AIRFLOW_HOME"] = str(tmp_path / "airflow_home")
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_dag_integrity.py"],
        check=False,
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_scaffolded_integrity_test_passes_on_good_dags_and_fails_on_bad_ones(
    bundle: Path, tmp_path: Path, cli
) -> None:
    pytest.importorskip("airflow")
    target = tmp_path / "proj"
    assert cli("init", str(target))[0] == 0
    for f in (target / "dags").rglob("*.py"):
        f.unlink()
    # DAG files import shared code from dags/common/, as Airflow allows (the DAGs folder is on sys.path)
    uses_common = (
        GOOD_DAG.replace("good_dag", "uses_common")
        .replace('tags=["demo"]', "tags=TAGS")
        .replace(
            "from airflow.sdk import dag, task",
            "from airflow.sdk import dag, task\nfrom common.shared import TAGS",
        )
    )
    write_files(
        target / "dags",
        {
            "good.py": GOOD_DAG,
            "common/__init__.py": "",
            "common/shared.py": 'TAGS = ["shared"]\n',
            "uses_common.py": uses_common,
        },
    )

    ok = run_integrity_test(target, tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "5 passed" in ok.stdout

    (target / "dags" / "broken.py").write_text("from airflow.sdk import dag\nimport no_such_module_xyz\n")
    untagged = GOOD_DAG.replace('tags=["demo"], default_args={"retries": 1}', "").replace(
        "good_dag", "bare_dag"
    )
    (target / "dags" / "untagged.py").write_text(untagged)
    parse_time_read = GOOD_DAG.replace("good_dag", "reads_var").replace(
        "from airflow.sdk import dag, task", "from airflow.sdk import Variable, dag, task\nVariable.get('x')"
    )
    (target / "dags" / "reads_var.py").write_text(parse_time_read)

    bad = run_integrity_test(target, tmp_path)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "FAILED tests/test_dag_integrity.py::test_no_import_errors" in bad.stdout
    assert "broken.py" in bad.stdout and "no_such_module_xyz" in bad.stdout
    assert "reads_var.py" in bad.stdout and "parse time" in bad.stdout
    assert (
        "FAILED tests/test_dag_integrity.py::test_every_dag_has_tags" in bad.stdout
        and "bare_dag" in bad.stdout
    )
    assert "FAILED tests/test_dag_integrity.py::test_every_task_has_retries_configured" in bad.stdout
