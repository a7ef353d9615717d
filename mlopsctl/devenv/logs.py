"""The local stack's log files: their last lines, and the lines appended to them (`mlopsctl dev logs -f`)."""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path


def tail(path: Path, lines: int = 20, *, end: int | None = None) -> str:
    """Last `lines` lines of a text file ('' if missing), of its first `end` bytes if given."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell() if end is None else min(end, fh.tell())
            start = max(0, size - 256 * 1024)
            fh.seek(start)
            data = fh.read(size - start)
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(deque(text.splitlines(), maxlen=lines))


def file_sizes(paths: dict[str, Path]) -> dict[str, int]:
    """Current size of each file (0 for one that does not exist yet)."""
    return {name: (p.stat().st_size if p.exists() else 0) for name, p in paths.items()}


def follow_lines(
    paths: dict[str, Path], positions: dict[str, int], poll: float = 0.5
) -> Iterator[tuple[str, str]]:
    """Yield (name, line) for every complete line appended to the files after `positions`, forever (like
    tail -F: a truncated or recreated file is read again from its start). `positions` is updated in place."""
    while True:
        for name, path in paths.items():
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            if size < positions[name]:
                positions[name] = 0
            if size == positions[name]:
                continue
            with open(path, "rb") as fh:
                fh.seek(positions[name])
                data = fh.read()
            cut = data.rfind(b"\n") + 1  # complete lines only; a partial last line waits for the next round
            if cut == 0:
                continue
            positions[name] += cut
            for line in data[:cut].decode("utf-8", errors="replace").splitlines():
                yield name, line
        time.sleep(poll)
