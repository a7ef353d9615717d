"""The grid search's evaluation: every (max_depth, n_estimators, fold) fit, the same function whether joblib
threads run it on the job's machine (`run_grid_joblib`) or Spark's Python workers run it inside
``mapInPandas`` (`run_grid_spark`, `evaluate_task_batches`), and the aggregation into one result per point.

The workers unpickle `evaluate_task_batches` by reference to this module: they import this package, from
the wheel where it is installed (Databricks) or from the zip the session shipped (`mlopsctl_jobs.session`).
Given the jobs' version the task expects, each worker checks its installed wheel first and fits nothing when
it differs; the driver then raises `StaleJobsError` (`mlopsctl_jobs.installed`).
Before it fans out, the Spark grid checks that one fit fits a worker's memory (`check_worker_memory`).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from mlopsctl_jobs import installed, model
from mlopsctl_jobs.data import ROW_ID_COL, TARGET_COL, DataError, is_numeric, split_xy


class GridError(Exception):
    """Every grid point failed, or the grid cannot run where it was sent (retrying will not help)."""


def grid_points(max_depths: Sequence[int], n_estimators: Sequence[int]) -> list[tuple[int, int]]:
    return [(int(d), int(n)) for d in max_depths for n in n_estimators]


def fold_indices(n_rows: int, cv: int, random_state: int) -> list[tuple[Any, Any]]:
    from sklearn.model_selection import KFold

    if n_rows < cv:
        raise DataError(f"too few training rows ({n_rows}) for {cv}-fold cross-validation")
    return list(KFold(n_splits=cv, shuffle=True, random_state=random_state).split(range(n_rows)))


def evaluate_fold(
    X: Any, y: Any, max_depth: int, n_estimators: int, fold: int, train_idx: Any, test_idx: Any, random_state: int
) -> dict[str, Any]:
    """Fit one grid point on one fold; never raises (errors are returned, so other points survive)."""
    out: dict[str, Any] = {"max_depth": max_depth, "n_estimators": n_estimators, "fold": fold}
    try:
        fitted = model.train_model(X.iloc[train_idx], y.iloc[train_idx], max_depth, n_estimators, random_state)
        m = model.evaluate_model(fitted, X.iloc[test_idx], y.iloc[test_idx])
        out.update(rmse=m["rmse"], r2=m["r2"], error=None)
    except Exception as exc:  # noqa: BLE001 - recorded per grid point
        out.update(rmse=None, r2=None, error=f"{type(exc).__name__}: {exc}"[:500])
    return out


@dataclass
class PointResult:
    max_depth: int
    n_estimators: int
    cv_rmse_mean: float | None = None
    cv_rmse_std: float | None = None
    cv_r2_mean: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def aggregate(points: Sequence[tuple[int, int]], fold_results: Iterable[dict[str, Any]]) -> list[PointResult]:
    """Fold results -> one PointResult per grid point, in grid order (a point fails if any fold failed)."""
    import numpy as np

    by_point: dict[tuple[int, int], list[dict[str, Any]]] = {p: [] for p in points}
    for r in fold_results:
        by_point[(r["max_depth"], r["n_estimators"])].append(r)
    out = []
    for p in points:
        rs = sorted(by_point[p], key=lambda r: r["fold"])
        errors = [r["error"] for r in rs if r["error"]]
        if errors or not rs:
            out.append(PointResult(p[0], p[1], error=errors[0] if errors else "no fold results"))
            continue
        rmse = np.array([r["rmse"] for r in rs], dtype="float64")
        r2 = np.array([r["r2"] for r in rs], dtype="float64")
        out.append(
            PointResult(p[0], p[1], float(rmse.mean()), float(rmse.std()), float(r2.mean()))
        )
    return out


def choose_best(results: Sequence[PointResult]) -> PointResult:
    ok = [r for r in results if r.ok]
    if not ok:
        first = results[0].error if results else "empty grid"
        raise GridError(f"all {len(results)} grid points failed; first error: {first}")
    # ties broken by grid order (min is stable)
    return min(ok, key=lambda r: r.cv_rmse_mean)


def grid_tasks(points: Sequence[tuple[int, int]], folds: Sequence[tuple[Any, Any]]) -> list[tuple[int, int, int]]:
    """Every (max_depth, n_estimators, fold), the costliest fits first.

    A forest's fit grows with its tree count times its depth, and a pool of workers that takes tasks in list
    order finishes together only if the short ones come last (longest-processing-time-first scheduling):
    in grid order the deepest, largest forests would run last, one worker idle while another finishes them.
    Ties keep grid order; the order changes no result (`aggregate` groups by point)."""
    tasks = [(d, n, k) for (d, n) in points for k in range(len(folds))]
    return sorted(tasks, key=lambda t: -(t[0] * t[1]))


def run_grid_joblib(
    X: Any, y: Any, points: Sequence[tuple[int, int]], cv: int, random_state: int, n_jobs: int = -1
) -> list[PointResult]:
    """Evaluate every (point, fold) with joblib, in threads of this process.

    scikit-learn builds and applies its trees without the GIL (RandomForest's own ``n_jobs`` uses threads
    for that reason), so threads fit in parallel with no worker processes to start, no copy of the data per
    worker, and nothing left to stop afterwards. Worker processes (joblib's default) cost each search 1.5-2 s
    of start-up and about 3 s of CPU on a 2-core machine, for the same results."""
    from joblib import Parallel, delayed

    folds = fold_indices(len(X), cv, random_state)
    results = Parallel(n_jobs=n_jobs, prefer="threads")(
        delayed(evaluate_fold)(X, y, d, n, k, folds[k][0], folds[k][1], random_state)
        for (d, n, k) in grid_tasks(points, folds)
    )
    return aggregate(points, results)


def joblib_engine() -> str:
    """The engine name of `run_grid_joblib` on every core, for logs and MLflow tags."""
    from joblib import effective_n_jobs

    return f"sklearn-joblib-threads(n_jobs={effective_n_jobs(-1)})"


#: One (grid point, fold) fit, as `evaluate_task_batches` returns it to Spark.
FOLD_RESULT_SCHEMA = "max_depth long, n_estimators long, fold long, rmse double, r2 double, error string"
TASK_COL = "__task__"


#: the ``error`` of every fold a worker with another jobs' version refused (the rest is `installed.mismatch`)
STALE_PREFIX = "stale mlopsctl-jobs: "


def evaluate_task_batches(
    batches: Iterable[Any], tasks: Sequence[tuple[int, int, int]], cv: int, random_state: int,
    expected_version: str | None = None,
) -> Iterable[Any]:
    """The ``mapInPandas`` function of the Spark grid: one partition holds one task id, joined to every
    training row (``TASK_COL``, ``ROW_ID_COL``, the raw input columns and ``TARGET_COL``), as Arrow batches.

    It rebuilds the training frame in its original row order, recomputes the same folds the driver would
    (``fold_indices`` is deterministic), and fits each task's (max_depth, n_estimators, fold) with
    `evaluate_fold`, which records errors instead of raising, so one failed point spares the others.
    A worker whose installed jobs' wheel is not ``expected_version`` fits nothing: each of its tasks comes
    back with ``STALE_PREFIX`` and the reason as its error.
    """
    import pandas as pd

    frames = list(batches)
    if not frames:
        return
    rows = pd.concat(frames, ignore_index=True)
    stale = installed.mismatch(expected_version)
    if stale:
        for task_id in sorted(rows[TASK_COL].unique()):
            d, n, k = tasks[int(task_id)]
            yield pd.DataFrame([{"max_depth": d, "n_estimators": n, "fold": k, "rmse": None, "r2": None,
                                 "error": STALE_PREFIX + stale}])
        return
    for task_id, part in rows.groupby(TASK_COL, sort=True):
        X, y = split_xy(part.drop(columns=[TASK_COL]))
        folds = fold_indices(len(X), cv, random_state)
        d, n, k = tasks[int(task_id)]
        yield pd.DataFrame([evaluate_fold(X, y, d, n, k, folds[k][0], folds[k][1], random_state)])


#: What one Spark Python worker may hold for a fit unless told otherwise: Databricks serverless caps the
#: memory of user code in UDFs and ``mapInPandas`` at 1 GB.
DEFAULT_WORKER_MEMORY = 1 << 30
#: bytes of one node of a fitted scikit-learn regression tree: its ``Node`` record (64) and its value (8)
TREE_NODE_BYTES = 72
#: nodes of a tree grown without a depth limit, per training row: a bootstrap sample holds about 63% of
#: the rows once, each ends in a leaf of its own, and a binary tree has about twice as many nodes as leaves
NODES_PER_ROW = 1.3
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:([kmgt])(?:i?b)?)?\s*$", re.IGNORECASE)


def parse_memory(text: str | None) -> int:
    """A memory size as Spark writes one (``1g``, ``768m``, ``1.5g``; a bare number is MiB) -> bytes;
    empty -> `DEFAULT_WORKER_MEMORY`; ``0`` turns the check off."""
    if text is None or not str(text).strip():
        return DEFAULT_WORKER_MEMORY
    match = _SIZE.match(str(text))
    if not match:
        raise GridError(f"worker memory {text!r} is not a size such as 1g or 768m")
    unit = (match[2] or "m").lower()
    return int(float(match[1]) * (1 << (10 * "bkmgt".index(unit))))


def tree_nodes(max_depth: int, rows: int) -> int:
    """About how many nodes one tree of the forest has: ``NODES_PER_ROW`` per training row, and never more
    than a full binary tree of ``max_depth`` levels."""
    unbounded = math.ceil(NODES_PER_ROW * rows)
    return unbounded if max_depth >= 62 else min(unbounded, (1 << (max_depth + 1)) - 1)


@dataclass
class WorkerMemory:
    """What one worker of the Spark grid holds at its largest fit."""

    data_bytes: int  # the training rows the worker rebuilds, plus the copy its fold's fit takes
    forest_bytes: int  # the largest forest of the grid, fitted on one fold
    max_depth: int
    n_estimators: int

    @property
    def total(self) -> int:
        return self.data_bytes + self.forest_bytes


def worker_memory(X: Any, y: Any, points: Sequence[tuple[int, int]], cv: int) -> WorkerMemory:
    """Estimate the memory of the largest fit one worker makes: the training data (``X`` and ``y`` as the
    worker rebuilds them, text values as Python strings), what its fold's fit copies (the fold's rows out of
    ``X``, 8 bytes a cell: a number, or a pointer to a string already counted, and the float64 matrix the
    Pipeline's first step encodes them into, 8 more), and the forest of the grid point with the most nodes,
    at ``TREE_NODE_BYTES`` per node."""
    data = int(X.memory_usage(index=False, deep=True).sum()) + int(y.to_numpy(dtype="float64").nbytes)
    fold_rows = len(X) - len(X) // max(cv, 2)
    fold = fold_rows * (16 * X.shape[1] + 8)
    if not points:
        return WorkerMemory(data + fold, 0, 0, 0)
    d, n = max(points, key=lambda p: p[1] * tree_nodes(p[0], fold_rows))
    return WorkerMemory(data + fold, n * tree_nodes(d, fold_rows) * TREE_NODE_BYTES, d, n)


def _size(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.0f} MiB"


def check_worker_memory(X: Any, y: Any, points: Sequence[tuple[int, int]], cv: int, bound: int) -> WorkerMemory:
    """Refuse a grid whose largest fit would not fit the per-worker memory ``bound`` (0: no check). Past the
    bound a worker fails, the whole Spark job with it, and a retry fails the same way: better to say so
    before any fit starts."""
    need = worker_memory(X, y, points, cv)
    if bound > 0 and need.total > bound:
        raise GridError(
            f"the Spark grid needs about {_size(need.total)} in one Python worker (the largest forest, "
            f"max_depth={need.max_depth} n_estimators={need.n_estimators}, about {_size(need.forest_bytes)}, "
            f"plus {_size(need.data_bytes)} of training data), over the per-worker memory bound of "
            f"{_size(bound)} (MLOPSCTL_GRID_WORKER_MEMORY; Databricks serverless allows 1 GB). Run it on a "
            "single node with `mlopsctl grid-search` (without --spark), or lower max_depth/n_estimators"
        )
    return need


def training_schema(X: Any) -> Any:
    """The Spark schema of the rows `run_grid_spark` sends: the input columns as the training table types
    them (double or string: a column whose values are all missing has no type of its own to infer), the
    target, the row id."""
    from pyspark.sql import types as T

    fields = [T.StructField(str(c), T.DoubleType() if is_numeric(X[c].dtype) else T.StringType()) for c in X.columns]
    return T.StructType([*fields, T.StructField(TARGET_COL, T.DoubleType()), T.StructField(ROW_ID_COL, T.LongType())])


def run_grid_spark(
    spark: Any, X: Any, y: Any, points: Sequence[tuple[int, int]], cv: int, random_state: int,
    worker_memory_bound: int = DEFAULT_WORKER_MEMORY,
    expected_version: str | None = None,
) -> list[PointResult]:
    """Fan (point, fold) out over the workers; gather and aggregate on the driver.

    The training rows reach the workers as Arrow batches of the plan itself (a broadcast join of the
    task ids with the rows), not through a file: no storage has to be shared by the driver and the
    workers, which holds on a laptop, a standalone cluster and Databricks serverless alike. Every task
    partition carries one task id, so Spark schedules one fit per task slot. A grid whose largest fit
    would exceed ``worker_memory_bound`` bytes in one worker is refused first (`check_worker_memory`).
    With ``expected_version`` (the jobs' version the task was deployed with) a worker that has another one
    installed fits nothing, and this raises `installed.StaleJobsError`.
    """
    check_worker_memory(X, y, points, cv, worker_memory_bound)  # both raise before any Spark work
    folds = fold_indices(len(X), cv, random_state)
    tasks = grid_tasks(points, folds)
    rows = X.reset_index(drop=True).assign(**{TARGET_COL: y.to_numpy(dtype="float64"), ROW_ID_COL: range(len(X))})
    training = spark.createDataFrame(rows, schema=training_schema(X))
    task_ids = spark.range(0, len(tasks), 1, numPartitions=len(tasks)).withColumnRenamed("id", TASK_COL)
    fit = functools.partial(evaluate_task_batches, tasks=tasks, cv=cv, random_state=random_state,
                            expected_version=expected_version)
    fold_rows = task_ids.crossJoin(training.hint("broadcast")).mapInPandas(fit, schema=FOLD_RESULT_SCHEMA)
    results = [row.asDict() for row in fold_rows.collect()]
    stale = next((r["error"] for r in results if (r["error"] or "").startswith(STALE_PREFIX)), None)
    if stale:
        raise installed.StaleJobsError(f"a Spark worker of the grid: {stale.removeprefix(STALE_PREFIX)}")
    return aggregate(points, results)
