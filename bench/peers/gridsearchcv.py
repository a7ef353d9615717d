"""The data scientist's peer: plain scikit-learn GridSearchCV(RandomForestRegressor, n_jobs=-1).

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
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.metrics import mean_squared_error
    from sklearn.model_selection import GridSearchCV, KFold, train_test_split

    if args.data.endswith((".parquet", ".pq")):
        df = pd.read_parquet(args.data)
        y = df[args.target].to_numpy()
        X = df.drop(columns=[args.target]).to_numpy()
    else:  # a CSV, cleaned as the pipelines clean it
        from clean_csv import read_clean_csv  # beside this script

        X, y = (a.to_numpy() for a in read_clean_csv(args.data, args.target))
        df = X
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=args.test_size, random_state=args.random_state
    )
    grid = json.loads(args.grid)
    search = GridSearchCV(
        RandomForestRegressor(random_state=args.random_state),
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
            "best_params": search.best_params_,
            "best_cv_rmse": float(-search.best_score_),
            "rmse": rmse,
            "rows": len(df),
        },
        sys.stdout,
    )
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
