"""dags/common/localspark.py: the facts about the installed Spark that the tasks and mlopsctl's stack share."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.dags.conftest import DAGS_DIR

if str(DAGS_DIR) not in sys.path:
    sys.path.append(str(DAGS_DIR))

from common import localspark


def test_spark_home_is_the_installed_distribution() -> None:
    home = localspark.spark_home()
    assert home is not None and (home / "bin" / "spark-submit").is_file() and (home / "jars").is_dir()
    assert "pyspark" not in sys.modules or home == Path(sys.modules["pyspark"].__file__).parent


def test_spark_home_is_none_for_a_connect_only_pyspark(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pyspark").mkdir()
    (tmp_path / "pyspark" / "__init__.py").write_text("")  # what pyspark-client installs: no bin/, no jars/
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "pyspark", raising=False)
    assert localspark.spark_home() is None


@pytest.mark.parametrize(
    ("master", "loopback"),
    [("local", True), ("local[*]", True), ("local[2,3]", True), ("spark://127.0.0.1:7077", True),
     ("spark://localhost:7077", True), ("spark://10.0.0.5:7077", False), ("yarn", False), ("k8s://https://k:443", False)],
)
def test_loopback_masters(master: str, loopback: bool) -> None:
    assert localspark.is_loopback_master(master) is loopback
