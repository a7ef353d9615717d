"""The job launcher (mlopsctl/devenv/launcher.py), as a real process on a real Unix socket, asked by the tasks'
side of its protocol (dags/common/launcher_client.py, imported as the DAG tasks import it): a job it forks
behaves like `python script.py` (argv, env, cwd, stdio, exit codes, tracebacks, its own process group), starts
with the preloaded modules already imported, reads its own folder's modules fresh, and ends with its task."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from mlopsctl.devenv.launcher import ping, start_preload
from tests.dags.conftest import DAGS_DIR
from tests.fixtures.launcher import running_launcher

if str(DAGS_DIR) not in sys.path:  # as Airflow puts the DAG folder on sys.path
    sys.path.append(str(DAGS_DIR))

from common.launcher_client import LaunchRefused, encode, launch, read_message


@pytest.fixture(scope="module")
def launcher(tmp_path_factory: pytest.TempPathFactory):
    # `preloaded_marker` is a module of ours: a job can see whether it was imported before the job started
    mods = tmp_path_factory.mktemp("preload")
    (mods / "preloaded_marker.py").write_text("import os\nLOADED_IN = os.getpid()\n")
    with running_launcher("json,preloaded_marker", env={"PYTHONPATH": str(mods), "MLOPSCTL_LAUNCHER_ONLY": "1"}) as path:
        yield path


def run(launcher: Path, script: Path, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    job = launch(str(launcher), [sys.executable, str(script), *args], {**os.environ, **(env or {})},
                 str(cwd or script.parent))
    out = job.stdout.read()
    return job, out, job.wait(timeout=60)


def test_ping_names_the_interpreter_and_what_it_preloaded(launcher: Path) -> None:
    reply = ping(launcher)
    assert reply is not None
    assert reply["python"] == sys.executable and reply["preloaded"] == ["json", "preloaded_marker"]
    assert ping(launcher.with_name("nothing.sock")) is None


def test_a_job_is_its_script_run_as_main_with_the_requested_argv_env_and_cwd(launcher: Path, tmp_path: Path) -> None:
    script = tmp_path / "show.py"
    script.write_text(
        "import json, os, sys\n"
        "print(json.dumps({'argv': sys.argv, 'env': os.environ.get('JOB_ONLY'), 'cwd': os.getcwd(),\n"
        "  'name': __name__, 'path0': sys.path[0], 'stdin': sys.stdin.read(), 'sid': os.getsid(0) == os.getpid(),\n"
        "  'launcher_env': os.environ.get('MLOPSCTL_LAUNCHER_ONLY')}))\n"
        "print('to stderr', file=sys.stderr)\n"
    )
    work = tmp_path / "work"
    work.mkdir()
    job, out, code = run(launcher, script, "--a", "it's \"q\" $(x)", env={"JOB_ONLY": "yes"}, cwd=work)
    first, second = out.splitlines()
    seen = json.loads(first)
    assert code == 0 and job.returncode == 0
    assert seen == {"argv": [str(script), "--a", "it's \"q\" $(x)"], "env": "yes", "cwd": str(work),
                    "name": "__main__", "path0": str(tmp_path), "stdin": "", "sid": True, "launcher_env": None}
    assert second == "to stderr"


def test_a_job_starts_with_the_preloaded_modules_and_reads_its_own_modules_fresh(launcher: Path, tmp_path: Path) -> None:
    (tmp_path / "helper.py").write_text("VERSION = 1\n")
    script = tmp_path / "job.py"
    script.write_text(
        "import os, sys\n"
        "warm = 'preloaded_marker' in sys.modules\n"
        "import preloaded_marker, helper\n"
        "print(warm, preloaded_marker.LOADED_IN != os.getpid(), helper.VERSION)\n"
    )
    assert run(launcher, script)[1:] == ("True True 1\n", 0)
    (tmp_path / "helper.py").write_text("VERSION = 2\n")  # an edited job module is run as it is on disk
    assert run(launcher, script)[1:] == ("True True 2\n", 0)


@pytest.fixture
def slow_import(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A module that takes 3 s to import, and a job that says whether it was imported before the job started
    and at which CPU priority the job runs."""
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "slow_import.py").write_text("import time\ntime.sleep(3)\n")
    script = tmp_path / "job.py"
    script.write_text("import os, sys\nprint('slow_import' in sys.modules, os.getpriority(os.PRIO_PROCESS, 0))\n")
    return {"PYTHONPATH": str(mods)}, script


def test_it_answers_at_once_and_preloads_only_when_asked(slow_import: tuple[dict[str, str], Path]) -> None:
    env, _ = slow_import
    with running_launcher("slow_import", env=env, ready=False) as path:
        time.sleep(1.5)  # past a poll of its loop: still nothing imported, nobody asked
        assert ping(path)["ready"] is False and ping(path)["preloaded"] == []
        started = time.monotonic()
        assert start_preload(path)["ready"] is False  # the answer does not wait for the imports
        assert time.monotonic() - started < 2.5
        while not ping(path)["ready"]:
            assert time.monotonic() - started < 30
            time.sleep(0.1)
        assert ping(path)["preloaded"] == ["slow_import"]


