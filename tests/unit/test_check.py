"""`mlopsctl check`: finds each kind of problem in tests/fixtures/broken_dags and tests/fixtures/check_dags
(Airflow 2 -> 3 migration, code that runs at every parse), passes on clean DAGs.

The CLI runs in a subprocess: parsing imports Airflow, which fixes AIRFLOW_HOME for the process's life,
so the test process stays free of it (and each run proves `check` needs no configured Airflow).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlopsctl.dagcheck import (
    KINDS,
    TOP_LEVEL_RULES,
    CheckReport,
    FileReport,
    Problem,
    link_import_errors,
    ruff_bin,
    ruff_fix_text,
    ruff_problems,
    scan_parse_time_code,
    short_error,
)
from mlopsctl.errors import ExitCode

REPO = Path(__file__).resolve().parents[2]
BROKEN = REPO / "tests" / "fixtures" / "broken_dags"
GOOD = REPO / "tests" / "fixtures" / "good_dags"
MIGRATION = REPO / "tests" / "fixtures" / "check_dags"

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
    "slow_parse.py": set(),  # only warnings: slow_parse, and its sleep as top-level code (test_slow_parse_*)
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


# check_dags fixture file -> the problem kinds `check` reports for it (errors and warnings)
MIGRATION_EXPECTED = {
    "airflow2_style.py": {"import_error", "airflow3_removed", "airflow3_deprecated", "top_level_code"},
    "moved_imports.py": {"airflow3_deprecated", "airflow_lint"},
    "top_level_code.py": {"top_level_code"},
    "deferred_code.py": set(),
}


def test_every_fixture_is_covered() -> None:
    assert {p.name for p in BROKEN.glob("*.py")} | {"syntax_error.py"} == set(EXPECTED)
    assert {p.name for p in MIGRATION.glob("*.py")} == set(MIGRATION_EXPECTED)
    covered = set().union(*EXPECTED.values(), *MIGRATION_EXPECTED.values())
    # slow_parse, no_dag_files and ruff_unavailable have tests of their own below
    assert covered | {"slow_parse", "no_dag_files", "ruff_unavailable"} == set(KINDS)


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
    assert {p["file"] for p in files[filename]["problems"]} <= {filename}


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
    # the read's line comes from the file's syntax tree
    read_at = [
        p["line"] for p in by_file["parse_time_variable.py"]["problems"] if p["kind"] == "parse_time_io"
    ]
    assert read_at == [_line_of(BROKEN / "parse_time_variable.py", 'Variable.get("mlopsctl_threshold"')]
    assert by_file["import_error.py"]["problems"][0]["line"] == lineno
    # the read is reported once, not also as an import error caused by the check itself
    assert "ParseTimeAccessError" not in json.dumps(by_file["parse_time_variable.py"])
    # a swallowed failure is still a parse-time read
    assert "Connection.get('databricks_default')" in messages("parse_time_connection.py", "parse_time_io")
    assert by_file["parse_time_connection.py"]["dag_ids"] == ["broken_connection"]
    assert by_file["no_tags.py"]["dag_ids"] == ["broken_no_tags"]


def test_slow_parse_is_a_warning(broken_report) -> None:
    _proc, report, _home = broken_report
    slow = [p for f in report["files"] if f["file"] == "slow_parse.py" for p in f["problems"]]
    assert sorted((p["kind"], p["severity"], p["rule"]) for p in slow) == [
        ("slow_parse", "warning", None),
        ("top_level_code", "warning", "sleep"),
    ]
    assert next(f["parse_seconds"] for f in report["files"] if f["file"] == "slow_parse.py") >= 0.5


def test_no_airflow_home_is_left_behind(broken_report) -> None:
    _proc, _report, home = broken_report
    assert not (home / "airflow").exists()  # a throwaway AIRFLOW_HOME was used, not ~/airflow


def test_slow_parse_fails_only_with_strict(tmp_path: Path) -> None:
    target = str(BROKEN / "slow_parse.py")
    relaxed = run_check(target, "--max-parse-seconds", "0.1", home=tmp_path)
    assert relaxed.returncode == 0, relaxed.stderr
    assert "slow_parse" in relaxed.stdout and "2 warning(s)" in relaxed.stderr
    strict = run_check(target, "--max-parse-seconds", "0.1", "--strict", home=tmp_path)
    assert strict.returncode == ExitCode.DAG_ERROR


def test_clean_dags_pass_and_helpers_import(tmp_path: Path) -> None:
    proc = run_check(str(GOOD), "--json", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is True and report["problems"] == []
    assert [(f["file"], f["dag_ids"]) for f in report["files"]] == [("fine.py", ["fixture_fine"])]


def test_bundled_dags_pass(tmp_path: Path) -> None:
    proc = run_check(str(REPO / "dags"), "--json", home=tmp_path)
    report = json.loads(proc.stdout)
    # no error, no ruff finding, no top-level code: only a slow parse on a loaded machine may show up
    unexpected = [p for p in report["problems"] if p["kind"] != "slow_parse"]
    assert proc.returncode == 0 and unexpected == [], json.dumps(unexpected, indent=2)
    found = {d for f in report["files"] for d in f["dag_ids"]}
    assert {"build_model", "grid_search", "grid_search_spark"} <= found
    assert {"build_model.py", "common/compute.py", "common/databricks_backend.py"} <= {
        f["file"] for f in report["files"]
    }


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


# --- Airflow 2 -> 3 migration (ruff's AIR rules) and code that runs at every parse ------------------


def _line_of(path: Path, text: str) -> int:
    return next(i for i, ln in enumerate(path.read_text().splitlines(), 1) if text in ln)


def _expected_top_level(path: Path) -> set[tuple[int, str]]:
    """The `# expect: <rule>` markers of a fixture file: (line, rule)."""
    found = set()
    for i, line in enumerate(path.read_text().splitlines(), 1):
        marker = re.search(r"# expect: (\w+)", line)
        if marker:
            found.add((i, marker.group(1)))
    return found


@pytest.fixture(scope="module")
def migration_report(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], dict]:
    home = tmp_path_factory.mktemp("check-migration-home")
    folder = tmp_path_factory.mktemp("migration") / "dags"
    shutil.copytree(MIGRATION, folder)
    proc = run_check(str(folder), "--json", "--max-parse-seconds", "60", home=home)
    return proc, json.loads(proc.stdout)


def _problems(report: dict, filename: str) -> list[dict]:
    return next(f["problems"] for f in report["files"] if f["file"] == filename)


def test_migration_fixtures_report_their_kinds(migration_report) -> None:
    proc, report = migration_report
    assert proc.returncode == ExitCode.DAG_ERROR and report["ok"] is False  # airflow2_style.py fails
    for filename, kinds in MIGRATION_EXPECTED.items():
        assert {p["kind"] for p in _problems(report, filename)} == kinds, filename
    # what the DAG files print while parsed goes to stderr: stdout is the JSON report
    assert "building the DAG for nightly_" in proc.stderr


def test_airflow2_dag_says_what_replaces_schedule_interval(migration_report) -> None:
    _proc, report = migration_report
    problems = _problems(report, "airflow2_style.py")
    src = MIGRATION / "airflow2_style.py"
    (air301,) = [p for p in problems if p["rule"] == "AIR301"]
    assert air301["line"] == _line_of(src, "schedule_interval=None")
    assert air301["severity"] == "error" and air301["kind"] == "airflow3_removed"
    assert "`schedule_interval` is removed in Airflow 3.0" in air301["message"]
    assert "`schedule_interval` -> `schedule`" in air301["fix"]
    # the import error is that removed argument: the finding explains it, and the error carries the fix
    (error,) = [p for p in problems if p["kind"] == "import_error"]
    assert "unexpected keyword argument 'schedule_interval'" in error["message"]
    assert air301["explains_import_error"] is True
    assert error["fix"].startswith(f"AIR301 line {air301['line']}: Use `schedule` instead")
    # the moved `from airflow import DAG` still works: a warning, with the new import
    (air311,) = [p for p in problems if p["rule"] == "AIR311"]
    assert air311["severity"] == "warning" and air311["explains_import_error"] is False
    assert "add `from airflow.sdk import DAG`" in air311["fix"]
    # the run id computed from the clock at module level, and the print
    top = {(p["line"], p["rule"]) for p in problems if p["kind"] == "top_level_code"}
    assert top == _expected_top_level(src)
    clock = next(p for p in problems if p["rule"] == "clock")
    assert clock["severity"] == "warning" and clock["message"].startswith(
        "`datetime.now()` runs at every parse"
    )


def test_airflow2_dag_plain_output(tmp_path: Path) -> None:
    proc = run_check(str(MIGRATION / "airflow2_style.py"), "--max-parse-seconds", "60", home=tmp_path)
    assert proc.returncode == ExitCode.DAG_ERROR and "Traceback" not in proc.stderr
    out = proc.stdout
    air301_line = _line_of(MIGRATION / "airflow2_style.py", "schedule_interval=None")
    clock_line = _line_of(MIGRATION / "airflow2_style.py", "datetime.now()")
    error_at = out.index("error import_error: airflow2_style.py:")
    cause_at = out.index(f"caused by: error airflow3_removed AIR301: airflow2_style.py:{air301_line}:")
    assert error_at < cause_at  # listed under the import error it explains
    assert "-> Use `schedule` instead (`schedule_interval` -> `schedule`)" in out
    assert out.count("AIR301") == 1  # not repeated beside the error
    assert (
        f"warning top_level_code clock: airflow2_style.py:{clock_line}: `datetime.now()` runs at every parse"
        in out
    )


def test_warnings_alone_pass_and_fail_with_strict(migration_report, tmp_path: Path) -> None:
    _proc, report = migration_report
    assert {p["severity"] for p in _problems(report, "moved_imports.py")} == {"warning"}
    assert {p["severity"] for p in _problems(report, "top_level_code.py")} == {"warning"}
    target = str(MIGRATION / "moved_imports.py")
    relaxed = run_check(target, "--json", "--max-parse-seconds", "60", home=tmp_path)
    assert relaxed.returncode == 0, relaxed.stderr
    assert json.loads(relaxed.stdout)["ok"] is True and "4 warning(s)" in relaxed.stderr
    strict = run_check(target, "--strict", "--max-parse-seconds", "60", home=tmp_path)
    assert strict.returncode == ExitCode.DAG_ERROR
    assert "warning airflow3_deprecated AIR312: moved_imports.py:" in strict.stdout


def test_json_shape_of_a_finding(migration_report) -> None:
    _proc, report = migration_report
    keys = {"kind", "file", "message", "dag_id", "severity", "line", "rule", "fix", "explains_import_error"}
    for f in report["files"]:
        assert set(f) == {"file", "parse_seconds", "dag_ids", "problems"}
        for p in f["problems"]:
            assert set(p) == keys and p["file"] == f["file"]
    assert report["problems"] == [p for f in report["files"] for p in f["problems"]]
    top = next(p for p in _problems(report, "top_level_code.py") if p["rule"] == "network")
    assert top["fix"] == TOP_LEVEL_RULES["network"][1] and isinstance(top["line"], int)


def test_top_level_code_end_to_end(migration_report) -> None:
    _proc, report = migration_report
    for name in ("top_level_code.py", "deferred_code.py"):
        got = {(p["line"], p["rule"]) for p in _problems(report, name) if p["kind"] == "top_level_code"}
        assert got == _expected_top_level(MIGRATION / name), name
    dags = {d for f in report["files"] for d in f["dag_ids"]}
    assert {"top_level_code", "top_level_classic", "deferred_code", "deferred_classic"} <= dags


@pytest.mark.parametrize("rule", sorted(TOP_LEVEL_RULES))
def test_each_top_level_rule_positive_and_negative(rule: str) -> None:
    positive = MIGRATION / "top_level_code.py"
    expected = {line for line, r in _expected_top_level(positive) if r == rule}
    assert expected, f"no `# expect: {rule}` line in {positive.name}"
    found, _reads = scan_parse_time_code(positive.read_text(), positive.name)
    assert {p.line for p in found if p.rule == rule} == expected
    # the same calls inside tasks, callables, lambdas and methods are not flagged
    negative = MIGRATION / "deferred_code.py"
    deferred, _reads = scan_parse_time_code(negative.read_text(), negative.name)
    assert [p for p in deferred if p.rule == rule] == []


def _scan(source: str) -> set[tuple[int, str]]:
    found, _reads = scan_parse_time_code(source, "x.py")
    return {(p.line, p.rule or "") for p in found}


def test_top_level_scan_resolves_imports_and_scopes() -> None:
    assert _scan("import datetime\nX = datetime.datetime.now()\n") == {(2, "clock")}
    assert _scan("from time import time as now\nX = now()\n") == {(2, "clock")}
    assert _scan("import numpy as np\nX = np.random.rand(3)\nY = np.random.default_rng(1)\n") == {
        (2, "random")
    }
    assert _scan("import pandas as pd\nDF = pd.read_csv('x.csv')\n") == {(2, "file_io")}
    assert _scan("import requests\nR = requests.get('http://127.0.0.1:9')\n") == {(2, "network")}
    # a default value and a decorator argument run when the def runs; the body does not
    assert _scan("import time\ndef f(t=time.time()):\n    return time.time()\n") == {(2, "clock")}
    # a plain function runs at parse time only when parse-time code calls it
    called = "import uuid\ndef make():\n    return uuid.uuid4()\nX = make()\n"
    assert _scan(called) == {(3, "random")}
    assert _scan(called.replace("X = make()", "X = make")) == set()
    assert _scan("import os\nA = os.environ['HOME']\nB = os.getenv('X')\nC = os.environ.get('Y')\n") == set()
    assert _scan("def broken(:\n") == set()  # a syntax error is the import's to report
    # `dag.test()` under a main guard runs only when the file is the script, never at parse
    main = "if __name__ == '__main__':\n    print('testing')\nelse:\n    print('parsed')\n"
    assert _scan(main) == {(4, "print")}
    # a function building a DAG runs at parse even when nothing in the file calls it by name
    factory = "import time\nfrom airflow.sdk import DAG\ndef build(i):\n    with DAG(f'd{i}', start_date=time.time()):\n        pass\n"
    assert _scan(factory) == {(4, "clock")}


def test_top_level_scan_gives_variable_and_connection_read_lines() -> None:
    source = (
        "from airflow.sdk import Variable, BaseHook\n"
        "A = Variable.get('threshold', default='1')\n"
        "B = BaseHook.get_connection(conn_id='db')\n"
        "def later():\n    return Variable.get('inside')\n"
    )
    _found, reads = scan_parse_time_code(source, "x.py")
    assert [(r.kind, r.key, r.line) for r in reads] == [("Variable", "threshold", 2), ("Connection", "db", 3)]


def test_ruff_fix_text_shows_the_replacement() -> None:
    lines = ["from airflow import DAG\n", "with DAG('x', schedule_interval=None):\n"]
    rename = {
        "message": "Use `schedule` instead",
        "edits": [
            {
                "content": "schedule",
                "location": {"row": 2, "column": 15},
                "end_location": {"row": 2, "column": 32},
            }
        ],
    }
    assert ruff_fix_text(rename, lines) == "Use `schedule` instead (`schedule_interval` -> `schedule`)"
    move = {
        "message": None,
        "edits": [
            {"content": "", "location": {"row": 1, "column": 1}, "end_location": {"row": 2, "column": 1}},
            {
                "content": "from airflow.sdk import DAG\n",
                "location": {"row": 3, "column": 1},
                "end_location": {"row": 3, "column": 1},
            },
        ],
    }
    assert ruff_fix_text(move, lines) == "remove `from airflow import DAG`; add `from airflow.sdk import DAG`"
    assert ruff_fix_text(None, lines) is None


def test_import_error_is_linked_to_the_removed_name_it_names() -> None:
    error = Problem(
        "import_error",
        "a.py",
        "line 3: ImportError: cannot import name 'days_ago' from 'airflow.utils.dates'",
        line=3,
    )
    cause = Problem(
        "airflow3_removed",
        "a.py",
        "`airflow.utils.dates.days_ago` is removed in Airflow 3.0",
        line=9,
        rule="AIR301",
        fix="Use `pendulum.today('UTC').add(days=-N, ...)` instead",
    )
    moved = Problem(
        "airflow3_deprecated",
        "a.py",
        "`airflow.DAG` is removed in Airflow 3.0; It still works",
        line=3,
        rule="AIR311",
    )
    other_file = Problem(
        "airflow3_removed", "b.py", "`airflow.utils.dates.days_ago` is removed", line=3, rule="AIR301"
    )
    problems = [error, cause, moved, other_file]
    link_import_errors(problems)
    assert [p.explains_import_error for p in problems] == [False, True, False, False]
    assert error.fix == "AIR301 line 9: Use `pendulum.today('UTC').add(days=-N, ...)` instead"


def test_ruff_missing_or_failing_is_a_warning(tmp_path: Path) -> None:
    (missing,) = ruff_problems(MIGRATION, MIGRATION, None)
    assert (missing.kind, missing.severity) == ("ruff_unavailable", "warning")
    assert "AIR3xx" in missing.message and missing.fix == "pip install 'mlopsctl[local]'"
    failing = tmp_path / "ruff"
    failing.write_text("#!/bin/sh\necho 'ruff: cannot read config' >&2\nexit 2\n")
    failing.chmod(0o755)
    (failed,) = ruff_problems(MIGRATION, MIGRATION, str(failing))
    assert failed.kind == "ruff_unavailable" and "cannot read config" in failed.message


def test_ruff_is_found_and_reports_relative_paths() -> None:
    binary = ruff_bin()
    assert binary is not None and Path(binary).is_file()
    found = ruff_problems(MIGRATION / "moved_imports.py", MIGRATION, binary)
    assert {(p.file, p.rule, p.severity) for p in found} == {
        ("moved_imports.py", "AIR002", "warning"),
        ("moved_imports.py", "AIR311", "warning"),
        ("moved_imports.py", "AIR312", "warning"),
    }
