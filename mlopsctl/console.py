"""The one place that writes to the terminal: data to stdout, progress and errors to stderr."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, ClassVar, Self

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

    def interrupted(self, message: str, hint: str | None = None) -> None:
        text = f"\n[yellow]{escape(message)}[/yellow]"
        if hint:
            text += f"\n{escape(hint)}"
        self.err.print(text, soft_wrap=True)

    def error(self, message: str, hint: str | None = None) -> None:
        text = f"[bold red]Error:[/bold red] {escape(message)}"
        if hint:
            text += f"\n[dim]Hint:[/dim] {escape(hint)}"
        self.err.print(text, soft_wrap=True)


class RunProgress:
    """What the user sees while a run is triggered and followed (a `mlopsctl.runs.Reporter` and the
    `on_update` callback of `mlopsctl.runs.follow_run`).

    Interactive: a live table of task states and elapsed time on stderr. Otherwise one plain line per
    state change. In --json mode only warnings (stdout stays one JSON document). Use it as a context
    manager around the follow so the live display is stopped on any exit."""

    def __init__(self, console: Console, dag_id: str = "", dag_run_id: str = "", *, live: bool | None = None):
        self.console = console
        self.dag_id = dag_id
        self.dag_run_id = dag_run_id
        self.live = console.interactive if live is None else live
        self._live: Any = None
        self._elapsed_at: tuple[float, float] = (0.0, time.monotonic())
        self._run: Any = None
        self._tasks: list[Any] = []
        self._last_run_state: str | None = None
        self._last_states: dict[tuple[str, int], str | None] = {}

    @property
    def tasks_each_poll(self) -> bool:
        """Task states are only shown outside --json mode: there, tasks are read once at the end."""
        return not self.console.json_mode

    # --- Reporter -------------------------------------------------------------------------------
    def info(self, message: str) -> None:
        self.console.info(escape(message))

    def warn(self, message: str) -> None:
        self.console.warn(message)

    # --- following ------------------------------------------------------------------------------
    def __enter__(self) -> Self:
        if self.live and not self.console.json_mode:
            from rich.live import Live

            self._live = Live(self, console=self.console.err, refresh_per_second=2, transient=False)
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def __rich__(self) -> Any:  # the live display (elapsed ticks between polls)
        from mlopsctl.render import follow_table

        elapsed, at = self._elapsed_at
        return follow_table(self.dag_id, self.dag_run_id, self._run, self._tasks, elapsed + time.monotonic() - at)

    def __call__(self, run: Any, tasks: list[Any], elapsed: float) -> None:
        self._run, self._tasks, self._elapsed_at = run, tasks, (elapsed, time.monotonic())
        if self._live is not None:
            self._live.refresh()
        elif not self.console.json_mode:
            from mlopsctl.render import follow_changes

            for line in follow_changes(run, tasks, self._last_run_state, self._last_states, elapsed):
                self.console.status_line(escape(line))
        self._last_run_state = run.state
        self._last_states = {(t.task_id, t.map_index): t.state for t in tasks}


class StackProgress:
    """What the user sees while `dev start`/`dev stop` work (the `on_progress` callback of
    `mlopsctl.devenv.start` and `.stop`): a live table on a terminal, one plain line per change otherwise."""

    LABELS: ClassVar[dict[str, str]] = {"db": "database", "dags": "DAG files", "strays": "stray processes"}

    def __init__(self, console: Console):
        self.console = console
        self.interactive = self.console.interactive and not self.console.quiet
        self.rows: dict[str, tuple[str, str]] = {}
        self.t0 = time.monotonic()
        self.live = None

    def __enter__(self) -> Self:
        if self.interactive:
            from rich.live import Live

            self.live = Live(self._render(), console=self.console.err, refresh_per_second=4, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.update(self._render())
            self.live.__exit__(None, None, None)

    def _render(self):
        from rich.table import Table

        table = Table.grid(padding=(0, 2))
        styles = {
            "healthy": "green",
            "done": "green",
            "already running": "green",
            "stopped": "green",
            "failed": "red",
            "waiting": "yellow",
            "starting": "yellow",
            "migrating": "yellow",
            "stopping": "yellow",
        }
        for name, (state, detail) in self.rows.items():
            style = styles.get(state, "")
            table.add_row(
                self.LABELS.get(name, name), f"[{style}]{state}[/{style}]" if style else state, detail
            )
        table.add_row("", f"[dim]{time.monotonic() - self.t0:.0f} s[/dim]", "")
        return table

    def __call__(self, component: str, state: str, detail: str) -> None:
        self.rows[component] = (state, detail)
        if self.live is not None:
            self.live.update(self._render())
        elif not self.console.quiet:
            from rich.markup import escape

            elapsed = time.monotonic() - self.t0
            line = f"[{elapsed:5.1f}s] {self.LABELS.get(component, component)}: {state}" + (
                f" ({detail})" if detail else ""
            )
            self.console.err.print(escape(line), soft_wrap=True)
