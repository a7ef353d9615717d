"""The model and its metrics: scikit-learn's RandomForestRegressor, the held-out split, rmse/mae/r2.

pandas and scikit-learn are imported inside the functions, so a Spark worker that imports this package pays
only for what it uses.
"""

from __future__ import annotations

import math
from typing import Any

from mlopsctl_jobs.data import DataError


def holdout_split(X: Any, y: Any, test_size: float, random_state: int) -> tuple[Any, Any, Any, Any]:
    from sklearn.model_selection import train_test_split

    if len(X) < 4:
        raise DataError(f"too few rows to split for evaluation ({len(X)}); need at least 4")
    return train_test_split(X, y, test_size=test_size, random_state=random_state, shuffle=True)


def import_sklearn() -> None:
    """Import the scikit-learn modules the model code uses (they are otherwise imported on first use)."""
    import sklearn.ensemble
    import sklearn.metrics
    import sklearn.model_selection  # noqa: F401


def make_model(max_depth: int, n_estimators: int, random_state: int, n_jobs: int = 1) -> Any:
    from sklearn.ensemble import RandomForestRegressor

    return RandomForestRegressor(
        max_depth=max_depth, n_estimators=n_estimators, random_state=random_state, n_jobs=n_jobs
    )


def train_model(X: Any, y: Any, max_depth: int, n_estimators: int, random_state: int, n_jobs: int = 1) -> Any:
    model = make_model(max_depth, n_estimators, random_state, n_jobs)
    model.fit(X, y)
    return model


def regression_metrics(y_true: Any, y_pred: Any) -> dict[str, float]:
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    return {
        "rmse": float(math.sqrt(mean_squared_error(y_true, y_pred))),
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "r2": float(r2_score(y_true, y_pred)),
    }


def evaluate_model(model: Any, X: Any, y: Any) -> dict[str, float]:
    return regression_metrics(y, model.predict(X))
