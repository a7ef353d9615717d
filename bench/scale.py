"""8. Data at scale: `run build-model` and the grid searches on 300k and 1M rows of a synthetic CSV.

`python -m bench.scale breakdown --rows N` prints where the time of `preprocess_data` and `train_model` goes
step by step, against a Spark Connect server started the way `dev start` starts it (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import (
    BENCH_DIR,
    CACHE_DIR,
    ROOT,
    VENV_BIN,
    BenchContext,
    Measurements,
    NotMeasured,
    Row,
    Stats,
    bench_env,
    interleaved,
    log,
    planned_rows,
    run_cmd,
)
from bench.localstack import shared_stack

NAME = "scale"
TITLE = "8. Data at scale (synthetic CSV: 19 columns, 5 text with up to 7k categories, 3% NA targets)"
TARGET = "price"
TEXT_COLUMNS = {"make": 60, "model": 7_000, "colour": 24, "fuel type": 5, "region": 1_500}  # name -> categories
#: (rows, max_depth, n_estimators) of `run build-model` at each size, as in the issue's measurements
BUILD_SIZES = [(300_000, 12, 20), (1_000_000, 8, 10)]
#: --quick checks the same path on a file a tenth the size: the smoke run proves the rows can be measured, and
#: 300k rows cost a minute per engine on a 2-core machine
BUILD_SIZES_QUICK = [(30_000, 12, 20)]
GRID_ROWS = 300_000
GRID = {"max_depth": [8, 12], "n_estimators": [10, 20]}
CV = 3
NOT_IN_QUICK = {
    f"{NAME}.1000000.mlopsctl": "1M rows: minutes per run, beyond the smoke run's budget",
    f"{NAME}.1000000.floor": "1M rows: minutes per run, beyond the smoke run's budget",
    f"{NAME}.grid.peer": "the 300k-row grid is minutes per engine, beyond the smoke run's budget",
    f"{NAME}.grid.mlopsctl": "the 300k-row grid is minutes per engine, beyond the smoke run's budget",
    f"{NAME}.grid.spark": "the 300k-row grid is minutes per engine, beyond the smoke run's budget",
}
DESCRIPTION = f"""
A synthetic CSV shaped like a public used-car file (`bench/scale.py`, numpy seed 0): 19 columns, of which 13
numeric (some with NA tokens), 5 text ({', '.join(f'{k!r} {v:,}' for k, v in TEXT_COLUMNS.items())} categories)
and the target `{TARGET}` with 3% NA. `mlopsctl run build-model --data FILE --target {TARGET}` on the running local
stack (trigger to exit) against the in-process floor: one Python process (`bench/peers/inprocess_build.py
--data`) that reads the CSV with pandas, types it as the pipeline does (`bench/peers/raw_csv.py`), fits the same
Pipeline (median fill and ordinal codes learnt on the training split, the forest with n_jobs=-1) and logs the
same run to the same MLflow. 300k rows: max_depth 12, 20 trees; 1M rows: max_depth 8, 10 trees.
`grid-search` and `grid-search --spark` against GridSearchCV (`bench/peers/gridsearchcv.py` on the same CSV)
on {GRID_ROWS:,} rows, grid {GRID}, cv {CV}. Each pair takes turns, run by run, in the same bench run.
--quick: build-model and its floor on 30k rows, once.
"""


# --------------------------------------------------------------------------------------------- data
def dataset(n: int) -> Path:
    """The n-row synthetic CSV (cached): deterministic, numpy seed 0."""
    path = CACHE_DIR / "data" / f"scale_{n}.csv"
    if path.exists():
        return path
    frame = synthetic_frame(n)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    frame.to_csv(tmp, index=False)
    tmp.replace(path)
    return path


def synthetic_frame(n: int, seed: int = 0) -> Any:
    """19 columns: 13 numeric, 5 text, the target; NA tokens in some columns, 3% of the targets NA."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)

    def categories(name: str, k: int) -> Any:
        # skewed frequencies, as real categories are: a few common values, a long tail
        weights = 1.0 / np.arange(1, k + 1) ** 0.8
        codes = rng.choice(k, size=n, p=weights / weights.sum())
        labels = np.array([f"{name.split()[0][:3]}-{i:04d}" for i in range(k)], dtype=object)
        return codes, labels[codes]

    cols: dict[str, Any] = {}
    text_codes = {}
    for name, k in TEXT_COLUMNS.items():
        text_codes[name], cols[name] = categories(name, k)
    year = rng.integers(1995, 2025, n)
    mileage = np.round(rng.gamma(2.0, 30_000.0, n) * (2025 - year) / 10, 0)
    engine = np.round(rng.uniform(0.9, 4.5, n), 1)
    power = np.round(engine * rng.normal(70, 12, n), 0)
    numeric = {
        "year": year,
        "mileage": mileage,
        "engine size": engine,
        "power_hp": power,
        "doors": rng.integers(2, 6, n),
        "seats": rng.integers(2, 9, n),
        "owners": rng.integers(1, 6, n).astype("float64"),
        "lat": np.round(rng.uniform(49.9, 58.6, n), 4),
        "lon": np.round(rng.uniform(-7.5, 1.7, n), 4),
        "weight (kg)": np.round(900 + engine * 250 + rng.normal(0, 80, n), 0),
        "co2": np.round(80 + engine * 40 + rng.normal(0, 10, n), 0),
        "tax": rng.choice([0, 20, 35, 150, 165, 190, 305, 580], n),
        "mpg": np.round(rng.uniform(25, 75, n), 1),
    }
    price = (
        30_000 * np.exp(-(2025 - year) / 8) + power * 40 - mileage * 0.03
        + (text_codes["model"] % 97) * 90 + text_codes["make"] * 60 + (text_codes["region"] % 13) * 40
        + rng.normal(0, 1_500, n)
    )
    cols.update({k: v for k, v in numeric.items()})
    cols[TARGET] = np.round(np.maximum(price, 500), 0)
    order = ["make", "model", "year", "mileage", "fuel type", "engine size", "power_hp", "doors", "seats",
             "colour", "owners", "lat", "lon", "region", "weight (kg)", "co2", "tax", "mpg", TARGET]
    frame = pd.DataFrame({c: cols[c] for c in order})
    # missing values as the tokens files carry: 3% NA targets, some NA/empty/null features
    for col, share, token in ((TARGET, 0.03, "NA"), ("mileage", 0.02, ""), ("owners", 0.08, "NA"),
                              ("power_hp", 0.01, "null"), ("colour", 0.02, "NA"), ("region", 0.01, "")):
        mask = rng.random(n) < share
        frame[col] = frame[col].astype(object)
        frame.loc[mask, col] = token
    return frame


