"""`python -m bench --quick` end to end, in a subprocess: every row of every table is measured.

A row the quick run could not measure fails the test with its reason. Every row must also appear in both
latest.json and latest.md. No timing is asserted: these machines are shared and noisy.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _ctx(quick: bool):
    from bench.common import BenchContext

    return BenchContext(quick=quick, runs=1, work=Path("/nonexistent"))


def _expected_rows() -> list[tuple[str, str]]:
    """The rows `--quick` must measure."""
    from bench import BENCHMARKS
    from bench.common import planned_rows

    return [row for mod in BENCHMARKS for row in planned_rows(mod, _ctx(quick=True))]


def _omitted() -> dict[str, str]:
    """The rows the benchmarks leave out of `--quick`, with why."""
    from bench import BENCHMARKS
    from bench.common import quick_omissions

    return {key: why for mod in BENCHMARKS for key, why in quick_omissions(mod).items()}


def test_expected_rows_cover_every_benchmark() -> None:
    keys = [k for k, _ in _expected_rows()]
    prefixes = {k.split(".")[0] for k in keys}
    assert prefixes == {"startup", "stack", "orchestration", "grid", "scale", "score", "waiting", "scaleout", "install"}
    assert len(set(keys)) == len(keys), "row keys must be unique"


def test_rows_picks_the_rows_under_its_prefixes() -> None:
    from bench import scale
    from bench.common import BenchContext, planned_rows

    ctx = BenchContext(quick=False, runs=1, work=Path("/nonexistent"), rows=("scale.1000000", "scale.grid.peer"))
    assert [key for key, _ in planned_rows(scale, ctx)] == [
        "scale.1000000.mlopsctl", "scale.1000000.floor", "scale.grid.peer"]
    assert ctx.wants("scale.1000000.") and ctx.wants("scale.grid.") and not ctx.wants("scale.300000.")


def test_rows_left_out_of_quick_are_rows_of_the_full_run_with_a_reason() -> None:
    from bench import BENCHMARKS

    full = {key for mod in BENCHMARKS for key, _what in mod.expected_rows(_ctx(quick=False))}
    quick = {key for key, _what in _expected_rows()}
    for key, why in _omitted().items():
        assert key in full, f"{key} is not a row of the full run"
        assert key not in quick
        assert why.strip(), f"{key} is left out of --quick without a reason"


@pytest.mark.integration
@pytest.mark.slow
def test_bench_quick_measures_every_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPSCTL_", "AIRFLOW__"))}
    env["HOME"] = pwd.getpwuid(os.getuid()).pw_dir  # the real home: uv/pip caches for the airflowctl peer
    out = tmp_path / "results"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", "--quick", "--results-dir", str(out)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _stdout, stderr = proc.communicate(timeout=2400)  # a hang guard, not a performance assertion
    except BaseException:
        proc.terminate()  # SIGTERM: the bench stops every server it started before exiting
        proc.communicate(timeout=180)
        raise
    assert proc.returncode == 0, stderr[-3000:]

    doc = json.loads((out / "latest.json").read_text())
    with capsys.disabled():  # where a CI run's minutes went, for whoever trims the quick mode
        print(f"\n[bench --quick] seconds per benchmark: {json.dumps(doc['meta']['seconds_per_benchmark'])}")
    rows = {r["key"]: r for r in doc["rows"]}
    md = (out / "latest.md").read_text()
    expected = _expected_rows()
    missing = [k for k, _ in expected if k not in rows]
    assert not missing, f"rows not produced: {missing}"
    unmeasured = {k: rows[k]["reason"] for k, _ in expected if not rows[k]["measured"]}
    assert not unmeasured, f"rows not measured: {unmeasured}"
    absent_from_md = [k for k, _ in expected if rows[k]["what"] not in md]
    assert not absent_from_md, f"rows missing from latest.md: {absent_from_md}"
    assert "not measured" not in md
    for key in _omitted():
        assert key not in rows
        assert f"Left out of --quick: {key}: " in md
    assert doc["meta"]["mode"] == "quick"
    if hasattr(os, "sched_setaffinity"):
        assert "each worker pinned to a CPU of its own" in rows["scaleout.w1"]["note"]


def test_latest_md_of_a_quick_run_names_the_rows_it_left_out() -> None:
    from bench import scaleout
    from bench.common import Row
    from bench.report import render_markdown

    meta = {"mode": "quick", "runs_per_figure": 1, "seconds": 1.0, "finished_utc": "-",
            "machine": {"cores": 2, "python": "3.11"}}
    rows = [Row(scaleout.NAME, "scaleout.w1", "1 worker", stats={"n": 1, "median": 1.0, "min": 1.0, "max": 1.0})]
    quick = render_markdown(rows, meta, [scaleout])
    full = render_markdown(rows, meta | {"mode": "full"}, [scaleout])
    for key, why in scaleout.NOT_IN_QUICK.items():
        assert f"Left out of --quick: {key}: {why}" in quick
        assert key not in full
