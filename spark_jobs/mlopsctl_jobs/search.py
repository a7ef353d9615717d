"""The body the two grid-search jobs share (grid_search on joblib threads, grid_search_spark on Spark's
workers): read the training table, split off the held-out rows, evaluate the grid with the job's engine, print the
scores, and log the parent and child runs to MLflow.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

from mlopsctl_jobs import grid, model, tracking

#: how a job evaluates the grid: (X, y, points, cv, random_state) -> one result per point, in grid order
SearchFn = Callable[[Any, Any, Sequence[tuple[int, int]], int, int], list[grid.PointResult]]
#: What a job's read of the training table returns: X, y, and the rows preprocess_data dropped (None where unknown).
Training = tuple[Any, Any, "int | None"]


def search(
    X: Any, y: Any, *, max_depths: Sequence[int], n_estimators: Sequence[int], cv: int, test_size: float,
    random_state: int, search_fn: SearchFn,
) -> tuple[list[grid.PointResult], Any, Any, Any, Any]:
    """Held-out split, then the CV grid on the training part. Returns (results, X_train, X_test, y_train, y_test)."""
    X_train, X_test, y_train, y_test = model.holdout_split(X, y, test_size, random_state)
    points = grid.grid_points(max_depths, n_estimators)
    results = search_fn(X_train.reset_index(drop=True), y_train.reset_index(drop=True), points, cv, random_state)
    return results, X_train, X_test, y_train, y_test


def search_and_log(
    args: argparse.Namespace, load: Callable[[], Training], engine: str, search_fn: SearchFn
) -> tracking.GridOutcome:
    """Read the training table, search, print, log to MLflow.

    MLflow's import, the experiment lookup and the close of stale runs run in a thread from the start, beside
    the table's read (a wait on the disk or on the Spark server) and then the search, whose fits run without
    the GIL (joblib's threads) or elsewhere (the Spark cluster). Started before the read, that setup is mostly
    done before the fits begin, so it takes little CPU from them where they share the job's machine."""
    model.import_sklearn()
    with tracking.beside(tracking.prepare_tracking, args, figures=True, name="mlflow-setup") as setup:
        X, y, rows_dropped = load()
        started = time.monotonic()
        results, X_train, X_test, y_train, y_test = search(
            X, y, max_depths=args.max_depth, n_estimators=args.n_estimators, cv=args.cv,
            test_size=args.test_size, random_state=args.random_state, search_fn=search_fn,
        )
        exp_id = setup.result()
    print(f"grid of {len(results)} points x {args.cv} folds evaluated in {time.monotonic() - started:.1f}s "
          f"with {engine}", flush=True)
    for r in results:
        status = f"cv_rmse={r.cv_rmse_mean:.4f}±{r.cv_rmse_std:.4f}" if r.ok else f"FAILED: {r.error}"
        print(f"  max_depth={r.max_depth:<5} n_estimators={r.n_estimators:<5} {status}", flush=True)

    def refit(best: grid.PointResult) -> tuple[Any, dict[str, float]]:
        fitted = model.train_model(X_train, y_train, best.max_depth, best.n_estimators, args.random_state, n_jobs=-1)
        return fitted, model.evaluate_model(fitted, X_test, y_test)

    outcome = tracking.log_grid(
        experiment_id=exp_id, dag_id=args.dag_id, dag_run_id=args.run_id, try_number=args.try_number, engine=engine,
        results=results, cv=args.cv,
        common_params={"test_size": args.test_size, "random_state": args.random_state,
                       "data": args.data or "sklearn:diabetes", "target": args.target,
                       "max_depth_grid": ",".join(map(str, args.max_depth)),
                       "n_estimators_grid": ",".join(map(str, args.n_estimators))},
        refit=refit, X_sample=X_train, holdout_rows=(X_test, y_test), target=args.target,
        register_as=args.register_model,
        extra_metrics={} if rows_dropped is None else {"n_rows_dropped": rows_dropped},
    )
    b = outcome.best
    print(f"best: max_depth={b.max_depth} n_estimators={b.n_estimators} cv_rmse={b.cv_rmse_mean:.4f}; held-out "
          + ", ".join(f"{k}={v:.4f}" for k, v in outcome.holdout.items()), flush=True)
    name, version = outcome.registered
    print(f"mlflow parent run {outcome.parent_run_id} with {len(outcome.child_run_ids)} child runs"
          + (f"; registered {name} version {version}" if name else ""), flush=True)
    return outcome
