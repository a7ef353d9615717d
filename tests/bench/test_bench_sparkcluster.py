"""The bench's scale-out: each standalone worker gets CPUs of its own, and 1- and 2-worker runs alternate."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.sparkcluster import StandaloneCluster


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this OS")
def test_workers_get_the_next_cpus_round_robin(tmp_path: Path) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    cluster = StandaloneCluster(tmp_path)
    assert cluster.worker_cpus(1) == {cpus[0]}
    cluster.pinned.append({cpus[0]})
    assert cluster.worker_cpus(1) == {cpus[1 % len(cpus)]}
    cluster.pinned.append({cpus[1 % len(cpus)]})
    assert cluster.worker_cpus(len(cpus)) == set(cpus)


def test_scaleout_runs_alternate_so_that_each_pair_has_both_sizes() -> None:
    from bench.scaleout import run_order

    assert run_order(1) == [1, 2]
    assert run_order(3) == [1, 2, 2, 1, 1, 2]
