"""The Databricks stand-in's sandbox: a job sees the stand-in's /Workspace and /Volumes, a fresh scratch cwd,
and none of the test machine's own files. Root only (CI runs as root); skipped elsewhere with the reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.databricks import sandbox

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def isolated() -> None:
    reason = sandbox.unavailable()
    if reason:
        pytest.skip(f"job isolation is not available here: {reason}")


def test_the_job_sees_the_stand_in_trees_and_not_the_test_files(isolated, tmp_path: Path) -> None:
    workspace, volumes = tmp_path / "workspace", tmp_path / "volumes"
    (workspace / "Shared").mkdir(parents=True)
    (workspace / "Shared" / "job.txt").write_text("from the workspace")
    (volumes / "main" / "s" / "v").mkdir(parents=True)
    (volumes / "main" / "s" / "v" / "data.csv").write_text("a,b\n")
    secret = tmp_path / "secret.txt"
    secret.write_text("test machine file")
    script = (f"cat /Workspace/Shared/job.txt; echo; cat /Volumes/main/s/v/data.csv; pwd; ls -A | wc -l; "
              f"for p in {secret} {REPO}/pyproject.toml {sys.executable}; do test -e $p && echo LEAK $p; done; "
              "touch /Volumes/main/s/v/written; true")
    plan = sandbox.plan(["/bin/sh", "-c", script], workspace=workspace, volumes=volumes, scratch="/tmp/run-1",
                        hide=[Path("/tmp"), tmp_path, REPO, Path(sys.prefix)], keep=[Path(sys.base_prefix)])
    res = subprocess.run(sandbox.command(sys.executable, plan), capture_output=True, text=True, timeout=60,
                         check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["from the workspace", "a,b", "/tmp/run-1", "0"]
    assert (volumes / "main" / "s" / "v" / "written").is_file()  # volumes are the stand-in's, read-write
    assert secret.read_text() == "test machine file" and not Path("/tmp/run-1").exists()  # nothing leaked out


def test_the_plan_hides_outermost_dirs_and_keeps_what_they_cover(tmp_path: Path) -> None:
    inner = tmp_path / "a" / "b"
    inner.mkdir(parents=True)
    plan = sandbox.plan(["/bin/true"], workspace=tmp_path, volumes=tmp_path, scratch="/tmp/x",
                        hide=[Path("/tmp"), inner, tmp_path, tmp_path / "missing"],
                        keep=[inner, tmp_path / "a", tmp_path / "missing"])
    outer = str(tmp_path.resolve())
    # the outermost existing dirs only: tmp_path covers `inner`; /tmp covers tmp_path when it lives there
    assert plan["hide"] == (["/tmp"] if outer.startswith("/tmp/") else ["/tmp", outer])
    assert plan["keep"] == [str((tmp_path / "a").resolve())]
    with pytest.raises(ValueError, match="scratch"):
        sandbox.plan(["/bin/true"], workspace=tmp_path, volumes=tmp_path, scratch="/var/x", hide=[Path("/tmp")],
                     keep=[])


def test_without_a_workspace_tree_the_workspace_is_empty(isolated, tmp_path: Path) -> None:
    """rules.SERVERLESS_WORKSPACE_FILES: what a serverless Connect server (its executors) sees of /Workspace."""
    workspace, volumes = tmp_path / "workspace", tmp_path / "volumes"
    (workspace / "Shared").mkdir(parents=True)
    (workspace / "Shared" / "data.csv").write_text("a\n1\n")
    (volumes / "main").mkdir(parents=True)
    (volumes / "main" / "rows.csv").write_text("a\n2\n")
    script = "ls -A /Workspace | wc -l; cat /Volumes/main/rows.csv; test -e /Workspace/Shared/data.csv || echo HIDDEN"
    plan = sandbox.plan(["/bin/sh", "-c", script], workspace=None, volumes=volumes, scratch="/tmp/connect-1",
                        hide=[Path("/tmp"), tmp_path], keep=[])
    res = subprocess.run(sandbox.command(sys.executable, plan), capture_output=True, text=True, timeout=60,
                         check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["0", "a", "2", "HIDDEN"]


def test_the_task_runner_runs_the_file_without_its_folder_on_sys_path(tmp_path: Path) -> None:
    """rules.WORKING_DIRECTORY: a job that imports a sibling file fails, whatever the working directory; its
    argv and `__main__` are the file's own."""
    runner = REPO / "tests" / "fixtures" / "databricks" / "task_runner.py"
    jobs, scratch = tmp_path / "jobs", tmp_path / "scratch"
    jobs.mkdir()
    scratch.mkdir()
    (jobs / "sibling.py").write_text("VALUE = 1\n")
    (jobs / "job.py").write_text(
        "import os, sys\n"
        "print('ARGV', sys.argv, __name__, os.getcwd())\n"
        "print('PATH', [p for p in sys.path if p in ('', os.getcwd(), os.path.dirname(__file__))])\n"
        "import sibling\n"
    )
    res = subprocess.run([sys.executable, str(runner), str(jobs / "job.py"), "--flag", "x"], cwd=scratch,
                         capture_output=True, text=True, timeout=60, check=False)
    assert f"ARGV ['{jobs / 'job.py'}', '--flag', 'x'] __main__ {scratch}" in res.stdout
    assert "PATH []" in res.stdout
    assert res.returncode == 1 and "ModuleNotFoundError: No module named 'sibling'" in res.stderr
    plain = subprocess.run([sys.executable, str(jobs / "job.py")], cwd=scratch, capture_output=True, text=True,
                           timeout=60, check=False)
    assert plain.returncode == 0  # what `python job.py` allowed: the script's folder first on sys.path
