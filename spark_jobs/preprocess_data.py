"""Spark job `preprocess_data`: read the source data, validate it, type it, and write the training table
(Parquet) of one Airflow run to <work-dir>/<dag-id>/<run key>/training.parquet: the rows with a target, the
input columns under their own names (numbers as double, the rest as string, missing values kept as null).
The model encodes and imputes them itself, so it takes raw rows (`mlopsctl_jobs.model`).

Bad data (missing file, unsupported format, no rows, missing/non-numeric target, no usable feature)
exits with code 3 and one ``mlopsctl-error:`` line, so Airflow fails the task without retrying.

Example (bare, outside Airflow, as a Spark Connect client; or under spark-submit):
    SPARK_REMOTE=sc://127.0.0.1:15002 python spark_jobs/preprocess_data.py \\
        --dag-id build_model --run-id manual_1 --work-dir /tmp/work --target target
"""

from __future__ import annotations

import time

from mlopsctl_jobs import cli, data, session


def run(spark, source: str | None, target: str, output: str, na_values=None) -> data.PrepareReport:
    """Load + validate + type + write the training table and its row counts; returns what was done."""
    raw = data.load_source(spark, source, na_values)
    training, report = data.prepare_training(raw, target)
    data.write_training(training, output)
    data.write_prepare_report(spark, report, output)
    return report


def main(argv: list[str] | None = None) -> None:
    args = cli.base_parser(__doc__.splitlines()[0]).parse_args(argv)
    output = data.training_path(args.work_dir, args.dag_id, args.run_id)

    def body() -> None:
        started = time.monotonic()
        spark = session.spark_session(f"mlopsctl-preprocess-{args.dag_id}")
        try:
            print(f"source: {args.data or 'scikit-learn bundled diabetes data'}; target: {args.target!r}", flush=True)
            report = run(spark, args.data, args.target, output, args.na_values)
            for line in report.lines():
                print(line, flush=True)
            print(f"training table written to {output} in {time.monotonic() - started:.1f}s", flush=True)
        finally:
            session.release_session(spark)

    cli.run_main(body, args.data)


if __name__ == "__main__":
    cli.run_script(main)
