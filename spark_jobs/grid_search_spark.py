"""Spark job `grid_search_spark`: the same k-fold grid search as grid_search.py, but every
(grid point, fold) pair is a Spark task: the training split and fold indices are broadcast, each
executor fits the same scikit-learn RandomForestRegressor, and the driver gathers the fold scores and
logs to MLflow exactly like grid_search (same splits and seeds, so the same best params and metrics).

Example (bare, outside Airflow; after preprocess_data for the same --run-id):
    spark-submit --master 'local[2]' --py-files spark_jobs/rf_core.py,spark_jobs/grid_search.py \\
        spark_jobs/grid_search_spark.py --dag-id grid_search_spark --run-id manual_1 --work-dir /tmp/work \\
        --max-depth 80,90 --n-estimators 100,200 --cv 3 --tracking-uri http://127.0.0.1:5000
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grid_search
import rf_core


def run_grid_spark(
    spark: Any, X: Any, y: Any, points: Sequence[tuple[int, int]], cv: int, random_state: int
) -> list[rf_core.PointResult]:
    """Fan (point, fold) out over the executors; gather and aggregate on the driver."""
    sc = spark.sparkContext
    folds = rf_core.fold_indices(len(X), cv, random_state)
    shared = sc.broadcast((X, y, folds, random_state))
    tasks = rf_core.grid_tasks(points, folds)

    def evaluate(task: tuple[int, int, int]) -> dict[str, Any]:
        X_, y_, folds_, seed = shared.value
        d, n, k = task
        return rf_core.evaluate_fold(X_, y_, d, n, k, folds_[k][0], folds_[k][1], seed)

    try:
        fold_results = sc.parallelize(tasks, numSlices=len(tasks)).map(evaluate).collect()
    finally:
        shared.unpersist()
    return rf_core.aggregate(points, fold_results)


def main(argv: list[str] | None = None) -> None:
    parser = rf_core.base_parser(__doc__.splitlines()[0])
    grid_search.add_grid_args(parser)
    args = parser.parse_args(argv)

    def body() -> None:
        spark = rf_core.spark_session(f"mlopsctl-grid-{args.dag_id}")
        try:
            path = rf_core.features_path(args.work_dir, args.dag_id, args.run_id)
            from pathlib import Path

            if not Path(path).exists():
                raise rf_core.DataError(f"features table not found at {path}: did preprocess_data run?")
            X, y = rf_core.split_xy(spark.read.parquet(path).toPandas())
            engine = f"spark({spark.sparkContext.master})"
            grid_search.search_and_log(
                args, X, y, engine, lambda X_, y_, pts, cv, rs: run_grid_spark(spark, X_, y_, pts, cv, rs)
            )
        finally:
            spark.stop()

    rf_core.run_main(body)


if __name__ == "__main__":
    main()
