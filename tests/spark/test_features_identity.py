"""The training table and the model's first step, checked against a reading of the same CSV that shares no
code with the jobs: pandas with every column as text, the CSV rules of docs/data.md applied by hand, then the
median fill and the ordinal codes worked out by hand on the same training split. Same columns, same
categories and codes, numbers to 1e-12, and the registered Pipeline predicts what a forest fitted on the
hand-made matrix predicts. Then the model as the job logs it: it loads with `mlflow.pyfunc.load_model` in a
process that cannot import mlopsctl_jobs and scores raw rows with unseen categories and missing values."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import preprocess_data
import pytest
import train_model
from mlopsctl_jobs import data, model, tracking

TOKENS = {"", "NA", "N/A", "null", "NULL", "NaN", "nan", "None", "#N/A", "<NA>"}
#: the messy CSV's input columns as the training table keeps them ("1st empty" is all missing: dropped)
NAMES = ["model id", "size (m2)", "a.b", "a b", "colour"]
TEXT = ["model id", "colour"]
SPLIT = {"test_size": 0.2, "random_state": 42}


def _write_messy_csv(path: Path, rows: int = 3_000) -> None:
    """NA tokens in numeric and text columns, text columns with many categories (some ids only in the held-out
    rows), odd and colliding names, an all-missing column, numbers written several ways, 3% of targets missing."""
    rng = np.random.default_rng(7)
    ids = np.array([f"m-{i:04d}" for i in range(800)])[rng.integers(0, 800, rows)]
    colour = rng.choice(["red", "Blue", "blue", "grün", "NA", "", "ÿ", "10"], rows)  # '10' keeps it text
    size = np.round(rng.normal(50, 15, rows), 3).astype(str)
    size[rng.random(rows) < 0.05] = "NA"
    size[rng.random(rows) < 0.02] = "null"
    count = rng.integers(0, 9, rows).astype(str)
    count[rng.random(rows) < 0.03] = ""
    expo = np.char.add(rng.integers(1, 9, rows).astype(str), "e-3")  # 5e-3: a number
    price = np.round(rng.normal(1_000, 300, rows), 2).astype(str)
    price[rng.random(rows) < 0.03] = "NA"
    frame = pd.DataFrame({"model id": ids, "size (m2)": size, "a.b": count, "a b": expo, "colour": colour,
                          "1st empty": "", "price": price})
    frame.to_csv(path, index=False)


def _reference_rows(path: Path, target: str) -> tuple[pd.DataFrame, pd.Series]:
    """pandas' reading of the CSV as text, typed by the rules of docs/data.md, written out independently:
    tokens are missing, a column whose values are all numbers is numeric, rows without a target go."""
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    raw = raw.apply(lambda col: col.map(lambda v: None if v.strip() in TOKENS else v))
    y = pd.to_numeric(raw[target])
    kept = raw[y.notna()].reset_index(drop=True)
    y = y[y.notna()].reset_index(drop=True).astype("float64")
    X = pd.DataFrame(index=kept.index)
    for name in NAMES:
        values = kept[name]
        as_number = pd.to_numeric(values, errors="coerce")
        if as_number.notna().sum() == values.notna().sum():  # every value there is a number: numeric
            X[name] = as_number.astype("float64")
        else:
            X[name] = values.astype(object).where(values.notna(), np.nan)
    return X, y


def _reference_matrix(X: pd.DataFrame, train: np.ndarray) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """The model's input matrix worked out by hand: each numeric column's gaps take the median of its training
    rows; each text value its position among the sorted values of the training rows, -1 when missing or never
    seen in training. Numeric columns first, then text, each in source order (the layout of the model's first
    step). Returns the matrix and each text column's categories."""
    numeric = [c for c in NAMES if c not in TEXT]
    out, categories = pd.DataFrame(index=X.index), {}
    for name in numeric:
        out[name] = X[name].fillna(float(np.median(X[name].iloc[train].dropna().to_numpy())))
    for name in TEXT:
        categories[name] = sorted(set(X[name].iloc[train].dropna()))
        codes = {v: float(i) for i, v in enumerate(categories[name])}
        out[name] = [codes.get(v, -1.0) if isinstance(v, str) else -1.0 for v in X[name]]
    return out.astype("float64"), categories


@pytest.fixture
def small_splits(spark):
    """CSV splits of 16 KB: a small file is read, typed and written by several tasks, as a large one is."""
    spark.conf.set("spark.sql.files.maxPartitionBytes", "16k")
    spark.conf.set("spark.sql.files.openCostInBytes", "0")
    try:
        yield
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")
        spark.conf.unset("spark.sql.files.openCostInBytes")


