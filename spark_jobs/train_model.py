"""Spark job `train_model`: fit the model (an sklearn Pipeline: encoding and median fill, then
scikit-learn's RandomForestRegressor) on the raw rows of the training table of one Airflow run, evaluate it
on a held-out split (rmse, mae, r2), log everything to MLflow (experiment <prefix>/<dag-id>, one run with
role=single: the model with its signature on the raw input columns, the held-out rows) and register it.

Example (bare, outside Airflow; after preprocess_data for the same --run-id; or under spark-submit):
    SPARK_REMOTE=sc://127.0.0.1:15002 python spark_jobs/train_model.py \\
        --dag-id build_model --run-id manual_1 --work-dir /tmp/work --max-depth 80 --n-estimators 100 \\
        --tracking-uri http://127.0.0.1:5000 --register-model mlopsctl-random-forest
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from mlopsctl_jobs import cli, data, model, session, tracking


@dataclass
class TrainResult:
    model: Any
    metrics: dict[str, float]
    X_train: Any
    X_test: Any
    y_test: Any

    @property
    def n_train(self) -> int:
        return len(self.X_train)

    @property
    def n_test(self) -> int:
        return len(self.X_test)


def run(X: Any, y: Any, *, max_depth: int, n_estimators: int, test_size: float, random_state: int) -> TrainResult:
    """Held-out split, fit, evaluate."""
    X_train, X_test, y_train, y_test = model.holdout_split(X, y, test_size, random_state)
    fitted = model.train_model(X_train, y_train, max_depth, n_estimators, random_state, n_jobs=-1)
    metrics = model.evaluate_model(fitted, X_test, y_test)
    return TrainResult(fitted, metrics, X_train, X_test, y_test)


def log_single_run(
    args: Any, result: TrainResult, engine: str, rows_dropped: int | None, exp_id: str
) -> tuple[str, tuple[str | None, str | None]]:
    import mlflow

    with mlflow.start_run(
        experiment_id=exp_id,
        run_name=f"{args.dag_id} {args.run_id}",
        tags=tracking.run_tags(args.dag_id, args.run_id, "single", engine, args.try_number),
    ) as run:
        mlflow.log_params(
            {
                "max_depth": args.max_depth,
                "n_estimators": args.n_estimators,
                "test_size": args.test_size,
                "random_state": args.random_state,
                "data": args.data or "sklearn:diabetes",
                "target": args.target,
                "n_train": result.n_train,
                "n_test": result.n_test,
            }
        )
        mlflow.log_metrics(result.metrics | ({} if rows_dropped is None else {"n_rows_dropped": rows_dropped}))
        registered = tracking.log_model(
            result.model,
            result.X_train,
            args.register_model,
            run.info.run_id,
            {"max_depth": args.max_depth, "n_estimators": args.n_estimators},
            args.run_id,
            holdout_rows=(result.X_test, result.y_test),
            target=args.target,
        )
    return run.info.run_id, registered


def main(argv: list[str] | None = None) -> None:
    parser = cli.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--max-depth", type=cli.int_arg, required=True)
    parser.add_argument("--n-estimators", type=cli.int_arg, required=True)
    cli.add_model_args(parser)
    args = parser.parse_args(argv)

    def body() -> None:
        started = time.monotonic()
        spark = session.spark_session(f"mlopsctl-train-{args.dag_id}")
        # scikit-learn is imported before the tracking thread starts, so the two threads never import the
        # same packages at once; MLflow's import (seconds) and its first requests then overlap the Spark
        # read (a wait on the server) and the fit (native code, GIL released).
        model.import_sklearn()
        with tracking.beside(tracking.prepare_tracking, args, name="mlflow-setup") as setup:
            try:
                engine = session.engine_name(spark)
                training = data.training_path(args.work_dir, args.dag_id, args.run_id)
                X, y = data.read_training(spark, training)
                rows_dropped = data.read_rows_dropped(training, spark)
            finally:
                session.release_session(spark)
            print(f"training RandomForestRegressor(max_depth={args.max_depth}, n_estimators={args.n_estimators}) "
                  f"on {len(X)} rows x {X.shape[1]} input columns", flush=True)
            result = run(X, y, max_depth=args.max_depth, n_estimators=args.n_estimators,
                         test_size=args.test_size, random_state=args.random_state)
            for line in model.preparation_lines(result.model, result.X_train):
                print(line, flush=True)
            print("held-out metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in result.metrics.items()), flush=True)
            exp_id = setup.result()
        run_id, (name, version) = log_single_run(args, result, engine, rows_dropped, exp_id)
        print(f"mlflow run {run_id} logged" + (f"; registered {name} version {version}" if name else ""), flush=True)
        print(f"done in {time.monotonic() - started:.1f}s", flush=True)

    cli.run_main(body, args.data)


if __name__ == "__main__":
    cli.run_script(main)
