"""preprocess_data: loading, validation and typing into the training table on a real local SparkSession."""

from __future__ import annotations

import math
from pathlib import Path

import preprocess_data
import pytest
from mlopsctl_jobs import cli, data, model


def _training(spark, source, target="target"):
    df, report = data.prepare_training(data.load_source(spark, source), target)
    return df.toPandas().sort_values(data.ROW_ID_COL).reset_index(drop=True), report


def test_default_data_is_bundled_diabetes(spark) -> None:
    pdf, report = _training(spark, None)
    assert len(pdf) == 442
    assert report.columns == ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
    assert report.text_columns == []
    assert list(pdf.columns) == [data.ROW_ID_COL, *report.columns, data.TARGET_COL]
    assert not pdf.isna().any().any()
    assert pdf[data.TARGET_COL].iloc[0] == pytest.approx(151.0)


def test_messy_csv_is_typed_not_encoded(spark, tmp_path: Path) -> None:
    csv = tmp_path / "messy data; $(touch pwned) 'q'.csv"
    csv.write_text(
        "size m2,colour,empty,price\n"
        "10,red,,100\n"
        ",blue,,200\n"
        "30,,,\n"  # null target: row dropped
        "40,red,,400\n"
        "50,green,,500\n"
    )
    pdf, report = _training(spark, str(csv), target="price")
    assert report.rows_in == 5 and report.rows_out == 4 and report.dropped_null_target == 1
    assert report.dropped_all_null_columns == ["empty"]
    assert report.columns == ["size m2", "colour"] and report.text_columns == ["colour"]
    # raw values under the raw names: the gap stays a gap, the text stays text (the model fills and encodes)
    assert pdf["size m2"].tolist()[:1] + pdf["size m2"].tolist()[2:] == [10.0, 40.0, 50.0]
    assert math.isnan(pdf["size m2"].iloc[1])
    assert pdf["colour"].tolist() == ["red", "blue", "red", "green"]
    assert pdf[data.TARGET_COL].tolist() == [100.0, 200.0, 400.0, 500.0]
    assert not (tmp_path / "pwned").exists()


def test_string_target_with_numbers_is_accepted(spark, tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a,y\n1,1.5\n2, 2.5\n3,NaN\n")
    pdf, report = _training(spark, str(path), target="y")
    assert report.rows_out == 2
    assert pdf[data.TARGET_COL].tolist() == [1.5, 2.5]


@pytest.mark.parametrize(
    ("name", "content", "target", "message"),
    [
        (None, None, "target", "data file not found"),
        ("data.txt", "a,b\n1,2\n", "b", "unsupported data format '.txt'"),
        ("empty.csv", "", "target", "data file is empty"),
        ("header.csv", "a,target\n", "target", "data has no rows"),
        ("cols.csv", "alpha,beta\n1,2\n", "target", "target column 'target' not found; columns are: alpha, beta"),
        ("str.csv", "a,target\n1,x\n2,y\n", "target", "target column 'target' is not numeric (values such as 'x'"),
        ("nulls.csv", "a,target\n1,\n2,\n", "target", "has no values"),
        ("only.csv", "target\n1\n2\n", "target", "only the target column"),
        ("allnull.csv", "a,b,target\n,,1\n,,2\n", "target", "every feature column is entirely null"),
        ("reserved.csv", "__Target__,target\n1,1\n", "target", "column name '__Target__' is reserved"),
    ],
)
def test_bad_data_fails_with_a_clear_message(spark, tmp_path: Path, name, content, target, message) -> None:
    path = tmp_path / (name or "missing.csv")
    if content is not None:
        path.write_text(content)
    with pytest.raises(data.DataError) as err:
        data.prepare_training(data.load_source(spark, str(path)), target)
    assert message in str(err.value)


def test_parquet_file_and_directory(spark, tmp_path: Path) -> None:
    import pandas as pd

    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "label": [2.0, 4.0, 6.0, 8.0]})
    frame.to_parquet(tmp_path / "one.parquet")
    directory = tmp_path / "dir"
    directory.mkdir()
    frame.iloc[:2].to_parquet(directory / "part-0.parquet")
    frame.iloc[2:].to_parquet(directory / "part-1.parquet")
    for source in (tmp_path / "one.parquet", directory):
        pdf, report = _training(spark, str(source), target="label")
        assert report.rows_out == 4
        assert sorted(pdf["x"].tolist()) == [1.0, 2.0, 3.0, 4.0]


