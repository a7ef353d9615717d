"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import psutil
import pytest


@pytest.fixture
def procs() -> Iterator[list[psutil.Process]]:
    """Processes a test spawned; all killed at the end whatever happens."""
    spawned: list[psutil.Process] = []
    yield spawned
    for proc in spawned:
        try:
            for child in proc.children(recursive=True):
                child.kill()
            proc.kill()
        except psutil.NoSuchProcess:
            pass