# --------------------------------------------------------------------------------------------- rows
BUILD_ENGINES = [("mlopsctl", "mlopsctl run build-model (trigger to exit)"),
                 ("floor", "in-process floor: pandas read_csv, the same typing, Pipeline and MLflow logging")]
GRID_ENGINES = [("peer", "GridSearchCV(n_jobs=-1) over the same Pipeline on the CSV read with pandas"),
                ("mlopsctl", "mlopsctl grid-search"),
                ("spark", "mlopsctl grid-search --spark")]
#: the wall-time ratio each row aims at, against its row's peer
TARGETS = {"300000.mlopsctl": 1.4, "1000000.mlopsctl": 1.3, "grid.mlopsctl": 1.1, "grid.spark": 1.3}


def build_sizes(ctx: BenchContext) -> list[tuple[int, int, int]]:
    return BUILD_SIZES_QUICK if ctx.quick else BUILD_SIZES


def expected_rows(ctx: BenchContext) -> list[tuple[str, str]]:
    rows = [(f"{NAME}.{n}.{key}", f"{what}, {n:,} rows, max_depth {d}, {t} trees")
            for n, d, t in build_sizes(ctx) for key, what in BUILD_ENGINES]
    grid = f"{GRID_ROWS:,} rows, {len(GRID['max_depth'])}x{len(GRID['n_estimators'])} grid, cv {CV}"
    return rows + [(f"{NAME}.grid.{key}", f"{what}, {grid}") for key, what in GRID_ENGINES]


