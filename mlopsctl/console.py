"""The one place that writes to the terminal: data to stdout, progress and errors to stderr."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from rich.console import Console as RichConsole
from rich.markup import escape


def _no_color() -> bool:
    return bool(os.environ.get("NO_COLOR"))


class Console:
    """Wraps two rich consoles. In --json mode only JSON goes to stdout."""

    def __init__(self, *, json_mode: bool = False, quiet: bool = False):
        self.json_mode = json_mode
        self.quiet = quiet
        self.out = RichConsole(no_color=_no_color(), highlight=False, soft_wrap=False)
        self.err = RichConsole(stderr=True, no_color=_no_color(), highlight=False)

    @property
    def interactive(self) -> bool:
        """True when live displays/spinners are appropriate (stderr is a TTY, not CI, not --json)."""
        return self.err.is_terminal and not self.json_mode and not os.environ.get("CI")

    # --- data (stdout) ---------------------------------------------------------------------------
    def print(self, *objects: Any, **kwargs: Any) -> None:
        if not self.json_mode:
            self.out.print(*objects, **kwargs)

    def json(self, data: Any) -> None:
        sys.stdout.write(json.dumps(data, indent=2, default=str, sort_keys=False) + "\n")
        sys.stdout.flush()

    # --- messages (stderr) -----------------------------------------------------------------------
    def info(self, message: str) -> None:
        if not self.quiet and not self.json_mode:
            self.err.print(message)

    def status_line(self, message: str) -> None:
        """Progress lines; shown even in --json mode (they go to stderr), hidden with --quiet."""
        if not self.quiet:
            self.err.print(message)

    def success(self, message: str) -> None:
        if not self.quiet:
            self.err.print(f"[green]✓[/green] {message}")

    def warn(self, message: str) -> None:
        self.err.print(f"[yellow]Warning:[/yellow] {escape(message)}")

    def error(self, message: str, hint: str | None = None) -> None:
        text = f"[bold red]Error:[/bold red] {escape(message)}"
        if hint:
            text += f"\n[dim]Hint:[/dim] {escape(hint)}"
        self.err.print(text, soft_wrap=True)
