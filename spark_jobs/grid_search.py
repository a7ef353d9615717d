"""Job `grid_search` (no Spark): k-fold grid search of scikit-learn's RandomForestRegressor over
max_depth x n_estimators with joblib on every core of this machine, in threads of this process. Logs one
MLflow parent run (best params, held-out metrics of the refit best model, heatmap, registered model) and
one child run per grid point (a failed point is a FAILED child run).

Example (bare, outside Airflow; after preprocess_data for the same --run-id):
    python spark_jobs/grid_search.py --dag-id grid_search --run-id manual_1 --work-dir /tmp/work \\
        --max-depth 80,90 --n-estimators 100,200 --cv 3 --tracking-uri http://127.0.0.1:5000
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

import rf_core

SearchFn = Callable[[Any, Any, Sequence[tuple[int, int]], int, int], list[rf_core.PointResult]]
#: What a job's feature read returns: X, y, and the rows preprocess_data dropped (None where unknown).
Features = tuple[Any, Any, "int | None"]


def add_grid_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-depth", type=rf_core.int_list_arg, required=True, help="e.g. 80,90,100")
    parser.add_argument("--n-estimators", type=rf_core.int_list_arg, required=True, help="e.g. 100,200")
    parser.add_argument("--cv", type=rf_core.int_arg, default=3)
    rf_core.add_model_args(parser)


def search(
    X: Any, y: Any, *, max_depths: Sequence[int], n_estimators: Sequence[int], cv: int, test_size: float,
    random_state: int, search_fn: SearchFn,
) -> tuple[list[rf_core.PointResult], Any, Any, Any, Any]:
    """Held-out split, then the CV grid on the training part. Returns (results, X_train, X_test, y_train, y_test)."""
    X_train, X_test, y_train, y_test = rf_core.holdout_split(X, y, test_size, random_state)
    points = rf_core.grid_points(max_depths, n_estimators)
    results = search_fn(X_train.reset_index(drop=True), y_train.reset_index(drop=True), points, cv, random_state)
    return results, X_train, X_test, y_train, y_test


def search_and_log(
    args: argparse.Namespace, load: Callable[[], Features], engine: str, search_fn: SearchFn
) -> rf_core.GridOutcome:
    """The body shared by grid_search and grid_search_spark: read the features, search, print, log to MLflow.

    MLflow's import, the experiment lookup and the close of stale runs run in a thread from the start, beside
    the feature read (a wait on the disk or on the Spark server) and then the search, whose fits run without
    the GIL (joblib's threads) or elsewhere (the Spark cluster). Started before the read, that setup is mostly
    done before the fits begin, so it takes little CPU from them where they share the job's machine."""
    rf_core.import_sklearn()
    with rf_core.beside(rf_core.prepare_tracking, args, figures=True, name="mlflow-setup") as tracking:
        X, y, rows_dropped = load()
        started = time.monotonic()
        results, X_train, X_test, y_train, y_test = search(
            X, y, max_depths=args.max_depth, n_estimators=args.n_estimators, cv=args.cv,
            test_size=args.test_size, random_state=args.random_state, search_fn=search_fn,
        )
        exp_id = tracking.result()
    print(f"grid of {len(results)} points x {args.cv} folds evaluated in {time.monotonic() - started:.1f}s "
          f"with {engine}", flush=True)
    for r in results:
        status = f"cv_rmse={r.cv_rmse_mean:.4f}±{r.cv_rmse_std:.4f}" if r.ok else f"FAILED: {r.error}"
        print(f"  max_depth={r.max_depth:<5} n_estimators={r.n_estimators:<5} {status}", flush=True)

    def refit(best: rf_core.PointResult) -> tuple[Any, dict[str, float]]:
        model = rf_core.train_model(X_train, y_train, best.max_depth, best.n_estimators, args.random_state, n_jobs=-1)
        return model, rf_core.evaluate_model(model, X_test, y_test)

    outcome = rf_core.log_grid(
        experiment_id=exp_id, dag_id=args.dag_id, dag_run_id=args.run_id, try_number=args.try_number, engine=engine,
        results=results, cv=args.cv,
        common_params={"test_size": args.test_size, "random_state": args.random_state,
                       "data": args.data or "sklearn:diabetes", "target": args.target,
                       "max_depth_grid": ",".join(map(str, args.max_depth)),
                       "n_estimators_grid": ",".join(map(str, args.n_estimators))},
        refit=refit, X_sample=X_train, register_as=args.register_model,
        extra_metrics={} if rows_dropped is None else {"n_rows_dropped": rows_dropped},
    )
    b = outcome.best
    print(f"best: max_depth={b.max_depth} n_estimators={b.n_estimators} cv_rmse={b.cv_rmse_mean:.4f}; held-out "
          + ", ".join(f"{k}={v:.4f}" for k, v in outcome.holdout.items()), flush=True)
    name, version = outcome.registered
    print(f"mlflow parent run {outcome.parent_run_id} with {len(outcome.child_run_ids)} child runs"
          + (f"; registered {name} version {version}" if name else ""), flush=True)
    return outcome


def joblib_engine() -> str:
    from joblib import effective_n_jobs

    return f"sklearn-joblib-threads(n_jobs={effective_n_jobs(-1)})"


def main(argv: list[str] | None = None) -> None:
    parser = rf_core.base_parser(__doc__.splitlines()[0])
    add_grid_args(parser)
    args = parser.parse_args(argv)

    def body() -> None:
        features = rf_core.features_path(args.work_dir, args.dag_id, args.run_id)
        search_and_log(args, lambda: (*rf_core.load_features(features), rf_core.read_rows_dropped(features)),
                       joblib_engine(),
                       lambda X_, y_, pts, cv, rs: rf_core.run_grid_joblib(X_, y_, pts, cv, rs, n_jobs=-1))

    rf_core.run_main(body)


if __name__ == "__main__":
    rf_core.run_script(main)
