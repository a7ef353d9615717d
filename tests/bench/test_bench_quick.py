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


def _expected_rows() -> list[tuple[str, str]]:
    from bench import BENCHMARKS
    from bench.common import BenchContext

    ctx = BenchContext(quick=True, runs=1, work=Path("/nonexistent"))
    return [row for mod in BENCHMARKS for row in mod.expected_rows(ctx)]


def test_expected_rows_cover_every_benchmark() -> None:
    keys = [k for k, _ in _expected_rows()]
    prefixes = {k.split(".")[0] for k in keys}
    assert prefixes == {"startup", "stack", "orchestration", "grid", "waiting", "scaleout", "install"}
    assert len(set(keys)) == len(keys), "row keys must be unique"


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
    assert doc["meta"]["mode"] == "quick"
    if hasattr(os, "sched_setaffinity"):
        assert "each worker pinned to a CPU of its own" in rows["scaleout.w1"]["note"]