def test_training_table_and_model_match_an_independent_reading(spark, tmp_path: Path, small_splits) -> None:
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.model_selection import train_test_split

    csv = tmp_path / "messy (export).csv"
    _write_messy_csv(csv)
    out = data.training_path(str(tmp_path / "work"), "build_model", "manual__identity")
    report = preprocess_data.run(spark, str(csv), "price", out)
    assert len([p for p in Path(out).iterdir() if p.suffix == ".parquet"]) > 1, "several tasks write the table"

    # the training table: the raw rows, typed, under their own names
    expected_X, expected_y = _reference_rows(csv, "price")
    X, y = data.read_training(spark, out)
    assert report.columns == NAMES and report.text_columns == TEXT
    assert report.dropped_all_null_columns == ["1st empty"]
    assert report.rows_out == len(expected_y) and report.dropped_null_target == 3_000 - len(expected_y)
    assert list(X.columns) == NAMES
    for name in NAMES:
        if name in TEXT:
            assert X[name].dtype == object and (X[name].isna() == expected_X[name].isna()).all(), name
            assert (X[name].dropna() == expected_X[name].dropna()).all(), name
        else:
            np.testing.assert_allclose(X[name].to_numpy(), expected_X[name].to_numpy(), rtol=0, atol=1e-12,
                                       equal_nan=True, err_msg=name)
    np.testing.assert_array_equal(y.to_numpy(), expected_y.to_numpy())
    # the same table through Spark (any cluster path) as from the disk (the local stack)
    through_spark = data.split_xy(spark.read.parquet(out).toPandas())
    pd.testing.assert_frame_equal(through_spark[0], X)
    pd.testing.assert_series_equal(through_spark[1], y)

    # the model's first step: medians and categories of the training split, the same codes
    fitted = train_model.run(X, y, max_depth=6, n_estimators=5, **SPLIT)
    train, test = train_test_split(np.arange(len(expected_y)), **SPLIT)
    assert fitted.X_train.index.tolist() == train.tolist()
    matrix, categories = _reference_matrix(expected_X, train)
    prepare = fitted.model.named_steps[model.PREPARE_STEP]
    assert list(prepare.get_feature_names_out()) == list(matrix.columns)
    encoder = prepare.named_transformers_["text"]
    assert [[v for v in cats if isinstance(v, str)] for cats in encoder.categories_] == [categories[c] for c in TEXT]
    ours = prepare.transform(X)
    np.testing.assert_allclose(ours, matrix.to_numpy(), rtol=0, atol=1e-12)
    codes = ours[:, -len(TEXT):]
    np.testing.assert_array_equal(codes, matrix[TEXT].to_numpy())
    unseen = expected_X["model id"].notna() & ~expected_X["model id"].isin(categories["model id"])
    assert unseen.sum() > 0 and (codes[unseen.to_numpy(), 0] == -1).all()  # held-out ids never seen in training

    # the forest: the same trees as one fitted on the hand-made matrix, the same predictions and metrics
    reference = RandomForestRegressor(max_depth=6, n_estimators=5, random_state=42, n_jobs=-1)
    reference.fit(matrix.iloc[train].to_numpy(), expected_y.iloc[train])
    forest = fitted.model.named_steps[model.FOREST_STEP]
    for ours_tree, theirs in zip(forest.estimators_, reference.estimators_, strict=True):
        for part in ("feature", "threshold", "children_left", "children_right", "value"):
            np.testing.assert_array_equal(getattr(ours_tree.tree_, part), getattr(theirs.tree_, part), err_msg=part)
    # the forest's threads add the trees' predictions up in any order: equal to the last bits
    np.testing.assert_allclose(fitted.model.predict(X), reference.predict(matrix.to_numpy()), rtol=1e-12)
    expected_metrics = model.regression_metrics(expected_y.iloc[test], reference.predict(matrix.iloc[test].to_numpy()))
    assert fitted.metrics == pytest.approx(expected_metrics, rel=1e-12)
    assert all(math.isfinite(v) for v in fitted.metrics.values())


