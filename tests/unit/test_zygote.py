"""`mlopsctl.devenv.zygote`: components forked from one Python that imported their code once, each a
detached component of its own, as `spawn` would start it."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import psutil
import pytest

from mlopsctl.devenv.process import ForkError, process_of, read_pid_file, spawn_forks, terminate, tree_of
from mlopsctl.devenv.stack import ComponentSpec

#: a module the zygote preloads: each import appends the importing PID to a file
SHARED = """
import os, pathlib
with open(pathlib.Path(__file__).with_name("imports.txt"), "a") as fh:
    fh.write(f"{os.getpid()}\\n")
"""

#: a component: reports how it was started, then sleeps (or exits with the code given as its last argument)
COMPONENT = """
import json, os, sys, time
report = {
    "name": __name__, "argv": sys.argv[1:], "cwd": os.getcwd(), "pid": os.getpid(), "sid": os.getsid(0),
    "stdin": sys.stdin.read(), "shared": "shared_code" in sys.modules,
}
print(json.dumps(report), flush=True)
print("to stderr", file=sys.stderr, flush=True)
if sys.argv[-1].isdigit():
    sys.exit(int(sys.argv[-1]))
time.sleep(300)
"""


@pytest.fixture
def code(tmp_path: Path) -> Path:
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "shared_code.py").write_text(SHARED)
    (folder / "component.py").write_text(COMPONENT)
    return folder


def _env(code: Path) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(code), os.environ.get("PYTHONPATH")])))


def _zygote(code: Path, *preload: str) -> ComponentSpec:
    argv = [sys.executable, "-m", "mlopsctl.devenv.zygote"]
    for module in preload:
        argv += ["--preload", module]
    return ComponentSpec("zygote", argv, _env(code), code)


def _spec(code: Path, name: str, *args: str) -> ComponentSpec:
    """Component `name`, run in a folder of its own beside the code, with the zygote's environment."""
    return ComponentSpec(name, [sys.executable, "-m", "component", *args], _env(code), code.parent / name)


def _report(log: Path) -> dict:
    deadline = time.monotonic() + 30
    while True:
        for line in log.read_text().splitlines():
            if line.startswith("{"):
                return json.loads(line)
        assert time.monotonic() < deadline, f"no report in {log}: {log.read_text()}"
        time.sleep(0.05)


def test_each_fork_is_a_detached_component_with_its_own_log_argv_and_cwd(
    tmp_path: Path, code: Path, procs: list
) -> None:
    names = ("first", "second")
    specs = [_spec(code, name, "--flag", f"value for {name}") for name in names]
    logs = {name: tmp_path / f"{name}.log" for name in names}
    pid_files = {name: tmp_path / f"{name}.pid" for name in names}

    records = spawn_forks(_zygote(code, "shared_code"), specs, logs, pid_files, timeout=60)
    procs.extend(psutil.Process(r.pid) for r in records.values())

    assert set(records) == set(names)
    for name in names:
        report = _report(logs[name])
        record = records[name]
        assert report["pid"] == record.pid and read_pid_file(pid_files[name]) == record
        assert report["sid"] == record.pid != os.getsid(0)  # a session (and process group) of its own
        assert report["name"] == "__main__" and report["argv"] == ["--flag", f"value for {name}"]
        assert report["cwd"] == str(tmp_path / name) and report["stdin"] == ""
        assert report["shared"]  # the preloaded module, inherited from the zygote
        log = logs[name].read_text()
        assert log.startswith(f"\n=== mlopsctl: starting {name} at ") and "to stderr" in log
        assert record.argv == specs[names.index(name)].argv  # what `dev status` shows and the port is read from
        assert process_of(record) is not None and len(tree_of(record)) == 1
    # imported once, by the zygote, which has exited: neither component imported it again
    importers = (code / "imports.txt").read_text().split()
    assert len(importers) == 1 and int(importers[0]) not in {r.pid for r in records.values()}
    assert not psutil.pid_exists(int(importers[0])) or psutil.Process(int(importers[0])).status() == "zombie"

    assert terminate(records.values(), grace=5) == []
    assert all(process_of(r) is None for r in records.values())


def test_a_fork_that_exits_is_gone_and_leaves_its_output_in_its_log(tmp_path: Path, code: Path) -> None:
    records = spawn_forks(
        _zygote(code), [_spec(code, "quitter", "7")], {"quitter": tmp_path / "q.log"},
        {"quitter": tmp_path / "q.pid"}, timeout=60,
    )
    assert _report(tmp_path / "q.log")["argv"] == ["7"]
    deadline = time.monotonic() + 30
    while process_of(records["quitter"]) is not None:
        assert time.monotonic() < deadline, "the component did not exit"
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("preload", "argv", "error"),
    [
        (["no_such_module_anywhere"], None, "ModuleNotFoundError: No module named 'no_such_module_anywhere'"),
        (["threads_left_running"], None, "left threads running (stray)"),
        ([], ["-c", "print('not a module')"], "must start with"),
    ],
)
def test_the_zygote_forks_nothing_when_it_cannot_start_every_component(
    tmp_path: Path, code: Path, preload: list[str], argv: list[str] | None, error: str
) -> None:
    (code / "threads_left_running.py").write_text(
        "import threading, time\nthreading.Thread(target=time.sleep, args=(60,), name='stray', daemon=True).start()\n"
    )
    spec = _spec(code, "c")
    if argv is not None:
        spec = ComponentSpec("c", [sys.executable, *argv], spec.env, spec.cwd)
    with pytest.raises(ForkError) as exc:
        spawn_forks(_zygote(code, *preload), [spec], {"c": tmp_path / "c.log"}, {"c": tmp_path / "c.pid"}, 60)
    assert "exited with code 2" in str(exc.value) and error in str(exc.value)
    assert (tmp_path / "c.log").read_text().strip().startswith("=== mlopsctl: starting c at ")
    assert "{" not in (tmp_path / "c.log").read_text()  # the component never ran
    assert not (tmp_path / "c.pid").exists()


def test_a_zygote_that_does_not_answer_in_time_is_killed(tmp_path: Path, code: Path) -> None:
    (code / "slow_import.py").write_text("import time\ntime.sleep(120)\n")
    with pytest.raises(ForkError) as exc:
        spawn_forks(_zygote(code, "slow_import"), [_spec(code, "c")], {"c": tmp_path / "c.log"},
                    {"c": tmp_path / "c.pid"}, timeout=1)
    assert "had not forked them after 1 s" in str(exc.value)
    zygotes = [p for p in psutil.process_iter(["cmdline"]) if "slow_import" in (p.info["cmdline"] or [])]
    assert zygotes == []
    assert not (tmp_path / "c.pid").exists()


def test_only_components_with_the_zygotes_environment_are_forked(tmp_path: Path, code: Path) -> None:
    spec = _spec(code, "c")
    other = ComponentSpec("c", spec.argv, dict(spec.env, AIRFLOW_HOME="/elsewhere"), spec.cwd)
    with pytest.raises(ValueError, match="their environments differ"):
        spawn_forks(_zygote(code), [other], {"c": tmp_path / "c.log"}, {"c": tmp_path / "c.pid"}, 60)
    assert not (tmp_path / "c.log").exists() and not (tmp_path / "c.pid").exists()
