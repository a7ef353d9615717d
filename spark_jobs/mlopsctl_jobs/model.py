"""The model and its metrics: an sklearn Pipeline that takes raw rows (its first step encodes the text columns
and fills numeric gaps, its last is scikit-learn's RandomForestRegressor), the held-out split, rmse/mae/r2.

The Pipeline holds scikit-learn's own transformers only, so a registered version loads and scores wherever
scikit-learn is installed, without this package. pandas and scikit-learn are imported inside the functions,
so a Spark worker that imports this package pays only for what it uses.
"""

from __future__ import annotations

import math
from typing import Any

from mlopsctl_jobs.data import DataError, is_numeric

#: the Pipeline's steps: the column preparation, then the forest
PREPARE_STEP, FOREST_STEP = "prepare", "forest"
#: the code of a missing or unseen value of a text column
UNKNOWN_CODE = -1


def holdout_split(X: Any, y: Any, test_size: float, random_state: int) -> tuple[Any, Any, Any, Any]:
    from sklearn.model_selection import train_test_split

    if len(X) < 4:
        raise DataError(f"too few rows to split for evaluation ({len(X)}); need at least 4")
    return train_test_split(X, y, test_size=test_size, random_state=random_state, shuffle=True)


def import_sklearn() -> None:
    """Import the scikit-learn modules the model code uses (they are otherwise imported on first use)."""
    import sklearn.compose
    import sklearn.ensemble
    import sklearn.impute
    import sklearn.metrics
    import sklearn.model_selection
    import sklearn.pipeline
    import sklearn.preprocessing  # noqa: F401


def input_columns(X: Any) -> tuple[list[str], list[str]]:
    """The input columns of raw rows -> (numeric, text), each in X's order: a column of numbers is numeric,
    any other column is text."""
    numeric = [c for c in X.columns if is_numeric(X[c].dtype)]
    return numeric, [c for c in X.columns if c not in set(numeric)]


def make_model(
    numeric: list[str], text: list[str], max_depth: int, n_estimators: int, random_state: int, n_jobs: int = 1
) -> Any:
    """The unfitted Pipeline: numeric columns through a median `SimpleImputer` (a column with no value in the
    training rows is kept, filled with 0), text columns through an `OrdinalEncoder` whose codes are the
    sorted categories of the training rows (missing and unseen values: -1), then the forest."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    parts = []
    if numeric:
        parts.append(("numeric", SimpleImputer(strategy="median", keep_empty_features=True), list(numeric)))
    if text:
        parts.append(("text", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=UNKNOWN_CODE,
                                             encoded_missing_value=UNKNOWN_CODE), list(text)))
    prepare = ColumnTransformer(parts, remainder="drop", verbose_feature_names_out=False)
    forest = RandomForestRegressor(
        max_depth=max_depth, n_estimators=n_estimators, random_state=random_state, n_jobs=n_jobs
    )
    return Pipeline([(PREPARE_STEP, prepare), (FOREST_STEP, forest)])


def train_model(X: Any, y: Any, max_depth: int, n_estimators: int, random_state: int, n_jobs: int = 1) -> Any:
    """Fit the Pipeline on raw rows (X as `mlopsctl_jobs.data.split_xy` makes it)."""
    numeric, text = input_columns(X)
    model = make_model(numeric, text, max_depth, n_estimators, random_state, n_jobs)
    model.fit(X, y)
    return model


def preparation_lines(model: Any, X: Any) -> list[str]:
    """What the fitted Pipeline's first step learned, for the job's log: each text column's number of
    categories, and the median of each numeric column that has gaps in X (the training rows)."""
    prepare = model.named_steps[PREPARE_STEP]
    out = []
    if "text" in prepare.named_transformers_:
        encoder = prepare.named_transformers_["text"]
        counts = [sum(isinstance(v, str) for v in cats) for cats in encoder.categories_]  # not the missing value
        out.append("ordinal-encoded: " + ", ".join(
            f"{c} ({n} categories)" for c, n in zip(encoder.feature_names_in_, counts, strict=True)))
    if "numeric" in prepare.named_transformers_:
        imputer = prepare.named_transformers_["numeric"]
        gaps = X[list(imputer.feature_names_in_)].isna().any()
        filled = [f"{c}={m:g}" for c, m in zip(imputer.feature_names_in_, imputer.statistics_, strict=True) if gaps[c]]
        if filled:
            out.append("median-imputed: " + ", ".join(filled))
    return out


def regression_metrics(y_true: Any, y_pred: Any) -> dict[str, float]:
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    return {
        "rmse": float(math.sqrt(mean_squared_error(y_true, y_pred))),
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "r2": float(r2_score(y_true, y_pred)),
    }


def evaluate_model(model: Any, X: Any, y: Any) -> dict[str, float]:
    return regression_metrics(y, model.predict(X))
