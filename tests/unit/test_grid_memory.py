"""The Spark grid's per-worker memory bound (`mlopsctl_jobs.grid.check_worker_memory`): a grid whose largest
fit would not fit one Python worker is refused before anything reaches Spark, naming the bound and the
single-node grid-search. No Spark here: the check runs before the first Spark call."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "spark_jobs"))
try:
    from mlopsctl_jobs import cli, grid
finally:
    sys.path.remove(str(REPO / "spark_jobs"))


class _NoSpark:
    """A session that fails the test on first use: the refusal must come before any Spark work."""

    def __getattr__(self, name: str):
        raise AssertionError(f"spark.{name} used before the memory check refused the grid")


def _frame(rows: int, features: int = 10):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(rows, features)), columns=[f"f{i}" for i in range(features)])
    return X, pd.Series(rng.normal(size=rows))


@pytest.mark.parametrize(("text", "size"), [
    ("", grid.DEFAULT_WORKER_MEMORY), (None, grid.DEFAULT_WORKER_MEMORY), ("1g", 1 << 30), ("768m", 768 << 20),
    ("1.5G", 3 << 29), ("2048", 2 << 30), ("512mb", 512 << 20), ("0", 0), (" 4 GiB ", 4 << 30),
])
def test_sizes_read_as_spark_writes_them(text, size) -> None:
    assert grid.parse_memory(text) == size


def test_a_bad_size_is_a_grid_error() -> None:
    with pytest.raises(grid.GridError, match="not a size such as 1g"):
        grid.parse_memory("lots")


def test_the_estimate_matches_the_forest_of_the_issue() -> None:
    """300 unbounded trees on 43k training rows: about 1.2 GB of nodes, over serverless's 1 GB."""
    assert grid.tree_nodes(1000, 43_000) == 55_900
    assert grid.tree_nodes(3, 43_000) == 15  # a full binary tree of 3 levels below the root
    forest = 300 * grid.tree_nodes(1000, 43_000) * grid.TREE_NODE_BYTES
    assert 1.1e9 < forest < 1.3e9


def test_the_spark_grid_refuses_a_grid_past_the_bound_before_any_spark_work() -> None:
    X, y = _frame(43_000 * 3 // 2)  # 3-fold CV: each fold trains on 43k rows
    points = grid.grid_points([5, 1000], [100, 300])
    need = grid.worker_memory(X, y, points, 3)
    assert (need.max_depth, need.n_estimators) == (1000, 300)
    assert need.data_bytes > X.memory_usage(index=False).sum()  # the worker's rows plus the fold's copy
    with pytest.raises(grid.GridError) as err:
        grid.run_grid_spark(_NoSpark(), X, y, points, 3, 0)
    message = str(err.value)
    assert "per-worker memory bound of 1.00 GiB" in message and "MLOPSCTL_GRID_WORKER_MEMORY" in message
    assert "max_depth=1000 n_estimators=300" in message
    assert "`mlopsctl grid-search` (without --spark)" in message


def test_a_grid_within_the_bound_passes_and_zero_turns_the_check_off() -> None:
    X, y = _frame(353)  # the diabetes training split
    points = grid.grid_points([3, 6, 80], [5, 10, 100])
    assert grid.check_worker_memory(X, y, points, 3, grid.DEFAULT_WORKER_MEMORY).total < 50 << 20
    with pytest.raises(grid.GridError):
        grid.check_worker_memory(X, y, points, 3, 1 << 20)
    assert grid.check_worker_memory(X, y, points, 3, 0).total > 1 << 20


def test_the_job_exits_without_retry_on_a_bad_bound(capsys: pytest.CaptureFixture[str]) -> None:
    """grid_search_spark.py's --worker-memory (from MLOPSCTL_GRID_WORKER_MEMORY): a bad value is exit 3, one
    `mlopsctl-error:` line, before a Spark session is made."""
    spec = importlib.util.spec_from_file_location("grid_search_spark_job", REPO / "spark_jobs" / "grid_search_spark.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    with pytest.raises(SystemExit) as exit_:
        job.main(["--dag-id", "grid_search_spark", "--run-id", "r1", "--work-dir", "/nowhere", "--max-depth", "3",
                  "--n-estimators", "5", "--worker-memory", "lots"])
    assert exit_.value.code == cli.EXIT_NO_RETRY
    assert "mlopsctl-error: worker memory 'lots' is not a size" in capsys.readouterr().err


def test_text_columns_count_their_strings_and_the_encoded_copy() -> None:
    """Raw rows reach the workers with their text: the estimate counts each string (pandas' deep size), and
    per training-fold cell the fold's copy and the float64 matrix the Pipeline encodes it into."""
    X, y = _frame(1_000, features=2)
    with_text = X.assign(city=[f"city number {i % 50}" for i in range(len(X))])
    fold_rows = len(X) - len(X) // 3
    more = grid.worker_memory(with_text, y, [(3, 5)], 3).data_bytes - grid.worker_memory(X, y, [(3, 5)], 3).data_bytes
    assert more == with_text["city"].memory_usage(index=False, deep=True) + 16 * fold_rows
