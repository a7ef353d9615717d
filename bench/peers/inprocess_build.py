"""The floor of `run build-model`: one Python process, no Airflow, no Spark.

It loads scikit-learn's diabetes data (or, with --data, reads a CSV with pandas and cleans it by the pipeline's
rules, `clean_csv.py`), holds out 20% (random_state 42), fits the same
RandomForestRegressor(max_depth, n_estimators), and logs the same params, metrics (rmse, mae, r2) and
model (cloudpickle, signature, input example, registered) to the same MLflow server the pipeline uses.
Prints one JSON document with the process wall and the metrics.

    python bench/peers/inprocess_build.py --tracking-uri http://127.0.0.1:5000 --max-depth 80 --n-estimators 100
    python bench/peers/inprocess_build.py --tracking-uri ... --data houses.csv --target price
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main(argv: list[str] | None = None) -> int:
    t_start = time.perf_counter()
    p = argparse.ArgumentParser()
    p.add_argument("--tracking-uri", required=True)
    p.add_argument("--max-depth", type=int, default=80)
    p.add_argument("--n-estimators", type=int, default=100)
    p.add_argument("--register-model", default="bench-inprocess-rf")
    p.add_argument("--data", default="", help="a CSV file (default: scikit-learn's diabetes data)")
    p.add_argument("--target", default="target")
    args = p.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    import mlflow
    import numpy as np
    from mlflow.models import infer_signature
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
    from sklearn.model_selection import train_test_split

    if args.data:
        from clean_csv import read_clean_csv  # beside this script

        X, y = read_clean_csv(args.data, args.target)
    else:
        X, y = load_diabetes(return_X_y=True, as_frame=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=42)
    model = RandomForestRegressor(max_depth=args.max_depth, n_estimators=args.n_estimators, random_state=42, n_jobs=-1)
    model.fit(X_train, y_train)
    pred = model.predict(X_test)
    metrics = {"rmse": float(np.sqrt(mean_squared_error(y_test, pred))), "mae": float(mean_absolute_error(y_test, pred)),
               "r2": float(r2_score(y_test, pred))}

    mlflow.set_tracking_uri(args.tracking_uri)
    mlflow.set_experiment("/bench/inprocess_build")
    with mlflow.start_run():
        mlflow.log_params({"max_depth": args.max_depth, "n_estimators": args.n_estimators, "test_size": 0.2,
                           "random_state": 42, "data": args.data or "sklearn:diabetes", "target": args.target})
        mlflow.log_metrics(metrics)
        example = X_train.head(5)
        mlflow.sklearn.log_model(model, name="model", serialization_format="cloudpickle",
                                 signature=infer_signature(example, model.predict(example)), input_example=example,
                                 registered_model_name=args.register_model)
    json.dump({"process_to_done": time.perf_counter() - t_start, **metrics}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
