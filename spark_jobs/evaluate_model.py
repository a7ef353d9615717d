"""Spark job `evaluate_model`: score a registered model version (the candidate) and the current holder of an
alias on the same rows with `mlflow.models.evaluate`, and log both sets of metrics to one MLflow run
(experiment <prefix>/<dag-id>, role=evaluation) that `mlopsctl promote` judges its gates on.

The rows are the candidate's logged held-out split, or --data (file, URI, volume path or table, read by Spark).

Example (bare, outside Airflow):
    python spark_jobs/evaluate_model.py --dag-id evaluate_model --run-id manual_1 --work-dir /tmp/work \\
        --tracking-uri http://127.0.0.1:5000 --model-name mlopsctl-random-forest --model-version 3 --alias champion
"""

from __future__ import annotations

import time

from mlopsctl_jobs import cli, evaluate, session, tracking


def main(argv: list[str] | None = None) -> None:
    parser = cli.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--model-name", required=True)
    parser.add_argument("--model-version", type=cli.optional_str, default=None)
    parser.add_argument("--alias", default="champion")
    args = parser.parse_args(argv)

    def body() -> None:
        started = time.monotonic()
        if not args.model_version:
            raise evaluate.DataError("no model version to evaluate: give model_version in the run's conf")
        exp_id = tracking.prepare_tracking(args)
        import mlflow

        client = mlflow.MlflowClient()
        candidate, champion = evaluate.resolve(client, args.model_name, args.model_version, args.alias)
        contenders = [candidate, *([champion] if champion else [])]
        for c in contenders:
            c.inputs = evaluate.input_columns(c.uri)
        engine = "python"
        if args.data:
            spark = session.spark_session(f"mlopsctl-evaluate-{args.dag_id}")
            try:
                engine = session.engine_name(spark)
                frame = evaluate.load_eval_data(spark, args.data, args.na_values)
            finally:
                session.release_session(spark)
            where = args.data
        else:
            frame = evaluate.load_eval_split(candidate.run_id)
            where = f"the candidate's held-out split ({tracking.EVAL_SPLIT_ARTIFACT} of run {candidate.run_id})"
        target = candidate.target or args.target
        evaluate.check_columns(frame, contenders, target, where, default_data=not args.data)
        frame = frame[frame[target].notna()]
        if frame.empty:
            raise evaluate.DataError(f"{where} has no row with a value in {target!r}")
        print(f"evaluating {args.model_name} version {candidate.version}"
              + (f" and {args.alias} (version {champion.version})" if champion else f" (no {args.alias} yet)")
              + f" on {len(frame)} rows", flush=True)
        tags = {
            **tracking.run_tags(args.dag_id, args.run_id, evaluate.ROLE, engine, args.try_number),
            evaluate.MODEL_TAG: args.model_name, evaluate.CANDIDATE_TAG: candidate.version,
            evaluate.ALIAS_TAG: args.alias, **({evaluate.CHAMPION_TAG: champion.version} if champion else {}),
        }
        params = {"model_name": args.model_name, "candidate_version": candidate.version, "alias": args.alias,
                  "champion_version": champion.version if champion else "none", "data": args.data or where,
                  "target": target, "n_eval_rows": len(frame)}
        run_id = evaluate.log_evaluation(exp_id, tags, params, frame, target, contenders)
        for c in contenders:
            print(f"{c.role} version {c.version}: " + ", ".join(f"{k}={v:.4f}" for k, v in c.metrics.items()),
                  flush=True)
        print(f"mlflow run {run_id} logged; done in {time.monotonic() - started:.1f}s", flush=True)

    cli.run_main(body, args.data)


if __name__ == "__main__":
    cli.run_script(main)
