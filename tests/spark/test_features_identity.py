"""The features table and the model, checked against a reading of the same CSV that shares no code with the
jobs: pandas with every column as text, the CSV rules of docs/data.md applied by hand. Same columns, same
categories and codes, numbers to 1e-12, and a forest fitted on either predicts the same."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import preprocess_data
import pytest
import train_model
from mlopsctl_jobs import data

TOKENS = {"", "NA", "N/A", "null", "NULL", "NaN", "nan", "None", "#N/A", "<NA>"}


def _write_messy_csv(path: Path, rows: int = 3_000) -> None:
    """NA tokens in numeric and text columns, text columns with many categories, odd and colliding names,
    an all-missing column, numbers written several ways, and 3% of the targets missing."""
    rng = np.random.default_rng(7)
    model = np.array([f"m-{i:04d}" for i in range(800)])[rng.integers(0, 800, rows)]
    colour = rng.choice(["red", "Blue", "blue", "grün", "NA", "", "ÿ", "10"], rows)  # '10' keeps it text
    size = np.round(rng.normal(50, 15, rows), 3).astype(str)
    size[rng.random(rows) < 0.05] = "NA"
    size[rng.random(rows) < 0.02] = "null"
    count = rng.integers(0, 9, rows).astype(str)
    count[rng.random(rows) < 0.03] = ""
    expo = np.char.add(rng.integers(1, 9, rows).astype(str), "e-3")  # 5e-3: a number
    price = np.round(rng.normal(1_000, 300, rows), 2).astype(str)
    price[rng.random(rows) < 0.03] = "NA"
    frame = pd.DataFrame({"model id": model, "size (m2)": size, "a.b": count, "a b": expo, "colour": colour,
                          "1st empty": "", "price": price})
    frame.to_csv(path, index=False)


def _reference(path: Path, target: str) -> tuple[pd.DataFrame, pd.Series]:
    """pandas' reading of the CSV as text, cleaned by the rules of docs/data.md, written out independently."""
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    raw = raw.apply(lambda col: col.map(lambda v: None if v.strip() in TOKENS else v))
    y = pd.to_numeric(raw[target])
    kept = raw[y.notna()].reset_index(drop=True)
    y = y[y.notna()].reset_index(drop=True).astype("float64")
    X = pd.DataFrame(index=kept.index)
    names = {"model id": "model_id", "size (m2)": "size__m2_", "a.b": "a_b", "a b": "a_b_2", "colour": "colour"}
    for col, name in names.items():
        values = kept[col]
        as_number = pd.to_numeric(values, errors="coerce")
        if as_number.notna().sum() == values.notna().sum():  # every value there is a number: numeric
            X[name] = as_number.fillna(float(np.median(as_number.dropna()))).astype("float64")
        else:
            codes = {v: float(i) for i, v in enumerate(sorted(values.dropna().unique()))}
            X[name] = values.map(codes).fillna(-1.0).astype("float64")
    return X, y


@pytest.fixture
def small_splits(spark):
    """CSV splits of 16 KB: a small file is read, encoded and written by several tasks, as a large one is."""
    spark.conf.set("spark.sql.files.maxPartitionBytes", "16k")
    spark.conf.set("spark.sql.files.openCostInBytes", "0")
    try:
        yield
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")
        spark.conf.unset("spark.sql.files.openCostInBytes")


def test_features_table_and_model_match_an_independent_reading(spark, tmp_path: Path, small_splits) -> None:
    csv = tmp_path / "messy (export).csv"
    _write_messy_csv(csv)
    out = data.features_path(str(tmp_path / "work"), "build_model", "manual__identity")
    report = preprocess_data.run(spark, str(csv), "price", out)
    files = [p for p in Path(out).iterdir() if p.suffix == ".parquet"]
    assert len(files) > 1, "the test means several tasks to write the table"

    expected_X, expected_y = _reference(csv, "price")
    X, y = data.read_features(spark, out)
    assert report.features == list(expected_X.columns)
    assert report.dropped_all_null_columns == ["1st empty"]
    assert report.rows_out == len(expected_y) and report.dropped_null_target == 3_000 - len(expected_y)
    assert report.encoded_columns == {"model_id": expected_X["model_id"].max() + 1,
                                      "colour": expected_X["colour"].max() + 1}
    assert list(X.columns) == list(expected_X.columns)
    for name in X.columns:
        np.testing.assert_allclose(X[name].to_numpy(), expected_X[name].to_numpy(), rtol=0, atol=1e-12,
                                   err_msg=name)
    assert (X["model_id"] == expected_X["model_id"]).all() and (X["colour"] == expected_X["colour"]).all()
    np.testing.assert_array_equal(y.to_numpy(), expected_y.to_numpy())
    assert set(report.imputed_columns) == {"size__m2_", "a_b"}

    # the same table through Spark (any cluster path) as from the disk (the local stack)
    through_spark = data.split_xy(spark.read.parquet(out).toPandas())
    pd.testing.assert_frame_equal(through_spark[0], X)
    pd.testing.assert_series_equal(through_spark[1], y)

    fitted = train_model.run(X, y, max_depth=6, n_estimators=5, test_size=0.2, random_state=42)
    reference = train_model.run(expected_X, expected_y, max_depth=6, n_estimators=5, test_size=0.2, random_state=42)
    for ours, theirs in zip(fitted.model.estimators_, reference.model.estimators_, strict=True):  # the same trees
        for part in ("feature", "threshold", "children_left", "children_right", "value"):
            np.testing.assert_array_equal(getattr(ours.tree_, part), getattr(theirs.tree_, part), err_msg=part)
    # the forest's threads add the trees' predictions up in any order: equal to the last bits
    np.testing.assert_allclose(fitted.model.predict(expected_X), reference.model.predict(expected_X), rtol=1e-12)
    assert fitted.metrics == pytest.approx(reference.metrics, rel=1e-12)
    assert all(math.isfinite(v) for v in fitted.metrics.values())
