"""9. Batch scoring: `mlopsctl score NAME/VERSION` on 200k rows vs an in-process pandas floor."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

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
    interleaved,
    log,
    run_cmd,
)
from bench.localstack import LocalStack, shared_stack

NAME = "score"
ROWS = 200_000
#: --quick checks the same path on a tenth of the rows, once
ROWS_QUICK = 20_000
TITLE = f"9. Batch scoring (build-model's defaults on diabetes; {ROWS:,} rows resampled from diabetes, one Parquet file)"
TARGET_RATIO = 2.0
DESCRIPTION = f"""
The model: a version registered by `mlopsctl run build-model` with its defaults (max_depth 80, 100 trees) on
scikit-learn's diabetes data, on the running local stack (not timed). The data: {ROWS:,} rows drawn with
replacement from diabetes' 442 (numpy `default_rng(0)`), its 10 input columns only, in one Parquet file
(`bench/score.py`, cached in `bench/.cache/data/`). mlopsctl: `mlopsctl score NAME/VERSION --data FILE --output
DIR` (a new directory each run), trigger to exit (Airflow scheduling, the Spark job reading the file, predicting
with `mlflow.pyfunc.spark_udf` on the stack's Connect server, writing Parquet, its summary pass and MLflow run,
the result fetch). Floor: one Python process (`bench/peers/inprocess_score.py`) that loads the same version from
the same MLflow server, reads the file with pandas, predicts and writes the same columns as Parquet. The two take
turns, run by run. --quick: {ROWS_QUICK:,} rows, once.
"""
ENGINES = [("mlopsctl", "mlopsctl score NAME/VERSION (trigger to exit)"),
           ("floor", "in-process floor: load the version, pandas read_parquet, predict, to_parquet")]


def rows_of(ctx: BenchContext) -> int:
    return ROWS_QUICK if ctx.quick else ROWS


def expected_rows(ctx: BenchContext) -> list[tuple[str, str]]:
    return [(f"{NAME}.{key}", f"{what}, {rows_of(ctx):,} rows") for key, what in ENGINES]


def dataset(n: int) -> Path:
    """n rows drawn with replacement from diabetes (numpy seed 0), its input columns only, as one Parquet file
    (cached)."""
    path = CACHE_DIR / "data" / f"diabetes_resampled_{n}.parquet"
    if path.exists():
        return path
    import numpy as np
    from sklearn.datasets import load_diabetes

    X = load_diabetes(as_frame=True).data.astype("float64")
    picks = np.random.default_rng(0).integers(0, len(X), n)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    X.iloc[picks].reset_index(drop=True).to_parquet(tmp, index=False)
    tmp.replace(path)
    return path


def register_model(st: LocalStack) -> str:
    """`mlopsctl run build-model` with its defaults -> the NAME/VERSION it registered."""
    res = st.mlopsctl("run", "build-model", "--json", timeout=900, check=False)
    if res.returncode != 0:
        raise NotMeasured(f"mlopsctl run build-model exited {res.returncode}: {(res.stderr or res.stdout)[-300:]}")
    registered = (((json.loads(res.stdout).get("mlflow") or {}).get("run") or {}).get("registered_model")) or {}
    if not registered.get("version"):
        raise NotMeasured("mlopsctl run build-model registered no model version")
    return f"{registered['name']}/{registered['version']}"


def score_once(st: LocalStack, engine: str, model: str, data: Path, out: Path, floors: list[dict]) -> float:
    """One scoring run of `engine` into a new output under `out`; the wall seconds."""
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{engine}-{len(list(out.iterdir()))}"
    if engine == "floor":
        res = run_cmd([str(VENV_BIN / "python"), str(BENCH_DIR / "peers" / "inprocess_score.py"),
                       "--tracking-uri", st.mlflow_url, "--model", model, "--data", str(data),
                       "--output", f"{target}.parquet"], env=bench_env(), timeout=900)
        floors.append(json.loads(res.stdout.strip().splitlines()[-1]))
        return res.wall
    res = st.mlopsctl("score", model, "--data", str(data), "--output", str(target), timeout=900, check=False)
    if res.returncode != 0:
        raise NotMeasured(f"mlopsctl score exited {res.returncode}: {(res.stderr or res.stdout)[-300:]}")
    return res.wall


def run(ctx: BenchContext) -> list[Row]:
    st = shared_stack(ctx)
    n = rows_of(ctx)
    data = dataset(n)
    ctx.check_budget("registering the model to score with")
    log("score: registering a model (mlopsctl run build-model, not timed)")
    model = register_model(st)
    floors: list[dict[str, Any]] = []
    m = Measurements(NAME)
    once = partial(score_once, st, model=model, data=data, out=ctx.work / "scored", floors=floors)
    interleaved(ctx, m, ENGINES, once, ctx.runs, warmup=not ctx.quick)
    floor: Stats | None = m.figures.get("floor")

    def annotate(key: str, row: Row, s: Stats) -> None:
        if key == "mlopsctl" and floor:
            ratio = s.median / floor.median
            row.peer = f"{ratio:.2f}x floor (+{s.median - floor.median:.1f} s)"
            row.target = f"<= {TARGET_RATIO}x the in-process floor"
            row.verdict = "met" if ratio <= TARGET_RATIO else "missed"
        if key == "floor" and floors:
            steps = floors[-1]["steps"]
            row.note = "last run: " + ", ".join(f"{k} {v:.2f} s" for k, v in steps.items())
        if s.n < 5:
            row.note = "; ".join(filter(None, [row.note, f"{s.n} run(s)"]))

    ctx.shared[NAME] = {"model": model, "rows": n, "data": str(data),
                        **{k: v.as_dict() for k, v in m.figures.items()}, "floor_runs": floors}
    return m.rows([(key, f"{what}, {n:,} rows") for key, what in ENGINES], annotate)