def test_typed_sources_keep_numbers_as_double_and_the_rest_as_text(spark, tmp_path: Path) -> None:
    """A Parquet file's numbers (any width, nullable) become double, NaN a null; booleans and dates become
    text, as the model's signature declares them (double or string)."""
    import datetime

    import pandas as pd

    path = tmp_path / "typed.parquet"
    pd.DataFrame({
        "n": pd.array([1, None, 3], dtype="Int64"),
        "flag": pd.array([True, False, None], dtype="boolean"),
        "day": [datetime.date(2026, 1, 2), None, datetime.date(2026, 3, 4)],
        "f": [1.5, float("nan"), 2.5],
        "y": [1, 2, 3],
    }).to_parquet(path)
    df, report = data.prepare_training(data.load_source(spark, str(path)), "y")
    assert dict(df.dtypes) == {data.ROW_ID_COL: "bigint", "n": "double", "flag": "string", "day": "string",
                               "f": "double", data.TARGET_COL: "double"}
    assert report.columns == ["n", "flag", "day", "f"] and report.text_columns == ["flag", "day"]
    X, y = data.split_xy(df.toPandas())
    assert X["n"].fillna(-1.0).tolist() == [1.0, -1.0, 3.0] and X["f"].isna().tolist() == [False, True, False]
    assert X["flag"].fillna("-").tolist() == ["true", "false", "-"]
    assert X["day"].fillna("-").tolist() == ["2026-01-02", "-", "2026-03-04"]
    assert y.tolist() == [1.0, 2.0, 3.0]


def test_run_writes_the_training_table_keyed_by_run_id(spark, tmp_path: Path) -> None:
    run_id = "manual__2026-11-24T03:00:00+00:00"
    out = data.training_path(str(tmp_path), "build_model", run_id)
    assert ":" not in Path(out).relative_to(tmp_path).as_posix()
    assert out != data.training_path(str(tmp_path), "build_model", run_id.replace(":", "_"))
    report = preprocess_data.run(spark, None, "target", out)
    assert report.rows_out == 442
    X, y = data.load_training(out)
    assert X.shape == (442, 10)
    assert list(X.columns) == report.columns
    assert y.iloc[:3].tolist() == [151.0, 75.0, 141.0]  # source row order kept
    assert all(math.isfinite(v) for v in X.to_numpy().ravel())


def test_missing_training_table_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(data.DataError, match="training table not found .* did preprocess_data run"):
        data.load_training(str(tmp_path / "nope.parquet"))


def test_run_main_exits_3_with_one_error_line(capsys) -> None:
    def body() -> None:
        raise data.DataError("target column 'y' not found; columns are: a, b")

    with pytest.raises(SystemExit) as exc:
        cli.run_main(body)
    assert exc.value.code == cli.EXIT_NO_RETRY
    assert capsys.readouterr().err.strip() == "mlopsctl-error: target column 'y' not found; columns are: a, b"


@pytest.mark.parametrize(("text", "value"), [("80", 80), ("80.0", 80), ("7", 7)])
def test_int_arg(text, value) -> None:
    assert cli.int_arg(text) == value


@pytest.mark.parametrize("text", ["abc", "1.5", ""])
def test_int_arg_rejects(text) -> None:
    import argparse

    with pytest.raises(argparse.ArgumentTypeError):
        cli.int_arg(text)


def test_int_list_arg() -> None:
    assert cli.int_list_arg("80,90,100") == [80, 90, 100]
    assert cli.int_list_arg("[80, 90]") == [80, 90]


def test_catalog_table_name_is_read_as_a_table(spark) -> None:
    import pandas as pd

    spark.createDataFrame(pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [2.0, 4.0, 6.0]})).createOrReplaceTempView(
        "mlopsctl_unit_table"
    )
    pdf, report = _training(spark, "mlopsctl_unit_table", target="y")
    assert report.rows_out == 3 and pdf["x"].tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(data.DataError, match="data file not found: no_such_table"):
        data.load_source(spark, "no_such_table")


