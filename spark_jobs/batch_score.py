"""Spark job `batch_score`: score a data set with one registered model version on the workers and write the
input columns plus prediction, model_name, model_version and scored_at; log one MLflow run (experiment
<prefix>/<dag-id>, role=scoring) with the rows scored and the prediction's count, min, mean and max.

Example (bare, outside Airflow):
    SPARK_REMOTE=sc://127.0.0.1:15002 python spark_jobs/batch_score.py --dag-id batch_score --run-id manual_1 \\
        --work-dir /tmp/work --tracking-uri http://127.0.0.1:5000 --model-name mlopsctl-random-forest \\
        --model-version 3 --data new.csv --output /tmp/scored --mode error
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from mlopsctl_jobs import cli, score, session, tracking
from mlopsctl_jobs.data import DataError


def prepare(args: Any) -> tuple[str, score.ScoringModel]:
    """The scoring run's experiment id (runs of a crashed earlier try closed) and the version to score with."""
    experiment = tracking.setup_mlflow(tracking.tracking_uri(args),
                                       tracking.experiment_name(args.experiment_prefix, args.dag_id), args.registry_uri)
    tracking.close_stale_runs(experiment, args.run_id)
    return experiment, score.load_version(args.model_name, args.model_version)


def main(argv: list[str] | None = None) -> None:
    parser = cli.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--model-name", type=cli.optional_str, default=None)
    parser.add_argument("--model-version", type=cli.optional_str, default=None)
    parser.add_argument("--output", type=cli.optional_str, default=None)
    parser.add_argument("--mode", choices=sorted(score.MODES), default="error")
    args = parser.parse_args(argv)

    def body() -> None:
        started = time.monotonic()
        for flag, value in (("--model-name", args.model_name), ("--model-version", args.model_version),
                            ("--data", args.data), ("--output", args.output)):
            if not value:
                raise DataError(f"{flag} is required to score")
        # MLflow's import and its first requests (seconds) overlap the Spark session's start
        with tracking.beside(prepare, args, name="mlflow-setup") as setup:
            spark = session.spark_session(f"mlopsctl-score-{args.dag_id}")
        try:
            experiment, model = setup.result()
            print(f"model {model.name} version {model.version} from {model.storage_uri}; signature: "
                  + ", ".join(f"{n} {t}" for n, t in model.inputs), flush=True)
            engine = session.engine_name(spark)
            rows = score.read_input(spark, args.data, model)
            score.refuse_existing(spark, args.output, args.mode)
            scored_at = datetime.now(UTC)
            score.write_output(score.score(spark, rows, model, scored_at), args.output, args.mode)
            summary = score.prediction_summary(score.read_back(spark, args.output, scored_at, model))
        finally:
            session.release_session(spark)
        print(f"scored {summary['rows_scored']:.0f} rows into {args.output} ({args.mode}); prediction "
              + ", ".join(f"{k.removeprefix('prediction_')}={v:.4f}" for k, v in summary.items()
                          if k.startswith("prediction_")), flush=True)
        run_id = score.log_scoring_run(args, experiment, model, engine, summary, scored_at)
        print(f"mlflow run {run_id} logged; done in {time.monotonic() - started:.1f}s", flush=True)

    cli.run_main(body, args.data)


if __name__ == "__main__":
    cli.run_script(main)
