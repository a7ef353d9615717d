"""What a --data value names, judged the same way on both sides: the CLI (`mlopsctl.datasources.data_kind`,
`check_data`) and the job (`mlopsctl_jobs.data.source_kind`, its own copy: the jobs import nothing from
mlopsctl).

The job's module is loaded from its file: at import it needs only the standard library."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from mlopsctl import datasources, pipelines
from mlopsctl.errors import ExitCode, InputError

REPO = Path(__file__).resolve().parents[2]


def _job_data():
    spec = importlib.util.spec_from_file_location("mlopsctl_jobs_data_as_written",
                                                  REPO / "spark_jobs" / "mlopsctl_jobs" / "data.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


job_data = _job_data()

KINDS = [
    ("s3://bucket/sales/houses.csv", "uri"),
    ("s3a://bucket/houses", "uri"),
    ("abfss://raw@acct.dfs.core.windows.net/sales/houses.parquet", "uri"),
    ("gs://bucket/dir/", "uri"),
    ("dbfs:/FileStore/houses.csv", "uri"),
    ("file:/tmp/houses.csv", "uri"),
    ("file:///tmp/houses.csv", "uri"),
    ("/Volumes/main/sales/raw/houses.csv", "volume"),
    ("/Workspace/Users/me@example.com/houses.csv", "workspace"),
    ("/dbfs/FileStore/houses.csv", "dbfs"),
    ("main.sales.houses", "table"),
    ("sales.houses", "table"),
    ("`my-catalog`.sales.houses", "table"),
    ("sales.houses_2026", "table"),
    ("houses.csv", "local"),
    ("sales.houses.csv", "local"),  # a file name, not catalog.schema.table
    ("houses.parquet", "local"),
    ("data/houses.pq", "local"),
    ("houses", "local"),  # one part: a relative path (the job still tries the catalog when no such file)
    ("./main.sales.houses", "local"),
    ("a.b.c.d", "local"),
    ("C:/data/houses.csv", "local"),  # a drive letter is no URI scheme
    ("~/houses.csv", "local"),
    ("/tmp/houses.csv", "local"),
    ("1sales.houses", "local"),
]


@pytest.mark.parametrize(("data", "kind"), KINDS)
def test_cli_and_job_classify_alike(data: str, kind: str) -> None:
    assert datasources.data_kind(data) == kind
    assert job_data.source_kind(data) == kind


def test_the_two_copies_use_the_same_rules() -> None:
    assert job_data.FILE_EXTENSIONS == datasources.FILE_EXTENSIONS
    assert job_data._URI_RE.pattern == datasources._URI_RE.pattern
    assert job_data._TABLE_RE.pattern == datasources._TABLE_RE.pattern


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ("/dbfs/FileStore/houses.csv", "dbfs:/FileStore/houses.csv"),
        ("/Volumes/main/sales/raw/houses.csv", "/Volumes/main/sales/raw/houses.csv"),
        ("s3://bucket/houses", "s3://bucket/houses"),
    ],
)
def test_the_job_hands_spark_the_path_it_reads(data: str, path: str) -> None:
    assert job_data.spark_path(data, job_data.source_kind(data)) == path


class _DriverOnly:
    """A Spark session for `read_workspace_file`: it may build DataFrames from local data, never read a path
    (on serverless, Spark's executors cannot read /Workspace)."""

    def __init__(self) -> None:
        self.frames: list[tuple[object, object]] = []

    @property
    def read(self):
        raise AssertionError("a workspace file was handed to spark.read")

    def createDataFrame(self, data, schema=None):
        self.frames.append((data, schema))
        return data


def test_a_workspace_path_is_read_on_the_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    monkeypatch.setattr(job_data, "read_workspace_file", lambda spark, data, na: seen.append((data, na)) or "df")
    assert job_data.load_source(_DriverOnly(), "/Workspace/Shared/houses.csv", ("NA",)) == "df"
    assert seen == [("/Workspace/Shared/houses.csv", ("NA",))]


def test_a_workspace_csv_reaches_spark_as_text_then_is_typed_like_any_csv(tmp_path, monkeypatch) -> None:
    csv = tmp_path / "houses.csv"
    csv.write_text("size m2,colour,price\n10,red,100\n,NA,200\n")
    typed = []
    monkeypatch.setattr(job_data, "type_csv_columns", lambda df, na: typed.append(na) or df)
    spark = _DriverOnly()
    pdf = job_data.read_workspace_file(spark, str(csv), None)
    [(_, schema)] = spark.frames
    assert [f.name for f in schema.fields] == ["size m2", "colour", "price"]
    assert {f.dataType.simpleString() for f in schema.fields} == {"string"}
    assert pdf.to_dict("list") == {"size m2": ["10", ""], "colour": ["red", "NA"], "price": ["100", "200"]}
    assert typed == [job_data.NA_VALUES]  # the CSV missing-value rules apply as to any other CSV


def test_a_workspace_parquet_keeps_its_types(tmp_path) -> None:
    import pandas as pd

    pd.DataFrame({"x": [1.5, 2.5], "target": [1, 2]}).to_parquet(tmp_path / "h.parquet")
    spark = _DriverOnly()
    pdf = job_data.read_workspace_file(spark, str(tmp_path / "h.parquet"))
    assert spark.frames[0][1] is None and pdf["x"].tolist() == [1.5, 2.5] and str(pdf["target"].dtype) == "int64"


@pytest.mark.parametrize(("name", "content", "message"), [
    ("missing.csv", None, "no such workspace file"),
    ("empty.csv", "", "data file is empty"),
    ("notes.txt", "x", "unsupported data format '.txt'"),
    ("blank.csv", "\n", "cannot read"),
])
def test_a_bad_workspace_file_is_bad_data(tmp_path, name: str, content: str | None, message: str) -> None:
    if content is not None:
        (tmp_path / name).write_text(content)
    with pytest.raises(job_data.DataError, match=message):
        job_data.read_workspace_file(_DriverOnly(), str(tmp_path / name))


@pytest.mark.parametrize("compute", [None, "local", "spark", "databricks"])
@pytest.mark.parametrize("data", ["main.sales.houses", "s3://bucket/houses.csv", "/Volumes/main/sales/raw/h.csv",
                                  "/Workspace/Shared/h.csv", "dbfs:/FileStore/h.csv"])
def test_cluster_data_passes_through_unchanged(data: str, compute: str | None, project: Path) -> None:
    assert datasources.check_data(f"  {data} ", compute=compute) == data


@pytest.mark.parametrize("compute", [None, "local", "spark"])
def test_local_path_is_checked_and_made_absolute_off_databricks(compute, project: Path) -> None:
    (project / "h.csv").write_text("a,target\n1,2\n")
    assert datasources.check_data("h.csv", compute=compute) == str(project / "h.csv")
    with pytest.raises(InputError, match="does not exist") as err:
        datasources.check_data("missing.csv", compute=compute)
    assert "/Volumes/" in err.value.hint and "catalog.schema.table" in err.value.hint


def test_local_path_is_refused_when_the_tasks_run_on_databricks(project: Path) -> None:
    (project / "h.csv").write_text("a,target\n1,2\n")
    for data in ("h.csv", str(project / "h.csv"), "missing.csv"):
        with pytest.raises(InputError) as err:
            datasources.check_data(data, compute="databricks", dag_id="build_model")
        exc = err.value
        assert exc.exit_code == ExitCode.USAGE
        assert exc.message.startswith(f"--data: {data} is a path on this machine, but build_model's tasks run on "
                                      "Databricks, which cannot see this machine's files.")
        assert "/Volumes/<catalog>/<schema>/<volume>" in exc.message and "catalog.schema.table" in exc.message
        name = Path(data).name
        assert f"databricks fs cp {data} dbfs:/Volumes/<catalog>/<schema>/<volume>/{name}" in exc.hint
        assert f"--data /Volumes/<catalog>/<schema>/<volume>/{name}" in exc.hint


def test_a_table_like_name_that_exists_here_is_a_local_path(project: Path) -> None:
    folder = project / "sales.houses"
    folder.mkdir()
    (folder / "part-0.parquet").write_bytes(b"PAR1")
    assert datasources.check_data("sales.houses") == str(folder)
    with pytest.raises(InputError, match="is a path on this machine"):
        datasources.check_data("sales.houses", compute="databricks")


def test_the_conf_builders_pass_a_table_name_through(project: Path) -> None:
    # the README's `--data main.sales.houses`: no longer refused as a missing file
    assert pipelines.build_conf("build-model", data="main.sales.houses")["data"] == "main.sales.houses"
    assert pipelines.build_conf("grid-search", data="s3://bucket/h.parquet")["data"] == "s3://bucket/h.parquet"


@pytest.mark.parametrize(
    ("tags", "compute"),
    [
        ([{"name": "mlopsctl", "dag_id": "d"}, {"name": "compute:databricks", "dag_id": "d"}], "databricks"),
        ([{"name": "compute:local"}], "local"),
        (["mlopsctl", "compute:spark"], "spark"),
        ([{"name": "mlopsctl"}, {"name": "build-model"}], None),  # a deployment older than the tag
        ([], None),
        ([{"name": "compute:"}], None),
    ],
)
def test_compute_of_reads_the_dag_tag(tags, compute) -> None:
    assert datasources.compute_of(tags) == compute
