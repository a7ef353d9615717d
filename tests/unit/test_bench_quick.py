"""Smoke run of the benchmarks: `python -m bench --quick` end to end, in a subprocess.

Asserts only that every table row was produced (a figure, or "not measured: <reason>"), in both
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

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _expected_rows() -> list[tuple[str, str]]:
    from bench import BENCHMARKS
    from bench.common import BenchContext

    ctx = BenchContext(quick=True, runs=1, work=Path("/nonexistent"))
    return [row for mod in BENCHMARKS for row in mod.expected_rows(ctx)]


def test_expected_rows_cover_every_issue_item() -> None:
    keys = {k for k, _ in _expected_rows()}
    prefixes = {k.split(".")[0] for k in keys}
    assert prefixes == {"startup", "stack", "orchestration", "grid", "waiting", "scaleout", "install"}
    assert len(keys) == len(_expected_rows()), "row keys must be unique"


def test_bench_quick_produces_every_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
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
    rows = {r["key"]: r for r in doc["rows"]}
    md = (out / "latest.md").read_text()
    missing = [k for k, _ in _expected_rows() if k not in rows]
    assert not missing, f"rows not produced: {missing}"
    for key, _what in _expected_rows():
        row = rows[key]
        assert row["measured"] or row["reason"], f"{key}: neither a figure nor a reason"
        assert row["what"] in md, f"{key} missing from latest.md"
    assert doc["meta"]["mode"] == "quick"
    if rows["scaleout.w1"]["measured"] and hasattr(os, "sched_setaffinity"):
        assert "each worker pinned to a CPU of its own" in rows["scaleout.w1"]["note"]
    with capsys.disabled():  # where a CI run's minutes went, for whoever trims the quick mode
        print(f"\n[bench --quick] seconds per benchmark: {json.dumps(doc['meta']['seconds_per_benchmark'])}")
