"""Benchmarks of mlopsctl against the tools a user would otherwise use (`python -m bench`).

What each measures, against which peer, and the latest figures: docs/benchmarks.md.
"""

from __future__ import annotations

from bench import gridsearch, install, orchestration, scale, scaleout, score, stack, startup, waiting

# Run order: the stack is started once by `stack` and reused by the ones after it (stopped before
# `scaleout`, which wants the CPUs to itself; `install` builds throwaway venvs, last).
BENCHMARKS = [startup, stack, orchestration, gridsearch, scale, score, waiting, scaleout, install]