def build_once(ctx: BenchContext, engine: str, csv: Path, depth: int, trees: int) -> float:
    st = shared_stack(ctx)
    if engine == "floor":
        res = run_cmd([str(VENV_BIN / "python"), str(BENCH_DIR / "peers" / "inprocess_build.py"),
                       "--tracking-uri", st.mlflow_url, "--max-depth", str(depth), "--n-estimators", str(trees),
                       "--data", str(csv), "--target", TARGET], env=bench_env(), timeout=1800)
        return res.wall
    res = st.mlopsctl("run", "build-model", "--data", str(csv), "--target", TARGET, "--max-depth", str(depth),
                      "--n-estimators", str(trees), timeout=1800, check=False)
    if res.returncode != 0:
        raise NotMeasured(f"mlopsctl run build-model exited {res.returncode}: {(res.stderr or res.stdout)[-300:]}")
    return res.wall


def grid_once(ctx: BenchContext, engine: str, csv: Path) -> float:
    if engine == "peer":
        res = run_cmd([str(VENV_BIN / "python"), str(BENCH_DIR / "peers" / "gridsearchcv.py"), str(csv),
                       "--grid", json.dumps(GRID), "--cv", str(CV), "--target", TARGET], env=bench_env(),
                      timeout=1800)
        return res.wall
    args = ["grid-search", "--max-depth", ",".join(map(str, GRID["max_depth"])),
            "--n-estimators", ",".join(map(str, GRID["n_estimators"])), "--cv", str(CV), "--data", str(csv),
            "--target", TARGET, "--no-register"]
    if engine == "spark":
        args.insert(1, "--spark")
    res = shared_stack(ctx).mlopsctl(*args, timeout=1800, check=False)
    if res.returncode != 0:
        raise NotMeasured(f"mlopsctl {' '.join(args[:2])} exited {res.returncode}: "
                          f"{(res.stderr or res.stdout)[-300:]}")
    return res.wall


def run(ctx: BenchContext) -> list[Row]:
    omitted = NOT_IN_QUICK if ctx.quick else {}
    m = Measurements(NAME)
    for n, depth, trees in build_sizes(ctx):
        if f"{NAME}.{n}.mlopsctl" in omitted or not ctx.wants(f"{NAME}.{n}."):
            continue
        csv = dataset(n)
        runs = 1 if ctx.quick else min(ctx.runs, 3)
        interleaved(ctx, m, BUILD_ENGINES, lambda e, csv=csv, d=depth, t=trees: build_once(ctx, e, csv, d, t),
                    runs, warmup=not ctx.quick, prefix=str(n))
    if f"{NAME}.grid.mlopsctl" not in omitted and ctx.wants(f"{NAME}.grid."):
        csv = dataset(GRID_ROWS)
        interleaved(ctx, m, GRID_ENGINES, lambda e: grid_once(ctx, e, csv), 1 if ctx.quick else 2,
                    warmup=False, prefix="grid")

    def annotate(key: str, row: Row, s: Stats) -> None:
        prefix, engine = key.rsplit(".", 1)
        peer_key = f"{prefix}.{'floor' if prefix != 'grid' else 'peer'}"
        peer = m.figures.get(peer_key)
        if engine in ("floor", "peer") or peer is None:
            return
        ratio = s.median / peer.median
        name = "GridSearchCV" if prefix == "grid" else "the floor"
        row.peer = f"{ratio:.2f}x {name} (+{s.median - peer.median:.1f} s)"
        if key in TARGETS:
            row.target = f"<= {TARGETS[key]}x {name}"
            row.verdict = "met" if ratio <= TARGETS[key] else "missed"

    planned = planned_rows(sys.modules[__name__], ctx)
    rows = m.rows([(k.removeprefix(f"{NAME}."), w) for k, w in planned], annotate)
    ctx.shared[NAME] = {"load_avg_at_end": os.getloadavg(),
                        **{k: v.as_dict() for k, v in m.figures.items()}}
    return rows


