"""A CSV read with pandas and encoded up front, for the GridSearchCV peer (`gridsearchcv.py`), which searches a
bare forest: rows with a missing target dropped, all-missing columns dropped, text columns ordinal-encoded by
their sorted values with -1 for missing, numeric gaps filled with the column's median over all rows, names
cleaned to [A-Za-z0-9_]. (The pipelines' model learns its codes and medians on each training split instead, as
`inprocess_build.py` does with `raw_csv.py`.)"""

from __future__ import annotations

import re
from typing import Any


def read_clean_csv(path: str, target: str) -> tuple[Any, Any]:
    """-> (X, y) as float64, in the file's row order."""
    import pandas as pd

    df = pd.read_csv(path)
    df = df[df[target].notna()].reset_index(drop=True)
    y = df.pop(target).astype("float64")
    X = pd.DataFrame(index=df.index)
    for col in df.columns:
        values = df[col]
        if values.isna().all():
            continue
        name = re.sub(r"[^A-Za-z0-9_]", "_", col)
        if pd.api.types.is_numeric_dtype(values):
            X[name] = values.astype("float64").fillna(values.median())
        else:
            codes = {v: float(i) for i, v in enumerate(sorted(values.dropna().astype(str).unique()))}
            X[name] = values.map(codes, na_action="ignore").fillna(-1.0).astype("float64")
    return X, y
