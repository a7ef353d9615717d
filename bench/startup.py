"""1. CLI start-up: `mlopsctl --help` / `--version` vs `airflow version`, `airflowctl --help`, `python -c pass`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from bench.common import (
    CACHE_DIR,
    VENV_BIN,
    BenchContext,
    Measurements,
    NotMeasured,
    Row,
    Stats,
    bench_env,
    log,
    repeat,
    run_cmd,
)

NAME = "startup"
TITLE = "1. CLI start-up (process start to exit)"
DESCRIPTION = """
Wall time of a fresh process, one warm-up run first (page cache warm; none in --quick). `airflowctl` is PyPI's
`apache-airflow-ctl`, installed into a throwaway venv under bench/.cache (install not timed). `airflow version`
runs with AIRFLOW_HOME in a temp dir.
"""

AIRFLOWCTL_VENV = CACHE_DIR / "airflowctl-venv"

ROWS = [
    ("python_pass", "python -c pass (floor)"),
    ("mlopsctl_help", "mlopsctl --help"),
    ("mlopsctl_version", "mlopsctl --version"),
    ("airflowctl_help", "airflowctl --help (apache-airflow-ctl)"),
    ("airflow_version", "airflow version"),
]


def expected_rows(ctx: BenchContext) -> list[tuple[str, str]]:
    return [(f"{NAME}.{k}", w) for k, w in ROWS]


def ensure_airflowctl() -> Path:
    """airflowctl from PyPI in a throwaway venv (uv if present, else venv + pip). Not timed."""
    exe = AIRFLOWCTL_VENV / "bin" / "airflowctl"
    if exe.exists():
        return exe
    log("installing apache-airflow-ctl into bench/.cache/airflowctl-venv (not timed)")
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    uv = shutil.which("uv")
    attempts: list[list[list[str]]] = []
    if uv:
        attempts.append([[uv, "venv", "-q", str(AIRFLOWCTL_VENV)],
                         [uv, "pip", "install", "-q", "--python", str(AIRFLOWCTL_VENV / "bin" / "python"),
                          "apache-airflow-ctl"]])
    attempts.append([[sys.executable, "-m", "venv", str(AIRFLOWCTL_VENV)],
                     [str(AIRFLOWCTL_VENV / "bin" / "pip"), "install", "-q", "apache-airflow-ctl"]])
    last = ""
    for steps in attempts:
        shutil.rmtree(AIRFLOWCTL_VENV, ignore_errors=True)
        try:
            for argv in steps:
                subprocess.run(argv, check=True, env=env, capture_output=True, timeout=600)
            break
        except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            stderr = getattr(exc, "stderr", b"") or b""
            last = stderr.decode(errors="replace")[-200:] if isinstance(stderr, bytes) else str(exc)
    else:
        shutil.rmtree(AIRFLOWCTL_VENV, ignore_errors=True)
        raise NotMeasured(f"could not install apache-airflow-ctl: {last or 'unknown error'}")
    if not exe.exists():
        raise NotMeasured("apache-airflow-ctl installed no `airflowctl` script")
    return exe


def _timed(argv: list[str], env: dict[str, str]) -> float:
    return run_cmd(argv, env=env, timeout=120).wall


def run(ctx: BenchContext) -> list[Row]:
    runs = ctx.runs if ctx.quick else max(7, ctx.runs)
    warmup = 0 if ctx.quick else 1  # --quick: the one run is the figure
    af_home = ctx.work / "airflow-home-startup"
    af_home.mkdir(parents=True, exist_ok=True)
    env = bench_env({"AIRFLOW_HOME": str(af_home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"})
    py = str(VENV_BIN / "python")
    cmds: dict[str, list[str]] = {
        "python_pass": [py, "-c", "pass"],
        "mlopsctl_help": [str(VENV_BIN / "mlopsctl"), "--help"],
        "mlopsctl_version": [str(VENV_BIN / "mlopsctl"), "--version"],
        "airflow_version": [str(VENV_BIN / "airflow"), "version"],
    }
    m = Measurements(NAME)
    try:
        cmds["airflowctl_help"] = [str(ensure_airflowctl()), "--help"]
    except NotMeasured as exc:
        m.reasons["airflowctl_help"] = str(exc)
    for key, what in ROWS:
        if key not in cmds:
            continue
        n = 1 if ctx.quick and key == "airflow_version" else runs  # ~5-20 s a call: one in --quick
        log(f"startup: {' '.join(Path(c).name if i == 0 else c for i, c in enumerate(cmds[key]))} x{n}")
        m.take(key, what, lambda argv=cmds[key], n=n: repeat(lambda: _timed(argv, env), n, warmup))

    stats: dict[str, Stats] = m.figures
    af = stats.get("airflow_version")

    def annotate(key: str, row: Row, s: Stats) -> None:
        if af and key != "airflow_version":
            row.peer = f"{s.median / af.median:.3f}x airflow version"
        if key == "mlopsctl_help":
            row.target = "<= 0.25 s and <= 1/15 of airflow version"
            ok_abs = s.median <= 0.25
            ok_rel = bool(af) and s.median <= af.median / 15
            row.verdict = "met" if ok_abs and ok_rel else "missed"
            if af:
                row.note = f"airflow version is {af.median / s.median:.1f}x slower"
            if not ok_abs:
                row.note += "; over 0.25 s absolute"
            floor = stats.get("python_pass")
            if floor:
                row.note += f"; {s.median - floor.median:.3f} s above the bare interpreter"

    rows = m.rows(ROWS, annotate)
    ctx.shared["startup"] = {k: v.as_dict() for k, v in stats.items()}
    return rows