# --------------------------------------------------------------------------------------------- breakdown
def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _noop(df: Any) -> None:
    """Run a DataFrame's whole plan, writing nothing (Spark's `noop` sink)."""
    df.write.format("noop").mode("overwrite").save()


def step_breakdown(spark: Any, csv: Path, work: Path, max_depth: int, n_estimators: int,
                   jobs_dir: Path = ROOT / "spark_jobs", fit: bool = True) -> dict[str, float]:
    """Seconds per step of preprocess_data and train_model on one CSV, each step an action of its own.

    Spark's steps are lazy, so each is timed as the action that runs it: the CSV read as a `noop` write of the
    text columns; the typing pass and the statistics pass as the aggregations `load_source` and
    `prepare_training` run; the training table's plan as a `noop` write; the write as `write_training`; the
    read back as `read_training`; then the fit (the model's encoding and median fill included) and the MLflow
    logging of train_model (to a local file store)."""
    sys.path.insert(0, str(jobs_dir))
    import train_model
    from mlopsctl_jobs import data

    t: dict[str, float] = {}
    raw = spark.read.option("header", True).option("inferSchema", False).csv(str(csv))
    t["csv read (text), noop"], _ = _timed(lambda: _noop(raw))
    t["load_source (typing pass)"], typed = _timed(lambda: data.load_source(spark, str(csv)))
    t["prepare_training (statistics pass)"], (training, _report) = _timed(
        lambda: data.prepare_training(typed, TARGET))
    t["training table, noop"], _ = _timed(lambda: _noop(training))
    out = work / "training.parquet"
    t["write_training"], _ = _timed(lambda: data.write_training(training, str(out)))
    t["read back through Spark, toPandas"], _ = _timed(lambda: spark.read.parquet(str(out)).toPandas())
    t["read_training (read back, to pandas)"], (X, y) = _timed(lambda: data.read_training(spark, str(out)))
    if not fit:
        return t
    t["fit"], result = _timed(lambda: train_model.run(X, y, max_depth=max_depth, n_estimators=n_estimators,
                                                      test_size=0.2, random_state=42))
    t["mlflow logging (file store)"], _ = _timed(lambda: _log_to_file_store(result, work))
    t["r2"] = result.metrics["r2"]
    return t


def _log_to_file_store(result: Any, work: Path) -> None:
    from mlopsctl_jobs import tracking

    tracking.quiet_mlflow_env()
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
    exp = mlflow.set_experiment("/bench/scale")
    with mlflow.start_run(experiment_id=exp.experiment_id) as run:
        mlflow.log_metrics(result.metrics)
        tracking.log_model(result.model, result.X_train, "bench-scale-rf", run.info.run_id,
                           {"max_depth": 0, "n_estimators": 0}, "bench",
                           holdout_rows=(result.X_test, result.y_test), target=TARGET)