#: raw rows as a user's file brings them: unseen and missing categories, missing numbers
RAW_ROWS = [
    {"model id": "m-never-seen", "size (m2)": None, "a.b": 3.0, "a b": 0.005, "colour": None},
    {"model id": "m-0001", "size (m2)": 48.5, "a.b": None, "a b": None, "colour": "red"},
    {"model id": None, "size (m2)": 50.0, "a.b": 1.0, "a b": 0.002, "colour": "purple"},
]
_SCORE_WITHOUT_THE_JOBS = """
import importlib.util, json, sys
assert importlib.util.find_spec("mlopsctl_jobs") is None, "mlopsctl_jobs is importable here"
sys.modules["mlopsctl_jobs"] = None  # and stays so: any import of it by the model fails
import mlflow, pandas as pd
mlflow.set_tracking_uri(sys.argv[1])
loaded = mlflow.pyfunc.load_model(sys.argv[2])
rows = pd.DataFrame(json.loads(sys.argv[3]))
print("PREDICTIONS " + json.dumps([float(v) for v in loaded.predict(rows)]))
"""


def test_the_registered_model_scores_raw_rows_without_the_jobs_package(connect_server, tmp_path: Path) -> None:
    """preprocess_data and train_model, run as the local backend runs them, log and register the Pipeline: its signature is on the raw columns, its version
    says it takes raw rows, its run holds the held-out rows; a process that cannot import mlopsctl_jobs
    loads it with pyfunc and scores raw rows (unseen category -> -1, missing number -> the median)."""
    import mlflow

    csv = tmp_path / "messy.csv"
    _write_messy_csv(csv, rows=600)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = ["--dag-id", "build_model", "--run-id", "manual__raw", "--work-dir", str(tmp_path / "work"),
              "--data", str(csv), "--target", "price", "--tracking-uri", uri, "--registry-uri", uri]
    jobs = Path(train_model.__file__).resolve().parent
    job_env = {**os.environ, "SPARK_REMOTE": connect_server.url}
    for job, extra in (("preprocess_data.py", []),
                       ("train_model.py", ["--max-depth", "6", "--n-estimators", "10", "--register-model", "raw-rf"])):
        ran = subprocess.run([sys.executable, str(jobs / job), *common, *extra], cwd=tmp_path, env=job_env,
                             capture_output=True, text=True, timeout=600, check=False)
        assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-3000:]
    assert "ordinal-encoded: model id (" in ran.stdout and "median-imputed: size (m2)=" in ran.stdout

    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    version = client.get_model_version("raw-rf", "1")
    assert version.tags[tracking.INPUT_TAG] == tracking.INPUT_RAW and version.tags[tracking.TARGET_TAG] == "price"
    mlflow.set_tracking_uri(uri)
    info = mlflow.models.get_model_info("models:/raw-rf/1")
    inputs = info.signature.inputs.to_dict()
    assert [(c["name"], c["type"], c.get("required", True)) for c in inputs] == [
        (name, "string" if name in TEXT else "double", True) for name in NAMES]

    # the held-out rows beside it: raw input columns and the target under their own names
    split = Path(mlflow.artifacts.download_artifacts(run_id=version.run_id, artifact_path=tracking.EVAL_SPLIT_ARTIFACT,
                                                     dst_path=str(tmp_path / "eval")))
    held_out = pd.read_parquet(split)
    assert list(held_out.columns) == [*NAMES, "price"]
    run = client.get_run(version.run_id)
    assert len(held_out) == int(run.data.params["n_test"]) and held_out["model id"].dtype == object

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SPARK_REMOTE")}
    done = subprocess.run([sys.executable, "-c", _SCORE_WITHOUT_THE_JOBS, uri, "models:/raw-rf/1",
                           json.dumps(RAW_ROWS)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    scored = json.loads(done.stdout.split("PREDICTIONS ", 1)[1].splitlines()[0])

    pipeline = mlflow.sklearn.load_model("models:/raw-rf/1")
    rows = pd.DataFrame(RAW_ROWS)
    np.testing.assert_allclose(scored, pipeline.predict(rows), rtol=1e-12)
    prepare = pipeline.named_steps[model.PREPARE_STEP]
    matrix = pd.DataFrame(prepare.transform(rows), columns=prepare.get_feature_names_out())
    imputer = prepare.named_transformers_["numeric"]
    medians = dict(zip(imputer.feature_names_in_, imputer.statistics_, strict=True))
    assert matrix["model id"].tolist()[::2] == [-1.0, -1.0]  # unseen, missing
    assert matrix["colour"].tolist()[::2] == [-1.0, -1.0]  # missing, unseen
    assert matrix["size (m2)"].iloc[0] == medians["size (m2)"] and matrix["a.b"].iloc[1] == medians["a.b"]