def test_schema_qualified_table_name_is_read_with_spark_table(spark) -> None:
    import pandas as pd

    spark.createDataFrame(pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [2.0, 4.0, 6.0]})).createOrReplaceGlobalTempView(
        "mlopsctl_unit_global"
    )
    pdf, report = _training(spark, "global_temp.mlopsctl_unit_global", target="y")
    assert report.rows_out == 3 and pdf["x"].tolist() == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("name", ["no_such_schema.houses", "main.no_such_schema.houses", "global_temp.no_such_view"])
def test_a_missing_table_is_a_data_error_naming_it(spark, name: str) -> None:
    with pytest.raises(data.DataError, match=rf"^table {name} not found"):
        data.load_source(spark, name)


def test_uris_are_read_by_their_extension(spark, tmp_path: Path) -> None:
    import pandas as pd

    csv = tmp_path / "houses.csv"
    csv.write_text("x,note,target\n1,NA,2\n2,a,4\n3,b,6\n")
    directory = tmp_path / "houses_parquet"  # no extension: a Parquet directory
    directory.mkdir()
    pd.DataFrame({"x": [1.0, 2.0], "target": [2.0, 4.0]}).to_parquet(directory / "part-0.parquet")
    pd.DataFrame({"x": [3.0], "target": [6.0]}).to_parquet(directory / "part-1.parquet")
    local, _ = _training(spark, str(csv))
    from_uri, report = _training(spark, csv.as_uri())  # file:///...: straight to spark.read, typed like a local CSV
    assert report.rows_out == 3 and report.text_columns == ["note"]
    assert from_uri.equals(local)
    pdf, report = _training(spark, directory.as_uri())
    assert report.rows_out == 3 and sorted(pdf["x"].tolist()) == [1.0, 2.0, 3.0]


def test_a_missing_or_unsupported_uri_is_a_data_error(spark, tmp_path: Path) -> None:
    missing = (tmp_path / "nope.csv").as_uri()
    with pytest.raises(data.DataError, match=rf"^cannot read {missing}: .*PATH_NOT_FOUND"):
        data.load_source(spark, missing)
    with pytest.raises(data.DataError, match=r"unsupported data format '\.json'"):
        data.load_source(spark, (tmp_path / "x.json").as_uri())


def test_dbfs_is_read_with_a_warning_not_refused(spark, capsys) -> None:
    with pytest.raises(Exception) as err:
        data.load_source(spark, "/dbfs/FileStore/houses.csv")
    assert "dbfs:/FileStore/houses.csv" in str(err.value) or "dbfs" in str(err.value).lower()
    assert "is on DBFS, which Databricks serverless compute and standard access mode limit" in capsys.readouterr().err


def test_csv_missing_value_tokens_are_null_like_in_pandas(spark, tmp_path: Path) -> None:
    import pandas as pd

    csv = tmp_path / "r_export.csv"
    csv.write_text(
        "height,country,weight\n"
        "1.5,NA,60\n"  # NA in a text column: missing there too
        "NA,FR,NA\n"  # NA target: row dropped
        "1.7, NULL ,70\n"
        "N/A,DE,80\n"
        "1.9,FR,nan\n"  # dropped
        "null,None,90\n"
        "2.0,#N/A,100\n"
    )
    expected = pd.read_csv(csv, skipinitialspace=True)  # the notebook's reading of the same file
    assert expected["weight"].dtype == "float64" and int(expected["weight"].isna().sum()) == 2
    pdf, report = _training(spark, str(csv), target="weight")
    assert report.rows_in == 7 and report.rows_out == 5 and report.dropped_null_target == 2
    assert pdf[data.TARGET_COL].tolist() == expected["weight"].dropna().tolist()
    # height: numeric once the tokens are null, the gaps kept for the model's median fill
    assert pdf["height"].fillna(-1.0).tolist() == [1.5, 1.7, -1.0, -1.0, 2.0]
    # country stays text (DE/FR are not numbers); every token reads as missing
    assert report.text_columns == ["country"]
    assert pdf["country"].tolist() == [None, None, "DE", None, None]


