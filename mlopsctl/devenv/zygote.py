"""Start several `python -m MODULE ...` components as forks of one Python that has imported their code once.

`mlopsctl dev start` runs this module for the four Airflow components, which would otherwise each import
Airflow and their command modules on their own, on a machine whose start is CPU-bound. It imports the modules
named by ``--preload`` once, forks one child per requested component, and exits. Each child is the component
as its own command would have started it: its own session (its PID is its session and process group id), stdin
from /dev/null, stdout and stderr appended to its log file, its working directory, ``sys.argv`` and process
title from its command line, and the module run as ``__main__`` (`runpy`). The environment is this process's,
so one run starts only components that share it. The preloaded modules must leave no thread behind (a fork
copies only the calling thread), and their connections must not cross a fork.

Protocol: the request is one JSON list on stdin, ``[{"name", "argv", "cwd", "log"}, ...]``, where each
``argv`` is ``[sys.executable, "-m", MODULE, *args]``. Right after each fork this process writes one line,
``{"name": ..., "pid": ...}``, to stdout, and exits 0 once every child is forked; on a bad request or a failed
import it writes the error to stderr and exits 2 without forking anything.

Run by `mlopsctl dev start` as ``python -m mlopsctl.devenv.zygote --preload MODULE [--preload MODULE ...]``.
Design and measurements: docs/local-stack.md.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import runpy
import shlex
import sys
import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class Component:
    """One requested component: what its forked child runs."""

    name: str
    module: str
    argv: list[str]
    cwd: str
    log: str

    @classmethod
    def parse(cls, entry: object) -> Component:
        if not isinstance(entry, dict):
            raise TypeError(f"each component must be an object, not {entry!r}")
        name, argv, cwd, log = (entry.get(key) for key in ("name", "argv", "cwd", "log"))
        if not isinstance(name, str) or not isinstance(cwd, str) or not isinstance(log, str):
            raise TypeError(f"component {name!r}: name, cwd and log must be strings")
        if not (isinstance(argv, list) and all(isinstance(a, str) for a in argv)):
            raise TypeError(f"component {name!r}: argv must be a list of strings")
        if len(argv) < 3 or argv[:2] != [sys.executable, "-m"]:
            raise ValueError(f"component {name!r}: argv must start with {sys.executable} -m MODULE, not {argv!r}")
        return cls(name, argv[2], argv, cwd, log)


def fork(component: Component) -> int:
    """Fork the component's child; returns its PID here, and 0 in the child, which is then set up as the
    component (session, standard streams, working dir) and only has to run it."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    os.setsid()
    log = os.open(component.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)
    os.chdir(component.cwd)
    return 0


def run(component: Component) -> None:
    """Run the component's module as ``__main__`` with its command line (in its forked child)."""
    try:
        from setproctitle import setproctitle
    except ImportError:  # pragma: no cover - setproctitle comes with Airflow
        pass
    else:
        setproctitle(shlex.join(component.argv))
    sys.argv = [component.module, *component.argv[3:]]
    runpy.run_module(component.module, run_name="__main__", alter_sys=True)


def start(components: list[Component], preload: list[str]) -> Component | None:
    """Import ``preload``, then fork every component. Returns None here, and its `Component` in each child."""
    for module in preload:
        importlib.import_module(module)
    if threading.active_count() > 1:
        names = ", ".join(t.name for t in threading.enumerate() if t is not threading.main_thread())
        raise RuntimeError(f"the preloaded modules left threads running ({names}); a fork would not copy them")
    for component in components:
        pid = fork(component)
        if pid == 0:
            return component
        print(json.dumps({"name": component.name, "pid": pid}), flush=True)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlopsctl.devenv.zygote", description=__doc__.split("\n")[0])
    parser.add_argument("--preload", action="append", default=[], metavar="MODULE")
    args = parser.parse_args(argv)
    try:
        request = json.load(sys.stdin)
        if not isinstance(request, list) or not request:
            raise TypeError("the request must be a non-empty JSON list of components")
        components = [Component.parse(entry) for entry in request]
        child = start(components, args.preload)
    except Exception as exc:  # noqa: BLE001 - reported to the caller, which shows it with the component's log
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 2
    if child is not None:
        run(child)
    return 0


if __name__ == "__main__":
    sys.exit(main())
