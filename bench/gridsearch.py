"""4. Grid search on one machine: `mlopsctl grid-search` and `grid-search --spark` vs plain GridSearchCV."""

from __future__ import annotations

import json
import os
import sys
from functools import partial

from bench.common import (
    BENCH_DIR,
    CACHE_DIR,
    VENV_BIN,
    BenchContext,
    Measurements,
    NotMeasured,
    Row,
    Stats,
    bench_env,
    log,
    run_cmd,
)
from bench.localstack import shared_stack

NAME = "grid"
TITLE = "4. Grid search on one machine (make_friedman1 data, 12-point grid, 3-fold CV)"
GRID = {"max_depth": [4, 8, 12, 16], "n_estimators": [10, 20, 30]}
CV = 3
SIZES_FULL = [(5_000, 3), (20_000, 1), (80_000, 1)]  # (rows, timed runs): bigger ones take minutes
SIZES_QUICK = [(2_000, 1)]
DESCRIPTION = f"""
Grid max_depth {GRID['max_depth']} x n_estimators {GRID['n_estimators']} = 12 points x {CV} folds = 36 fits, on
`make_friedman1(n, n_features=10, noise=1, random_state=0)` written to Parquet. Same protocol everywhere: 20%
held out (random_state 42), shuffled 3-fold CV on the rest, refit/score of the best point. Peer: a Python
script running `GridSearchCV(RandomForestRegressor(), n_jobs=-1)` (process wall, imports and data load
included). mlopsctl: `mlopsctl grid-search [--spark] --data ... --no-register` on the running local stack,
trigger to exit (Airflow scheduling, Spark preprocessing, MLflow logging of 12 child runs + heatmap included);
`--spark` runs as a Spark Connect client of the stack's Connect server (`local[*]`). Efficiency = sum of single fit+score times (GridSearchCV's own timings, same run)
/ (wall x {os.cpu_count()} cores). Bigger sizes get fewer runs (each is minutes), as the runs column says.
"""

ENGINES = [
    ("peer", "GridSearchCV(n_jobs=-1)"),
    ("mlopsctl", "mlopsctl grid-search"),
    ("spark", "mlopsctl grid-search --spark (the stack's Connect server, local[*])"),
]
#: wall-time ratio to the peer each engine aims at (the whole pipeline: Airflow, preprocessing, MLflow logging)
TARGETS = {"mlopsctl": 1.8, "spark": 2.2}


def sizes(ctx: BenchContext) -> list[tuple[int, int]]:
    return SIZES_QUICK if ctx.quick else SIZES_FULL


def expected_rows(ctx: BenchContext) -> list[tuple[str, str]]:
    return [(f"{NAME}.{n}.{key}", f"{what}, {n:,} rows") for n, _r in sizes(ctx) for key, what in ENGINES]


def dataset(n: int):
    """make_friedman1 with a fixed seed, as Parquet (cached)."""
    path = CACHE_DIR / "data" / f"friedman1_{n}.parquet"
    if path.exists():
        return path
    import pandas as pd
    from sklearn.datasets import make_friedman1

    X, y = make_friedman1(n_samples=n, n_features=10, noise=1.0, random_state=0)
    df = pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
    df["target"] = y
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    df.to_parquet(tmp, index=False)
    tmp.replace(path)
    return path


def run_peer(data) -> dict:
    res = run_cmd(
        [str(VENV_BIN / "python"), str(BENCH_DIR / "peers" / "gridsearchcv.py"), str(data),
         "--grid", json.dumps(GRID), "--cv", str(CV)],
        env=bench_env(), timeout=1800,
    )
    doc = json.loads(res.stdout.strip().splitlines()[-1])
    doc["wall"] = res.wall
    doc["cpu"] = res.cpu
    return doc


def grid_args(data, spark: bool) -> list[str]:
    args = ["grid-search", "--max-depth", ",".join(map(str, GRID["max_depth"])),
            "--n-estimators", ",".join(map(str, GRID["n_estimators"])), "--cv", str(CV),
            "--data", str(data), "--no-register", "--json"]
    if spark:
        args.insert(1, "--spark")
    return args