def connect_server(state: Path, driver_memory: str | None, full_jit: bool = False) -> tuple[Any, str]:
    """A Spark Connect server as `dev start` runs it (`mlopsctl.devenv.stack.spark_argv`: local[*], the stack's
    heap unless `driver_memory` is given; `full_jit`: without the stack's C1-only JIT flag) on a free port
    -> (process, sc:// URL)."""
    import subprocess

    from bench.common import free_port, wait_until
    from mlopsctl.devenv.health import grpc_serving
    from mlopsctl.devenv.layout import StackLayout
    from mlopsctl.devenv.stack import C1_ONLY_JIT, spark_argv, spark_env
    from mlopsctl.settings import Settings

    port = free_port()
    extra = {"spark_driver_memory": driver_memory} if driver_memory else {}
    settings = Settings(_env_file=None, project_dir=state, state_dir=state / ".mlopsctl", spark_connect_port=port,
                        spark_master="local[*]", **extra)
    layout = StackLayout.from_settings(settings)
    layout.ensure()
    log(f"starting a Spark Connect server (local[*], heap {settings.spark_driver_memory}) on port {port}")
    argv = spark_argv(settings, layout)
    if full_jit:
        argv = [a.replace(f" {C1_ONLY_JIT}", "") for a in argv]
    with open(layout.log_file("spark"), "ab") as out:
        proc = subprocess.Popen(argv, env=spark_env(settings, layout), cwd=layout.spark_dir,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    wait_until(lambda: proc.poll() is None and grpc_serving("127.0.0.1", port), timeout=300, what="Spark server")
    return proc, settings.local_spark_remote


def breakdown_main(argv: list[str]) -> int:
    """Each --jobs-dir's steps (a client process each, in turn, on one server), at each --rows."""
    p = argparse.ArgumentParser(prog="python -m bench.scale breakdown")
    p.add_argument("--rows", type=int, action="append", required=True)
    p.add_argument("--driver-memory", default=None, help="the Spark server's heap (default: the stack's)")
    p.add_argument("--full-jit", action="store_true", help="the server without the stack's C1-only JIT flag")
    p.add_argument("--jobs-dir", type=Path, action="append", help="a spark_jobs folder to measure (repeatable; "
                   "default: this checkout's)")
    p.add_argument("--fit", action="store_true", help="also the fit and the MLflow logging (last --jobs-dir)")
    args = p.parse_args(argv)
    import subprocess
    import tempfile

    from bench.common import kill_group

    jobs_dirs = args.jobs_dir or [ROOT / "spark_jobs"]
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="scale-", dir=CACHE_DIR) as tmp:
        proc, url = connect_server(Path(tmp), args.driver_memory, args.full_jit)
        try:
            for n in args.rows:
                csv = dataset(n)
                for k, jobs in enumerate(jobs_dirs):
                    log(f"breakdown of {jobs} on {n:,} rows, load {os.getloadavg()[0]:.1f}")
                    work = Path(tmp) / f"w{n}-{k}"
                    work.mkdir()
                    fit = ["--fit"] if args.fit and k == len(jobs_dirs) - 1 else []
                    out = subprocess.run(
                        [sys.executable, "-m", "bench.scale", "steps", "--remote", url, "--csv", str(csv),
                         "--rows", str(n), "--work", str(work), "--jobs-dir", str(jobs), *fit],
                        cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True).stdout
                    print(json.dumps({"rows": n, "jobs": str(jobs), "load": os.getloadavg(),
                                      "steps": json.loads(out)}, indent=1), flush=True)
        finally:
            kill_group(proc)
    return 0


def steps_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scale steps")
    for flag in ("--remote", "--csv", "--work", "--jobs-dir"):
        p.add_argument(flag, required=True)
    p.add_argument("--rows", type=int, required=True)
    p.add_argument("--fit", action="store_true")
    args = p.parse_args(argv)
    os.environ["SPARK_REMOTE"] = args.remote
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.remote(args.remote).getOrCreate()
    spark.range(1).collect()
    depth, trees = next(((d, e) for r, d, e in BUILD_SIZES if r == args.rows), (12, 20))
    figures = step_breakdown(spark, Path(args.csv), Path(args.work), depth, trees, Path(args.jobs_dir), args.fit)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["breakdown"]:
        raise SystemExit(breakdown_main(sys.argv[2:]))
    if sys.argv[1:2] == ["steps"]:
        raise SystemExit(steps_main(sys.argv[2:]))
    raise SystemExit("usage: python -m bench.scale breakdown --rows N [--rows M] [--jobs-dir DIR ...] [--fit]")
