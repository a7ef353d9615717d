"""The floor of `mlopsctl score`: one Python process, no Airflow, no Spark.

It loads a registered model version from the MLflow server (`mlflow.pyfunc.load_model`, which checks the input
against the signature as the scoring UDF does), reads the Parquet file with pandas, predicts, and writes what
`score` writes: the input columns plus prediction, model_name, model_version and scored_at, as Parquet.
Prints one JSON document: the process wall and the time of each step.

    python bench/peers/inprocess_score.py --tracking-uri http://127.0.0.1:5000 --model NAME/VERSION \\
        --data rows.parquet --output scored.parquet
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
    p.add_argument("--model", required=True, help="NAME/VERSION")
    p.add_argument("--data", required=True, help="a Parquet file")
    p.add_argument("--output", required=True, help="the Parquet file to write")
    args = p.parse_args(argv)
    name, _, version = args.model.rpartition("/")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    steps: dict[str, float] = {}

    def step(label: str, t0: float) -> float:
        now = time.perf_counter()
        steps[label] = now - t0
        return now

    import mlflow.pyfunc
    import pandas as pd

    t = step("imports", t_start)
    mlflow.set_tracking_uri(args.tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    t = step("load_model", t)
    rows = pd.read_parquet(args.data)
    t = step("read", t)
    prediction = model.predict(rows)
    t = step("predict", t)
    scored = rows.assign(prediction=pd.Series(prediction, index=rows.index).astype("float64"), model_name=name,
                         model_version=version, scored_at=pd.Timestamp.now(tz="UTC"))
    scored.to_parquet(args.output, index=False)
    step("write", t)
    json.dump({"process_to_done": time.perf_counter() - t_start, "rows": len(scored), "steps": steps,
               "prediction_mean": float(scored["prediction"].mean())}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
