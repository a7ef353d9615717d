"""7. Install footprint: a CLI-only `pip install mlopsctl` vs `pip install apache-airflow-ctl`, in fresh venvs."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

from bench.common import ROOT, BenchContext, NotMeasured, Row, bench_env, log, repeat, run_cmd

NAME = "install"
TITLE = "7. Install footprint (CLI-only install vs apache-airflow-ctl)"
DESCRIPTION = """
Fresh venvs built in this run with uv (its package cache warm; install time not timed): `mlopsctl` from this
checkout without extras (what a user who drives a hosted Airflow/MLflow installs), PyPI's `apache-airflow-ctl`
(the peer), and for reference the CLI-only install plus the full `mlflow` (the base install before it moved
to the `local` extra). Size = disk usage of site-packages in MB of 10^6 bytes (like du: allocated blocks,
hard links once); packages = *.dist-info folders. `--help` is timed in each fresh venv after one warm-up run (none in --quick).
Stored as bench/results/install.md/.json: `python -m bench --only install --results-dir DIR`, then DIR's
latest.* copied there (latest.md holds the full run of the other benchmarks).
"""

LIMIT_MB = 150
# venv name -> what it installs (the checkout path is filled in at run time)
VENVS = {
    "mlopsctl": ["{root}"],
    "airflowctl": ["apache-airflow-ctl"],
    "mlopsctl_full_mlflow": ["{root}", "mlflow>=3.1,<4"],
}
ROWS = [
    ("mlopsctl_mb", "mlopsctl CLI-only install: site-packages size", "MB"),
    ("airflowctl_mb", "apache-airflow-ctl install: site-packages size", "MB"),
    ("mlopsctl_full_mlflow_mb", "mlopsctl CLI-only + full mlflow (the former base install): size", "MB"),
    ("mlopsctl_packages", "mlopsctl CLI-only install: packages", "count"),
    ("airflowctl_packages", "apache-airflow-ctl install: packages", "count"),
    ("mlopsctl_full_mlflow_packages", "mlopsctl CLI-only + full mlflow: packages", "count"),
    ("mlopsctl_help", "mlopsctl --help (CLI-only venv)", "s"),
    ("airflowctl_help", "airflowctl --help (apache-airflow-ctl venv)", "s"),
]


def expected_rows(ctx: BenchContext) -> list[tuple[str, str]]:
    return [(f"{NAME}.{key}", what) for key, what, _unit in ROWS]


def _uv() -> list[str] | None:
    found = shutil.which("uv")
    if found:
        return [found]
    return [sys.executable, "-m", "uv"] if importlib.util.find_spec("uv") else None


def build_venv(path: Path, requirements: list[str]) -> Path:
    """A fresh venv at `path` with `requirements` installed; returns its site-packages. Not timed."""
    shutil.rmtree(path, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    python = path / "bin" / "python"
    uv = _uv()
    if uv:
        steps = [[*uv, "venv", "-q", str(path)], [*uv, "pip", "install", "-q", "--python", str(python), *requirements]]
    else:
        steps = [[sys.executable, "-m", "venv", str(path)], [str(path / "bin" / "pip"), "install", "-q", *requirements]]
    for argv in steps:
        proc = subprocess.run(argv, check=False, env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            raise NotMeasured(f"installing {', '.join(requirements)} failed: {proc.stderr.strip()[-200:]}")
    found = sorted(path.glob("lib/python*/site-packages"))
    if not found:
        raise NotMeasured(f"no site-packages in {path}")
    return found[0]


def disk_mb(folder: Path) -> float:
    """Disk usage like `du`: allocated blocks, each hard-linked inode counted once."""
    seen: set[tuple[int, int]] = set()
    blocks = 0
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                blocks += st.st_blocks
    return blocks * 512 / 1e6


def package_count(site_packages: Path) -> int:
    return sum(1 for p in site_packages.glob("*.dist-info") if p.is_dir())


def run(ctx: BenchContext) -> list[Row]:
    sizes: dict[str, float] = {}
    counts: dict[str, int] = {}
    help_times = {}
    venvs: dict[str, Path] = {}
    for name, reqs in VENVS.items():
        ctx.check_budget(f"the {name} install")
        log(f"install: fresh venv for {name}")
        site = build_venv(ctx.work / f"venv-{name}", [r.format(root=ROOT) for r in reqs])
        venvs[name] = site.parents[2]
        sizes[name], counts[name] = disk_mb(site), package_count(site)
        log(f"install: {name}: {sizes[name]:.0f} MB, {counts[name]} packages")
    runs = ctx.runs if ctx.quick else max(7, ctx.runs)
    warmup = 0 if ctx.quick else 1  # --quick: the one run is the figure
    for name, script in (("mlopsctl", "mlopsctl"), ("airflowctl", "airflowctl")):
        argv = [str(venvs[name] / "bin" / script), "--help"]
        help_times[name] = repeat(lambda argv=argv: run_cmd(argv, env=bench_env(), timeout=120).wall, runs,
                                  warmup)

    ours, peer, full = "mlopsctl", "airflowctl", "mlopsctl_full_mlflow"
    whats = {key: (what, unit) for key, what, unit in ROWS}

    def row(key: str, **fields) -> Row:
        what, unit = whats[key]
        return Row(NAME, f"{NAME}.{key}", what, unit=unit, **fields)

    def vs_peer(mine: float, theirs: float, what: str = "apache-airflow-ctl") -> str:
        return f"{mine / theirs:.2f}x {what}"

    rows = [
        row(f"{ours}_mb", value=sizes[ours], peer=vs_peer(sizes[ours], sizes[peer]), target=f"< {LIMIT_MB} MB",
            verdict="met" if sizes[ours] < LIMIT_MB else "missed",
            note=f"{sizes[full] / sizes[ours]:.1f}x smaller than with the full mlflow"),
        row(f"{peer}_mb", value=sizes[peer]),
        row(f"{full}_mb", value=sizes[full], peer=vs_peer(sizes[full], sizes[peer])),
        row(f"{ours}_packages", value=counts[ours], peer=vs_peer(counts[ours], counts[peer])),
        row(f"{peer}_packages", value=counts[peer]),
        row(f"{full}_packages", value=counts[full], peer=vs_peer(counts[full], counts[peer])),
        row(f"{ours}_help", stats=help_times[ours].as_dict(),
            peer=vs_peer(help_times[ours].median, help_times[peer].median, "airflowctl --help")),
        row(f"{peer}_help", stats=help_times[peer].as_dict()),
    ]
    ctx.shared["install"] = {"mb": sizes, "packages": counts, "help": {k: v.as_dict() for k, v in help_times.items()}}
    return rows
