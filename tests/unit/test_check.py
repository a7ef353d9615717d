"""`mlopsctl check`: finds each kind of problem in tests/fixtures/broken_dags, passes on clean DAGs.

The CLI runs in a subprocess: parsing imports Airflow, which fixes AIRFLOW_HOME for the process's life,
so the test process stays free of it (and each run proves `check` needs no configured Airflow).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlopsctl.dagcheck import KINDS, CheckReport, FileReport, Problem, short_error
from mlopsctl.errors import ExitCode

REPO = Path(__file__).resolve().parents[2]
BROKEN = REPO / "tests" / "fixtures" / "broken_dags"
GOOD = REPO / "tests" / "fixtures" / "good_dags"

# fixture file -> the error kinds `check` must report for it (and no other error kind)
EXPECTED = {
    "import_error.py": {"import_error"},
    "syntax_error.py": {"import_error"},
    "cycle.py": {"cycle"},
    "no_tags.py": {"missing_tags"},
    "no_retries.py": {"missing_retries"},
    "param_no_schema.py": {"param_without_schema"},
    "parse_time_variable.py": {"parse_time_io"},
    "parse_time_connection.py": {"parse_time_io"},
    "slow_parse.py": set(),  # only the slow_parse warning (see test_slow_parse_*)
}


def run_check(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLOPSCTL_"))}
    env.update(HOME=str(home), NO_COLOR="1", COLUMNS="200", MLOPSCTL_CONFIG_DIR=str(home / "cfg"))
    return subprocess.run(
        [sys.executable, "-m", "mlopsctl", "check", *args],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=str(REPO),
        timeout=900,
    )


# Written at test time, so linters and formatters of the repo never see a file that cannot parse.
SYNTAX_ERROR_DAG = (
    Path(BROKEN / "no_tags.py")
    .read_text()
    .replace("broken_no_tags", "broken_syntax")
    .replace("START, default_args", "START tags=['t'] default_args")
)


@pytest.fixture(scope="module")
def broken_report(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], dict, Path]:
    home = tmp_path_factory.mktemp("check-home")
    folder = tmp_path_factory.mktemp("broken") / "dags"
    shutil.copytree(BROKEN, folder)
    (folder / "syntax_error.py").write_text(SYNTAX_ERROR_DAG)
    proc = run_check(str(folder), "--json", "--max-parse-seconds", "0.3", home=home)
    return proc, json.loads(proc.stdout), home


def test_every_fixture_is_covered() -> None:
    assert {p.name for p in BROKEN.glob("*.py")} | {"syntax_error.py"} == set(EXPECTED)
    covered = set().union(*EXPECTED.values()) | {"slow_parse", "no_dag_files"}
    assert covered == set(KINDS)  # each kind of problem has a fixture


def test_broken_dags_fail_with_dag_error_exit_code(broken_report) -> None:
    proc, report, _home = broken_report
    assert proc.returncode == ExitCode.DAG_ERROR, proc.stderr
    assert report["ok"] is False
    assert "check found" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("filename", sorted(EXPECTED))
def test_each_kind_is_found(broken_report, filename: str) -> None:
    _proc, report, _home = broken_report
    files = {f["file"]: f for f in report["files"]}
    assert filename in files, f"{filename} was not parsed: {sorted(files)}"
    got = {p["kind"] for p in files[filename]["problems"] if p["severity"] == "error"}
    assert got == EXPECTED[filename]
    assert files[filename]["parse_seconds"] >= 0


def test_problem_details(broken_report) -> None:
    _proc, report, _home = broken_report
    by_file = {f["file"]: f for f in report["files"]}

    def messages(name: str, kind: str) -> str:
        return " | ".join(p["message"] for p in by_file[name]["problems"] if p["kind"] == kind)

    assert "No module named 'mlopsctl_no_such_module'" in messages("import_error.py", "import_error")
    lines = (BROKEN / "import_error.py").read_text().splitlines()
    lineno = next(i for i, ln in enumerate(lines, 1) if ln.startswith("import mlopsctl_no_such_module"))
    assert messages("import_error.py", "import_error").startswith(f"line {lineno}: ModuleNotFoundError")
    assert "SyntaxError" in messages("syntax_error.py", "import_error")
    assert "Cycle detected in Dag: broken_cycle" in messages("cycle.py", "cycle")
    assert "fragile" in messages("no_retries.py", "missing_retries")
    assert "sturdy" not in messages("no_retries.py", "missing_retries")
    assert "'depth'" in messages("param_no_schema.py", "param_without_schema")
    assert "'typed'" not in messages("param_no_schema.py", "param_without_schema")
    assert "Variable.get('mlopsctl_threshold')" in messages("parse_time_variable.py", "parse_time_io")
    # the read is reported once, not also as an import error caused by the check itself
    assert "ParseTimeAccessError" not in json.dumps(by_file["parse_time_variable.py"])
    # a swallowed failure is still a parse-time read
    assert "Connection.get('databricks_default')" in messages("parse_time_connection.py", "parse_time_io")
    assert by_file["parse_time_connection.py"]["dag_ids"] == ["broken_connection"]
    assert by_file["no_tags.py"]["dag_ids"] == ["broken_no_tags"]


def test_slow_parse_is_a_warning(broken_report) -> None:
    _proc, report, _home = broken_report
    slow = [p for f in report["files"] if f["file"] == "slow_parse.py" for p in f["problems"]]
    assert [(p["kind"], p["severity"]) for p in slow] == [("slow_parse", "warning")]
    assert next(f["parse_seconds"] for f in report["files"] if f["file"] == "slow_parse.py") >= 0.5


def test_no_airflow_home_is_left_behind(broken_report) -> None:
    _proc, _report, home = broken_report
    assert not (home / "airflow").exists()  # a throwaway AIRFLOW_HOME was used, not ~/airflow


def test_slow_parse_fails_only_with_strict(tmp_path: Path) -> None:
    target = str(BROKEN / "slow_parse.py")
    relaxed = run_check(target, "--max-parse-seconds", "0.1", home=tmp_path)
    assert relaxed.returncode == 0, relaxed.stderr
    assert "slow_parse" in relaxed.stdout and "1 warning(s)" in relaxed.stderr
    strict = run_check(target, "--max-parse-seconds", "0.1", "--strict", home=tmp_path)
    assert strict.returncode == ExitCode.DAG_ERROR


def test_clean_dags_pass_and_helpers_import(tmp_path: Path) -> None:
    proc = run_check(str(GOOD), "--json", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is True and report["problems"] == []
    assert [(f["file"], f["dag_ids"]) for f in report["files"]] == [("fine.py", ["fixture_fine"])]


def test_bundled_dags_pass(tmp_path: Path) -> None:
    dags = REPO / "dags"
    if not any(p.suffix == ".py" and "dag" in p.read_text() for p in dags.glob("*.py")):
        pytest.skip("the bundled DAGs are not written yet")
    proc = run_check(str(dags), "--json", home=tmp_path)
    report = json.loads(proc.stdout)
    errors = [p for p in report["problems"] if p["severity"] == "error"]
    assert proc.returncode == 0 and errors == [], json.dumps(errors, indent=2)
    found = {d for f in report["files"] for d in f["dag_ids"]}
    assert {"build_model", "grid_search", "grid_search_spark"} <= found


def test_empty_folder_is_a_problem(tmp_path: Path) -> None:
    empty = tmp_path / "dags"
    empty.mkdir()
    (empty / "helper.py").write_text("X = 1\n")  # not a DAG file
    proc = run_check(str(empty), home=tmp_path)
    assert proc.returncode == ExitCode.DAG_ERROR
    assert "no_dag_files" in proc.stdout or "no DAG files" in proc.stdout + proc.stderr


def test_missing_path_is_a_usage_error(tmp_path: Path) -> None:
    proc = run_check(str(tmp_path / "nope"), home=tmp_path)
    assert proc.returncode == ExitCode.USAGE
    assert "does not exist" in proc.stderr


# --- pure helpers (no Airflow import) -------------------------------------------------------------


def test_short_error_points_at_the_dag_file_line() -> None:
    tb = (
        "Traceback (most recent call last):\n"
        '  File "/x/airflow/importer.py", line 238, in parse\n'
        '  File "/proj/dags/a.py", line 7, in <module>\n'
        "    import nope\n"
        "ModuleNotFoundError: No module named 'nope'\n"
    )
    assert short_error(tb, "/proj/dags/a.py") == "line 7: ModuleNotFoundError: No module named 'nope'"
    assert short_error("KeyError: 'x'", "/proj/dags/a.py") == "KeyError: 'x'"


def test_report_fails_on_errors_and_on_warnings_only_when_strict() -> None:
    warn_only = CheckReport(
        path="d",
        max_parse_seconds=1.0,
        files=[FileReport("a.py", 3.0, ["a"], [Problem("slow_parse", "a.py", "slow")])],
    )
    assert not warn_only.failed() and warn_only.failed(strict=True)
    assert warn_only.to_dict()["ok"] is True and warn_only.to_dict(strict=True)["ok"] is False
    broken = CheckReport(
        path="d",
        max_parse_seconds=1.0,
        files=[FileReport("b.py", 0.1, [], [Problem("cycle", "b.py", "cycle")])],
    )
    assert broken.failed() and broken.problems[0].severity == "error"