def run_mlopsctl(ctx: BenchContext, data, spark: bool) -> dict:
    st = shared_stack(ctx)
    res = st.mlopsctl(*grid_args(data, spark), timeout=1800, check=False)
    if res.returncode != 0:
        raise NotMeasured(f"mlopsctl grid-search{' --spark' if spark else ''} exited {res.returncode}: "
                          f"{(res.stderr or res.stdout)[-300:].strip()}")
    try:
        doc = json.loads(res.stdout)
    except ValueError:
        doc = {}
    if spark and doc.get("dag_run_id"):  # the training table this run wrote: reused by `scaleout`
        try:
            feats = training_path(st.state / "work", "grid_search_spark", doc["dag_run_id"])
        except Exception as exc:  # noqa: BLE001 - only an optimisation for `scaleout`
            log(f"grid: training table of {doc['dag_run_id']} not found: {exc}")
            feats = None
        if feats is not None:
            ctx.shared.setdefault("grid_features", {})[str(data)] = {
                "run_id": doc["dag_run_id"], "work_dir": str(st.state / "work"), "path": str(feats)}
    return {"wall": res.wall, "cpu": res.cpu, "duration_s": doc.get("duration_s"),
            "best_cv_rmse": (doc.get("metrics") or {}).get("best_cv_rmse") if isinstance(doc.get("metrics"), dict)
            else None}


def training_path(work_dir, dag_id: str, run_id: str):
    """Where the project's preprocess job put the training table of a run (None if it is not there)."""
    import importlib.util

    from mlopsctl.paths import bundled_spark_jobs_dir

    spec = importlib.util.spec_from_file_location("_bench_jobs_data",
                                                  bundled_spark_jobs_dir() / "mlopsctl_jobs" / "data.py")
    if spec is None or spec.loader is None:
        return None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    from pathlib import Path

    path = Path(mod.training_path(str(work_dir), dag_id, run_id))
    return path if path.exists() else None


def measure(ctx: BenchContext, engine: str, what: str, data, n: int, runs: int) -> list[dict]:
    """`runs` timed runs of one engine on the n-row data set (the peer warmed up once, on the first size)."""
    ctx.check_budget(f"{what} on {n:,} rows")
    if engine == "peer":
        if n == sizes(ctx)[0][0] and not ctx.quick:
            run_peer(data)  # warm-up (imports, page cache); --quick: the one run is the figure
        return [run_peer(data) for _ in range(runs)]
    return [run_mlopsctl(ctx, data, spark=(engine == "spark")) for _ in range(runs)]


def annotate(per: dict[str, list[dict]], work: float | None, cores: int, extra: dict,
             rkey: str, row: Row, s: Stats) -> None:
    """Efficiency, the ratio to the peer and the notes of one engine's row on one data size."""
    key = rkey.split(".")[-1]
    peer_wall = Stats([d["wall"] for d in per["peer"]]) if per["peer"] else None
    notes = []
    if work:
        eff = work / (s.median * cores)
        notes.append(f"efficiency {eff:.0%}")
        extra[f"{key}_efficiency"] = eff
    if key == "peer":
        d0 = per[key][0]
        notes.append(f"search {Stats([d['search_wall'] for d in per[key]]).median:.1f} s in-process;"
                     f" fit work {work:.1f} s; held-out rmse {d0['rmse']:.3f}")
    elif peer_wall:
        ratio = s.median / peer_wall.median
        row.peer = f"{ratio:.2f}x GridSearchCV"
        row.target = f"<= {TARGETS[key]}x GridSearchCV"
        row.verdict = "met" if ratio <= TARGETS[key] else "missed"
        notes.append(f"+{s.median - peer_wall.median:.1f} s over the peer")
        durs = [d["duration_s"] for d in per[key] if d.get("duration_s")]
        if durs:
            notes.append(f"Airflow run duration {Stats(durs).median:.1f} s")
    if s.n < 5:
        notes.append(f"{s.n} run(s) to fit the time budget")
    row.note = "; ".join(notes)


def run(ctx: BenchContext) -> list[Row]:
    cores = os.cpu_count() or 1
    rows: list[Row] = []
    extra: dict[str, dict] = {}
    m = Measurements(NAME)  # keyed "{rows}.{engine}"
    for n, runs in sizes(ctx):
        data = dataset(n)
        for key, what in ENGINES:
            log(f"grid: {what} on {n:,} rows x{runs}")
            m.take(f"{n}.{key}", what, partial(measure, ctx, key, what, data, n, runs), keep_going=True)
        per: dict[str, list[dict]] = {k: m.figures.get(f"{n}.{k}", []) for k, _ in ENGINES}
        work = (Stats([d["sum_fit_time"] + d["sum_score_time"] for d in per["peer"]]).median
                if per["peer"] else None)
        extra[str(n)] = {"work_s": work, **{k: [{kk: vv for kk, vv in d.items() if kk != "best_params"}
                                                 for d in v] for k, v in per.items()}}
        rows += m.rows([(f"{n}.{key}", f"{what}, {n:,} rows") for key, what in ENGINES],
                       partial(annotate, per, work, cores, extra[str(n)]),
                       stats=lambda measured: Stats([d["wall"] for d in measured]))
    ctx.shared["grid"] = {"grid": GRID, "cv": CV, "cores": cores, "sizes": extra}
    return rows
