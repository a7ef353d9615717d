"""The data scientist's peer: plain scikit-learn GridSearchCV(n_jobs=-1) over the model the pipelines fit, a
Pipeline of the median fill and ordinal codes then RandomForestRegressor (`raw_csv.make_model`), on raw rows
(a CSV read with pandas as the pipelines type it, `raw_csv.read_raw_csv`, or a Parquet file as it is).

Same protocol as the pipelines: hold out `test_size` with `random_state`, cross-validate the grid on the
rest with `cv` shuffled K folds (RMSE), refit the best point on the whole training part, score it on the held-out part.
Prints one JSON document: in-process wall of the search, the sum of the single fit times it reports, the
best point and held-out RMSE.

    python bench/peers/gridsearchcv.py DATA.parquet --grid '{"max_depth": [4, 8], "n_estimators": [10, 20]}'
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("data")
    p.add_argument("--grid", required=True, help="JSON param grid")
    p.add_argument("--target", default="target")
    p.add_argument("--cv", type=int, default=3)
    p.add_argument("--test-size", type=float, default=0.2)
    p.add_argument("--random-state", type=int, default=42)
    p.add_argument("--n-jobs", type=int, default=-1)
    args = p.parse_args(argv)

    t_start = time.perf_counter()
    import numpy as np
    import pandas as pd
    from raw_csv import make_model, read_raw_csv  # beside this script
    from sklearn.metrics import mean_squared_error
    from sklearn.model_selection import GridSearchCV, KFold, train_test_split

    if args.data.endswith((".parquet", ".pq")):
        X = pd.read_parquet(args.data)
        y = X.pop(args.target).astype("float64")
        X = X.astype({c: "float64" for c in X.columns if pd.api.types.is_numeric_dtype(X[c].dtype)})
    else:
        X, y = read_raw_csv(args.data, args.target)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=args.test_size, random_state=args.random_state
    )
    grid = {f"forest__{name}": values for name, values in json.loads(args.grid).items()}
    search = GridSearchCV(
        make_model(X_train, n_jobs=None, random_state=args.random_state),
        grid,
        cv=KFold(n_splits=args.cv, shuffle=True, random_state=args.random_state),
        scoring="neg_root_mean_squared_error",
        n_jobs=args.n_jobs,
        refit=True,
    )
    t0 = time.perf_counter()
    search.fit(X_train, y_train)
    search_wall = time.perf_counter() - t0
    res = search.cv_results_
    fit_sum = float(np.sum(res["mean_fit_time"]) * args.cv)
    score_sum = float(np.sum(res["mean_score_time"]) * args.cv)
    rmse = float(np.sqrt(mean_squared_error(y_test, search.predict(X_test))))
    json.dump(
        {
            "search_wall": search_wall,
            "process_to_done": time.perf_counter() - t_start,
            "sum_fit_time": fit_sum,
            "sum_score_time": score_sum,
            "n_points": len(res["params"]),
            "n_fits": len(res["params"]) * args.cv,
            "best_params": {k.removeprefix("forest__"): v for k, v in search.best_params_.items()},
            "best_cv_rmse": float(-search.best_score_),
            "rmse": rmse,
            "rows": len(X),
        },
        sys.stdout,
    )
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
