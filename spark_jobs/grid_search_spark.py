"""Spark job `grid_search_spark`: the same k-fold grid search as grid_search.py, but every
(grid point, fold) pair is one Spark task: a DataFrame of task ids, one per partition, is joined to the
training rows and fitted inside ``mapInPandas`` on the workers with the same scikit-learn
RandomForestRegressor; the driver gathers the fold scores and logs to MLflow exactly like grid_search
(same splits and seeds, so the same best params and metrics).

Spark Connect API only, so it runs as a Connect client (``SPARK_REMOTE=sc://...``), under
``spark-submit``, and as a Databricks task on serverless or standard access mode.

Example (bare, outside Airflow; after preprocess_data for the same --run-id):
    SPARK_REMOTE=sc://127.0.0.1:15002 python spark_jobs/grid_search_spark.py --dag-id grid_search_spark \\
        --run-id manual_1 --work-dir /tmp/work --max-depth 80,90 --n-estimators 100,200 --cv 3 \\
        --tracking-uri http://127.0.0.1:5000
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import grid_search
import rf_core


def run_grid_spark(
    spark: Any, X: Any, y: Any, points: Sequence[tuple[int, int]], cv: int, random_state: int
) -> list[rf_core.PointResult]:
    """Fan (point, fold) out over the workers; gather and aggregate on the driver.

    The training rows reach the workers as Arrow batches of the plan itself (a broadcast join of the
    task ids with the rows), not through a file: no storage has to be shared by the driver and the
    workers, which holds on a laptop, a standalone cluster and Databricks serverless alike. Every task
    partition carries one task id, so Spark schedules one fit per task slot.
    """
    folds = rf_core.fold_indices(len(X), cv, random_state)  # raises DataError before any Spark work
    tasks = rf_core.grid_tasks(points, folds)
    rows = X.reset_index(drop=True).assign(
        **{rf_core.TARGET_COL: y.to_numpy(dtype="float64"), rf_core.ROW_ID_COL: range(len(X))}
    )
    training = spark.createDataFrame(rows)
    task_ids = spark.range(0, len(tasks), 1, numPartitions=len(tasks)).withColumnRenamed("id", rf_core.TASK_COL)
    fit = functools.partial(rf_core.evaluate_task_batches, tasks=tasks, cv=cv, random_state=random_state)
    fold_rows = task_ids.crossJoin(training.hint("broadcast")).mapInPandas(fit, schema=rf_core.FOLD_RESULT_SCHEMA)
    return rf_core.aggregate(points, [row.asDict() for row in fold_rows.collect()])


def main(argv: list[str] | None = None) -> None:
    parser = rf_core.base_parser(__doc__.splitlines()[0])
    grid_search.add_grid_args(parser)
    args = parser.parse_args(argv)

    def body() -> None:
        spark = rf_core.spark_session(f"mlopsctl-grid-{args.dag_id}")
        try:
            features = rf_core.features_path(args.work_dir, args.dag_id, args.run_id)
            grid_search.search_and_log(
                args, lambda: (*rf_core.read_features(spark, features), rf_core.read_rows_dropped(features, spark)),
                rf_core.engine_name(spark), lambda X_, y_, pts, cv, rs: run_grid_spark(spark, X_, y_, pts, cv, rs),
            )
        finally:
            rf_core.release_session(spark)

    rf_core.run_main(body)


if __name__ == "__main__":
    rf_core.run_script(main)
