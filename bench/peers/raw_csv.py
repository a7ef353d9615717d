"""A CSV read with pandas into the raw rows the pipeline trains on (docs/data.md), for the peers that stand in for a
data scientist's script: every value read as text; a value that is a missing-value token (pandas' default
`na_values`, blanks around it ignored) is missing; a column whose values left all read as numbers is float64,
any other column keeps its text (missing: NaN); rows with a missing target dropped, then the columns with no
value in the rows left. Names stay as they are; encoding and imputation are the model's first step
(`make_model`)."""

from __future__ import annotations

from typing import Any

#: pandas' default `na_values`
NA_TOKENS = frozenset({
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
})


def read_raw_csv(path: str, target: str) -> tuple[Any, Any]:
    """-> (X, y) in the file's row order: X's columns numbers (float64) or text (object), y float64."""
    import numpy as np
    import pandas as pd

    df = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    typed = {}
    for col in df.columns:
        values = df[col]
        values = values.where(~values.str.strip().isin(NA_TOKENS), np.nan)
        numbers = pd.to_numeric(values.str.strip(), errors="coerce")
        all_numbers = not (values.notna() & numbers.isna()).any()
        typed[col] = numbers.astype("float64") if all_numbers else values.astype(object)
    frame = pd.DataFrame(typed)
    if not pd.api.types.is_float_dtype(frame[target].dtype):
        raise SystemExit(f"target column {target!r} is not numeric")
    frame = frame[frame[target].notna()].reset_index(drop=True)
    y = frame.pop(target)
    X = frame[[c for c in frame.columns if frame[c].notna().any()]]
    return X, y


def make_model(X: Any, max_depth: int | None = None, n_estimators: int = 100, n_jobs: int | None = -1,
               random_state: int = 42) -> Any:
    """The unfitted Pipeline on X's columns, the model the pipelines register: medians for the numbers (learnt
    on the rows it is fitted on), ordinal codes for the text (-1 for missing and unseen values), the forest."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    numeric = [c for c in X.columns if pd.api.types.is_float_dtype(X[c].dtype)]
    text = [c for c in X.columns if c not in set(numeric)]
    parts = []
    if numeric:
        parts.append(("numeric", SimpleImputer(strategy="median", keep_empty_features=True), numeric))
    if text:
        parts.append(("text", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1,
                                             encoded_missing_value=-1), text))
    forest = RandomForestRegressor(max_depth=max_depth, n_estimators=n_estimators, random_state=random_state,
                                   n_jobs=n_jobs)
    return Pipeline([("prepare", ColumnTransformer(parts, remainder="drop", verbose_feature_names_out=False)),
                     ("forest", forest)])
