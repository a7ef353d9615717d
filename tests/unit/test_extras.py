"""`dev` and `check` need the `local` extra: without it they exit CONFIG with a one-line install hint."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from mlopsctl.errors import ConfigError, ExitCode
from mlopsctl.extras import LOCAL_EXTRA_MODULES, require_local_extra

_real_find_spec = importlib.util.find_spec


def _without(monkeypatch: pytest.MonkeyPatch, *missing: str) -> None:
    """Make `missing` look uninstalled to importlib.util.find_spec (everything else is found as usual)."""

    def find_spec(name: str, package: str | None = None):
        return None if name.partition(".")[0] in missing else _real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_found_modules_pass_and_only_the_ones_asked_for_are_looked_up(monkeypatch: pytest.MonkeyPatch) -> None:
    looked_up: list[str] = []

    def find_spec(name: str, package: str | None = None):
        looked_up.append(name)
        return object()  # found

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    require_local_extra("dev start")
    assert looked_up == list(LOCAL_EXTRA_MODULES)  # by default, the whole extra
    looked_up.clear()
    require_local_extra("check", "airflow")
    assert looked_up == ["airflow"]


def test_an_installed_module_is_found_without_being_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mlopsctl_extra_probe.py").write_text("raise AssertionError('imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    require_local_extra("check", "mlopsctl_extra_probe")
    assert "mlopsctl_extra_probe" not in sys.modules


def test_missing_modules_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    _without(monkeypatch, "airflow", "pyspark")
    with pytest.raises(ConfigError) as info:
        require_local_extra("dev start")
    assert info.value.message == "`mlopsctl dev start` needs the `local` extra, and airflow, pyspark are not installed."
    assert info.value.hint == "pip install 'mlopsctl[local]'"
    assert info.value.exit_code == ExitCode.CONFIG
    require_local_extra("check", "sklearn")  # only the modules asked for count


def _exit_code(argv: list[str]) -> int | str | None:
    from mlopsctl.cli import main

    with pytest.raises(SystemExit) as info:  # main() always ends in sys.exit
        main(argv)
    return info.value.code


@pytest.mark.parametrize(
    ("argv", "command", "module"),
    [
        (["dev", "start"], "dev start", "airflow"),
        (["dev", "stop"], "dev stop", "pyspark"),
        (["dev", "status", "--json"], "dev status", "sklearn"),
        (["dev", "logs", "scheduler"], "dev logs", "airflow"),
        (["check"], "check", "airflow"),
    ],
)
def test_commands_exit_config_with_a_one_line_hint(
    monkeypatch: pytest.MonkeyPatch, project: Path, capsys: pytest.CaptureFixture, argv: list[str], command: str,
    module: str,
) -> None:
    # no dags/ in the project: the missing extra is reported first
    _without(monkeypatch, module)
    assert _exit_code(argv) == ExitCode.CONFIG
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        f"Error: `mlopsctl {command}` needs the `local` extra, and {module} is not installed.",
        "Hint: pip install 'mlopsctl[local]'",
    ]
    assert out == ""


def test_help_still_works_without_the_extra(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    _without(monkeypatch, *LOCAL_EXTRA_MODULES)
    assert _exit_code(["dev", "start", "--help"]) == 0
    assert "Start the local stack" in capsys.readouterr().out