def test_custom_na_values_replace_the_default_list(spark, tmp_path: Path) -> None:
    csv = tmp_path / "custom.csv"
    csv.write_text("code,x,y\nNA,1,10\n?,2,20\nUS,-,30\nNA,4,?\n")
    with pytest.raises(data.DataError, match="target column 'y' is not numeric \\(values such as '\\?'"):
        _training(spark, str(csv), target="y")  # by default '?' is a value
    pdf, report = data.prepare_training(data.load_source(spark, str(csv), ("?", "-")), "y")
    pdf = pdf.toPandas().sort_values(data.ROW_ID_COL)
    assert report.rows_out == 3 and report.dropped_null_target == 1  # '?' is missing now
    # 'NA' is a value now ('?' is missing)
    assert report.text_columns == ["code"]
    assert pdf["code"].tolist() == ["NA", None, "US"]
    assert pdf["x"].fillna(-1.0).tolist() == [1.0, 2.0, -1.0]  # '-' is missing


def test_column_names_as_they_come(spark, tmp_path: Path) -> None:
    csv = tmp_path / "names.csv"
    csv.write_text(
        "price (USD),size.m2,rooms/floor,a b,a_b,a.b,price\n"
        "1,10,2,5,6,7,100\n2,20,3,6,7,8,200\n3,30,4,7,8,9,300\n4,40,5,8,9,10,400\n5,50,6,9,10,11,500\n"
    )
    out = data.training_path(str(tmp_path / "work"), "build_model", "manual__names")
    report = preprocess_data.run(spark, str(csv), "price", out)
    names = ["price (USD)", "size.m2", "rooms/floor", "a b", "a_b", "a.b"]
    assert report.columns == names
    X, y = data.load_training(out)  # Spark's Parquet writer keeps every name as it is
    assert list(X.columns) == names
    assert X["a.b"].tolist() == [7.0, 8.0, 9.0, 10.0, 11.0]  # 'a.b' is a column, not a struct field
    fitted = model.train_model(X, y, max_depth=3, n_estimators=5, random_state=0)
    assert list(fitted.feature_names_in_) == names


def test_prepare_report_travels_to_the_next_jobs(spark, tmp_path: Path) -> None:
    csv = tmp_path / "d.csv"
    csv.write_text("a,t\n1,1\n2,NA\n3,3\n4,4\n5,\n")
    out = data.training_path(str(tmp_path / "work"), "build_model", "manual__r")
    report = preprocess_data.run(spark, str(csv), "t", out)
    assert report.dropped_null_target == 2
    assert data.read_rows_dropped(out, spark) == 2
    assert data.read_rows_dropped(out) == 2  # the grid job without Spark reads it with pandas
    assert data.read_rows_dropped(str(tmp_path / "elsewhere" / "training.parquet")) is None


def test_na_values_arg() -> None:
    assert cli.na_values_arg("?, -,,n.a.") == ("?", "-", "n.a.")
    assert cli.na_values_arg("") is None


def test_a_workspace_file_read_on_the_driver_makes_the_same_table_as_spark_reading_it(spark, tmp_path) -> None:
    """`read_workspace_file` (pandas on the driver, then createDataFrame: serverless executors cannot read
    /Workspace) gives the same training table as Spark's own read of the same CSV or Parquet file."""
    import pandas as pd

    csv = tmp_path / "messy.csv"
    csv.write_text("size m2,colour,empty,price\n10,red,,100\n,blue,NA,200\n30,,,\n40,red,,400\n 50 ,green,,500\n")
    parquet = tmp_path / "typed.parquet"
    pd.DataFrame({"x": [1.5, None, 3.5], "kind": ["a", "b", None], "price": [1, 2, 3]}).to_parquet(parquet)
    for path in (csv, parquet):
        driver, driver_report = data.prepare_training(data.read_workspace_file(spark, str(path)), "price")
        cluster, cluster_report = data.prepare_training(data.load_source(spark, str(path)), "price")
        assert driver_report == cluster_report, path.name
        expected = cluster.toPandas().drop(columns=[data.ROW_ID_COL])
        assert driver.toPandas().drop(columns=[data.ROW_ID_COL]).equals(expected), path.name
