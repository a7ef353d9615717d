"""Spark job `grid_search_spark`: the same k-fold grid search as grid_search.py, but every
(grid point, fold) pair is one Spark task: a DataFrame of task ids, one per partition, is joined to the
raw training rows (text as strings through Arrow) and fitted inside ``mapInPandas`` on the workers with
the same Pipeline; the driver gathers the fold scores and logs to MLflow exactly like grid_search
(same splits and seeds, so the same best params and metrics).

Spark Connect API only, so it runs as a Connect client (``SPARK_REMOTE=sc://...``), under
``spark-submit``, and as a Databricks task on serverless or standard access mode.

Example (bare, outside Airflow; after preprocess_data for the same --run-id):
    SPARK_REMOTE=sc://127.0.0.1:15002 python spark_jobs/grid_search_spark.py --dag-id grid_search_spark \\
        --run-id manual_1 --work-dir /tmp/work --max-depth 80,90 --n-estimators 100,200 --cv 3 \\
        --tracking-uri http://127.0.0.1:5000
"""

from __future__ import annotations

from mlopsctl_jobs import cli, data, grid, search, session


def main(argv: list[str] | None = None) -> None:
    parser = cli.base_parser(__doc__.splitlines()[0])
    cli.add_grid_args(parser)
    parser.add_argument("--worker-memory", default="",
                        help="memory one Python worker may use for a fit, e.g. 1g; empty = 1g (Databricks "
                             "serverless), 0 = no check")
    args = parser.parse_args(argv)

    def body() -> None:
        bound = grid.parse_memory(args.worker_memory)
        spark = session.spark_session(f"mlopsctl-grid-{args.dag_id}")
        try:
            training = data.training_path(args.work_dir, args.dag_id, args.run_id)
            search.search_and_log(
                args, lambda: (*data.read_training(spark, training), data.read_rows_dropped(training, spark)),
                session.engine_name(spark),
                lambda X_, y_, pts, cv, rs: grid.run_grid_spark(spark, X_, y_, pts, cv, rs, bound,
                                                                expected_version=args.jobs_version),
            )
        finally:
            session.release_session(spark)

    cli.run_main(body, args.data)


if __name__ == "__main__":
    cli.run_script(main)
