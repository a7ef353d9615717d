"""The floor of `run build-model`: one Python process, no Airflow, no Spark.

It loads scikit-learn's diabetes data (or, with --data, reads a CSV with pandas into raw typed rows as the
pipeline types them, `raw_csv.py`), holds out 20% (random_state 42), fits the same model on the training part:
a Pipeline whose first step fills numeric gaps with the training part's medians and codes each text column by
the training part's sorted categories (-1 for missing and unseen values), then the same
RandomForestRegressor(max_depth, n_estimators). It logs what the pipeline logs to the same MLflow server: the
params, the metrics (rmse, mae, r2), the held-out rows as a Parquet artifact, the model (cloudpickle,
signature on the raw input columns, input example, pinned requirements, registered) and its version's tags.
Prints one JSON document with the process wall and the metrics.

    python bench/peers/inprocess_build.py --tracking-uri http://127.0.0.1:5000 --max-depth 80 --n-estimators 100
    python bench/peers/inprocess_build.py --tracking-uri ... --data houses.csv --target price
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

EVAL_ROWS_CAP = 100_000


def signature(X):
    import pandas as pd
    from mlflow.models.signature import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema

    cols = [ColSpec(DataType.double if pd.api.types.is_float_dtype(X[c].dtype) else DataType.string, c)
            for c in X.columns]
    return ModelSignature(Schema(cols), Schema([ColSpec(DataType.double)]))


def requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for dist in ("mlflow", "scikit-learn", "cloudpickle", "numpy", "pandas", "scipy"):
        try:
            out.append(f"{dist}=={version(dist)}")
        except PackageNotFoundError:
            pass
    return out


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
    from raw_csv import make_model, read_raw_csv  # beside this script
    from sklearn.datasets import load_diabetes
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
    from sklearn.model_selection import train_test_split

    if args.data:
        X, y = read_raw_csv(args.data, args.target)
    else:
        X, y = load_diabetes(return_X_y=True, as_frame=True)
        X, y = X.astype("float64"), y.astype("float64")
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=42)
    model = make_model(X_train, args.max_depth, args.n_estimators)
    model.fit(X_train, y_train)
    pred = model.predict(X_test)
    metrics = {"rmse": float(np.sqrt(mean_squared_error(y_test, pred))), "mae": float(mean_absolute_error(y_test, pred)),
               "r2": float(r2_score(y_test, pred))}

    mlflow.set_tracking_uri(args.tracking_uri)
    mlflow.set_experiment("/bench/inprocess_build")
    client = mlflow.MlflowClient()
    with mlflow.start_run() as run:
        mlflow.log_params({"max_depth": args.max_depth, "n_estimators": args.n_estimators, "test_size": 0.2,
                           "random_state": 42, "data": args.data or "sklearn:diabetes", "target": args.target,
                           "n_train": len(X_train), "n_test": len(X_test)})
        mlflow.log_metrics(metrics)
        with tempfile.TemporaryDirectory() as tmp:
            held_out = X_test.head(EVAL_ROWS_CAP).assign(**{args.target: y_test.head(EVAL_ROWS_CAP).to_numpy()})
            held_out.to_parquet(Path(tmp) / "test_split.parquet", index=False)
            mlflow.log_artifact(str(Path(tmp) / "test_split.parquet"), artifact_path="eval")
        info = mlflow.sklearn.log_model(model, name="model", serialization_format="cloudpickle",
                                        signature=signature(X_train), input_example=X_train.head(5),
                                        registered_model_name=args.register_model, pip_requirements=requirements())
        version = str(info.registered_model_version)
        tags = {"mlflow_run_id": run.info.run_id, "airflow_dag_run_id": "inprocess", "max_depth": args.max_depth,
                "n_estimators": args.n_estimators, "mlopsctl_input": "raw", "mlopsctl_target": args.target}
        for key, value in tags.items():
            client.set_model_version_tag(args.register_model, version, key, str(value))
        mlflow.set_tags({"mlopsctl.registered_model_name": args.register_model,
                         "mlopsctl.registered_model_version": version})
    json.dump({"process_to_done": time.perf_counter() - t_start, **metrics}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
