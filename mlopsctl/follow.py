"""Follow an Airflow dag run to a terminal state: cheap polling with backoff, live display.

- Polls start ~1 s apart and grow to 2 s during the first two minutes (most runs end there, and a run's end
  is seen at most 2 s late), then to 5 s; reset to the short interval when something changes.
- Interactive (stderr is a TTY): a live rich table of task states and elapsed time.
  Otherwise: one plain line per state change. In --json mode: nothing (stdout stays one JSON document).
- `timeout` elapsed -> WaitTimeoutError (the run keeps going; the hint says how to reattach).
- Ctrl-C -> FollowInterrupted (never cancels the run); the command prints the reattach hint.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from mlopsctl.airflow.models import TERMINAL_RUN_STATES, DagRun, TaskInstance
from mlopsctl.errors import ExitCode, MlopsctlError, ServerError, UnreachableError, WaitTimeoutError

POLL_INITIAL = 1.0
POLL_MAX = 5.0
#: during the first FAST_WINDOW seconds of following, polls are at most POLL_MAX_FAST apart
POLL_MAX_FAST = 2.0
FAST_WINDOW = 120.0
POLL_FACTOR = 1.5
#: keep following through an Airflow outage (api-server restart, network blip) this long before giving up
OUTAGE_GRACE = 600.0


class RunSource(Protocol):  # the two AirflowClient methods we need
    def get_run(self, dag_id: str, dag_run_id: str) -> DagRun: ...
    def task_instances(self, dag_id: str, dag_run_id: str) -> list[TaskInstance]: ...


class FollowInterrupted(MlopsctlError):
    """Ctrl-C while following: the run keeps going in Airflow."""

    exit_code = ExitCode.INTERRUPTED

    def __init__(self, dag_id: str, dag_run_id: str):
        super().__init__(
            f"Stopped following run {dag_run_id} of {dag_id}; the run keeps going in Airflow.",
            hint=f"Reattach with: mlopsctl status {dag_run_id} --wait",
        )
        self.dag_id = dag_id
        self.dag_run_id = dag_run_id


def reattach_hint(dag_run_id: str) -> str:
    return f"mlopsctl status {dag_run_id} --wait"


@dataclass
class FollowResult:
    run: DagRun
    tasks: list[TaskInstance]
    polls: int = 0
    requests: int = 0
    waited: float = 0.0

    @property
    def succeeded(self) -> bool:
        return self.run.state == "success"


def backoff_intervals(initial: float = POLL_INITIAL, maximum: float = POLL_MAX, factor: float = POLL_FACTOR):
    """1, 1.5, 2.25, 3.4, 5, 5, ... (infinite generator)."""
    delay = initial
    while True:
        yield delay
        delay = min(maximum, delay * factor)


def task_order(tasks: list[TaskInstance]) -> list[TaskInstance]:
    def key(t: TaskInstance):
        start = t.start_date.timestamp() if t.start_date else float("inf")
        return (start, t.task_id, t.map_index)

    return sorted(tasks, key=key)


def _snapshot(run: DagRun, tasks: list[TaskInstance]) -> tuple:
    return (run.state, tuple(sorted((t.task_id, t.map_index, t.state, t.try_number) for t in tasks)))


@dataclass
class _View:
    """What the live display renders (elapsed is computed at render time, so it ticks smoothly)."""

    dag_id: str
    dag_run_id: str
    started: float
    clock: Callable[[], float]
    run: DagRun | None = None
    tasks: list[TaskInstance] = field(default_factory=list)

    def __rich__(self) -> Any:
        from mlopsctl.render import follow_table

        return follow_table(self.dag_id, self.dag_run_id, self.run, self.tasks, self.clock() - self.started)


def follow_run(
    client: RunSource,
    dag_id: str,
    dag_run_id: str,
    *,
    console: Any = None,  # mlopsctl.console.Console (None: silent)
    timeout: float | None = None,
    poll_initial: float = POLL_INITIAL,
    poll_max: float = POLL_MAX,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], None] | None = None,
    live: bool | None = None,
    outage_grace: float = OUTAGE_GRACE,
) -> FollowResult:
    """Poll until the run is success/failed. Raises WaitTimeoutError or FollowInterrupted.

    Airflow unreachable or answering 5xx (after the client's own retries) is an outage, not the end: the
    run keeps going server-side, so polling continues (one warning) for up to `outage_grace` seconds."""
    clock = clock or time.monotonic
    sleep = sleep or time.sleep
    json_mode = bool(console is None or getattr(console, "json_mode", False))
    if live is None:
        live = bool(console is not None and not json_mode and getattr(console, "interactive", False))
    want_tasks = not json_mode  # in --json mode tasks are fetched once, at the end
    started = clock()
    view = _View(dag_id, dag_run_id, started, clock)
    result = FollowResult(run=None, tasks=[])  # type: ignore[arg-type]
    last: tuple | None = None
    last_states: dict[tuple[str, int], str | None] = {}
    last_run_state: str | None = None
    intervals = backoff_intervals(poll_initial, poll_max)

    live_ctx = None
    if live:
        from rich.live import Live

        live_ctx = Live(view, console=console.err, refresh_per_second=2, transient=False)
        live_ctx.start()
    try:
        outage_since: float | None = None
        while True:
            try:
                run = client.get_run(dag_id, dag_run_id)
                result.requests += 1
                tasks: list[TaskInstance] = []
                finished = run.state in TERMINAL_RUN_STATES
                if want_tasks or finished:
                    tasks = client.task_instances(dag_id, dag_run_id)
                    result.requests += 1
            except (UnreachableError, ServerError) as exc:
                now = clock()
                if outage_since is None:
                    outage_since = now
                    if console is not None:
                        console.warn(f"{exc.message} Still following run {dag_run_id}: it keeps going in Airflow.")
                if now - outage_since > outage_grace or (timeout is not None and now - started >= timeout):
                    raise
                sleep(min(poll_max, max(poll_initial, 1.0)))
                continue
            if outage_since is not None:
                outage_since = None
                if console is not None:
                    console.info(f"Airflow is reachable again; following run {dag_run_id}.")
            result.polls += 1
            result.run, result.tasks = run, task_order(tasks)
            view.run, view.tasks = run, result.tasks
            if live_ctx is not None:
                live_ctx.refresh()
            elif console is not None and not json_mode:
                _print_changes(console, run, result.tasks, last_run_state, last_states, clock() - started)
            last_run_state = run.state
            last_states = {(t.task_id, t.map_index): t.state for t in tasks}
            if finished:
                result.waited = clock() - started
                return result
            snap = _snapshot(run, tasks)
            if snap != last and last is not None:
                intervals = backoff_intervals(poll_initial, poll_max)  # something moved: look again soon
            last = snap
            delay = next(intervals)
            if clock() - started < FAST_WINDOW:
                delay = min(delay, max(poll_initial, POLL_MAX_FAST))
            if timeout is not None:
                remaining = timeout - (clock() - started)
                if remaining <= 0:
                    raise WaitTimeoutError(
                        f"Run {dag_run_id} of {dag_id} is still {run.state} after {timeout:g} s; "
                        "it keeps going in Airflow.",
                        hint=f"Reattach with: {reattach_hint(dag_run_id)}",
                    )
                delay = min(delay, remaining)
            sleep(delay)
    except KeyboardInterrupt:
        raise FollowInterrupted(dag_id, dag_run_id) from None
    finally:
        if live_ctx is not None:
            live_ctx.stop()


def _fmt_elapsed(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def _print_changes(console, run, tasks, last_run_state, last_states, elapsed) -> None:
    from rich.markup import escape

    stamp = _fmt_elapsed(elapsed)
    if run.state != last_run_state:
        console.status_line(f"[{stamp}] run {escape(run.dag_run_id)}: {run.state}")
    for t in tasks:
        key = (t.task_id, t.map_index)
        if key not in last_states or last_states[key] != t.state:
            if t.state is None and key not in last_states:
                continue  # not yet scheduled: say nothing until it moves
            name = t.task_id if t.map_index < 0 else f"{t.task_id}[{t.map_index}]"
            tries = f" (try {t.try_number})" if t.try_number and t.try_number > 1 else ""
            console.status_line(f"[{stamp}]   {escape(name)}: {t.state or 'none'}{tries}")