def test_a_job_waits_for_the_preload_at_the_launchers_priority(slow_import: tuple[dict[str, str], Path]) -> None:
    env, script = slow_import
    launcher_priority = f"True {os.getpriority(os.PRIO_PROCESS, 0)}\n"
    # nobody asked: the job has the preload run first
    with running_launcher("slow_import", env=env, ready=False) as path:
        assert run(path, script)[1:] == (launcher_priority, 0)
        assert ping(path)["ready"] is True and ping(path)["preloaded"] == ["slow_import"]
    # asked, and still importing in its lowest-priority thread: the job waits for it, and itself runs at the
    # launcher's priority
    with running_launcher("slow_import", env=env, ready=False) as path:
        assert start_preload(path)["ready"] is False
        assert run(path, script)[1:] == (launcher_priority, 0)


def test_with_nobody_asking_the_preload_starts_on_its_own(slow_import: tuple[dict[str, str], Path]) -> None:
    env, _ = slow_import
    with running_launcher("slow_import", env=env, ready=False, preload_after=0.2) as path:
        deadline = time.monotonic() + 30
        while not ping(path)["ready"]:
            assert time.monotonic() < deadline, "the preload did not start on its own"
            time.sleep(0.1)
        assert ping(path)["preloaded"] == ["slow_import"]


def test_exit_codes_and_tracebacks_are_those_of_a_fresh_python(launcher: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import sys\nprint('mlopsctl-error: no rows', file=sys.stderr)\nsys.exit(3)\n")
    assert run(launcher, bad)[1:] == ("mlopsctl-error: no rows\n", 3)
    crash = tmp_path / "crash.py"
    crash.write_text("print('step 1')\nraise RuntimeError('executor lost')\n")
    _, out, code = run(launcher, crash)
    assert code == 1 and out.startswith("step 1\n") and "Traceback" in out
    assert out.rstrip().endswith("RuntimeError: executor lost")
    hard = tmp_path / "hard.py"
    hard.write_text("import os\nos._exit(7)\n")
    assert run(launcher, hard)[2] == 7


def test_a_job_is_signalled_through_its_process_group(launcher: Path, tmp_path: Path) -> None:
    script = tmp_path / "sleep.py"
    script.write_text("import time\nprint('started', flush=True)\ntime.sleep(120)\n")
    job = launch(str(launcher), [sys.executable, str(script)], dict(os.environ), str(tmp_path))
    assert job.stdout.readline() == "started\n"
    assert job.poll() is None
    os.killpg(job.pid, signal.SIGTERM)
    assert job.wait(timeout=30) == -signal.SIGTERM


def test_a_job_ends_when_its_task_goes_away(launcher: Path, tmp_path: Path) -> None:
    script = tmp_path / "sleep.py"
    script.write_text("import os, time\nprint(os.getpid(), flush=True)\ntime.sleep(120)\n")
    job = launch(str(launcher), [sys.executable, str(script)], dict(os.environ), str(tmp_path))
    pid = int(job.stdout.readline())
    job._conn.close()  # what a killed task process leaves behind: its end of the connection closed
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the job outlived its task")


def test_a_job_for_another_interpreter_or_a_bad_request_is_refused(launcher: Path, tmp_path: Path) -> None:
    script = tmp_path / "x.py"
    script.write_text("print('ran')\n")
    with pytest.raises(LaunchRefused, match="this launcher runs"):
        launch(str(launcher), ["/usr/bin/python-other", str(script)], dict(os.environ), str(tmp_path))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:  # a run request without its descriptors
        conn.settimeout(10)
        conn.connect(str(launcher))
        conn.sendall(encode({"op": "run", "argv": [sys.executable, str(script)], "env": {}, "cwd": str(tmp_path)}))
        reply, _ = read_message(conn)
    assert reply == {"error": "a run request carries two file descriptors (stdin, output)"}
    assert ping(launcher) is not None  # still serving


def test_a_launcher_that_is_not_there_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        launch(str(tmp_path / "none.sock"), [sys.executable, "x.py"], {}, str(tmp_path))


def test_jobs_run_side_by_side(launcher: Path, tmp_path: Path) -> None:
    script = tmp_path / "nap.py"
    script.write_text("import sys, time\ntime.sleep(1)\nprint(sys.argv[1])\n")
    jobs = [launch(str(launcher), [sys.executable, str(script), str(i)], dict(os.environ), str(tmp_path))
            for i in range(3)]
    assert [j.stdout.read() for j in jobs] == ["0\n", "1\n", "2\n"]
    assert [j.wait(timeout=30) for j in jobs] == [0, 0, 0]
