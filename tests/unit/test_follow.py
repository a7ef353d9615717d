"""The follow loop and its progress display: backoff, timeout, Ctrl-C, output modes (fake client, fake clock)."""

from __future__ import annotations

import io
import itertools
from datetime import UTC, datetime

import pytest

from mlopsctl.airflow.models import DagRun, TaskInstance
from mlopsctl.console import Console, RunProgress
from mlopsctl.errors import ExitCode, WaitTimeoutError
from mlopsctl.runs import FollowInterrupted, backoff_intervals, follow_run

T0 = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class ScriptedClient:
    """Returns the next (run_state, {task: state}) of a script on every get_run; repeats the last."""

    def __init__(self, script: list[tuple[str, dict[str, str | None]]], interrupt_at: int | None = None) -> None:
        self.script = script
        self.i = -1
        self.calls: list[str] = []
        self.interrupt_at = interrupt_at

    def _step(self) -> tuple[str, dict[str, str | None]]:
        return self.script[min(self.i, len(self.script) - 1)]

    def get_run(self, dag_id: str, dag_run_id: str) -> DagRun:
        self.calls.append("get_run")
        self.i += 1
        if self.interrupt_at is not None and self.i == self.interrupt_at:
            raise KeyboardInterrupt
        state, _ = self._step()
        return DagRun(dag_run_id=dag_run_id, dag_id=dag_id, state=state, start_date=T0)

    def task_instances(self, dag_id: str, dag_run_id: str) -> list[TaskInstance]:
        self.calls.append("task_instances")
        _, tasks = self._step()
        return [
            TaskInstance(task_id=t, state=s, try_number=1 if s else 0, start_date=T0 if s else None)
            for t, s in tasks.items()
        ]


def _console(json_mode: bool = False) -> tuple[Console, io.StringIO, io.StringIO]:
    from rich.console import Console as Rich

    c = Console(json_mode=json_mode)
    out, err = io.StringIO(), io.StringIO()
    c.out = Rich(file=out, no_color=True, width=120)
    c.err = Rich(file=err, no_color=True, width=120)
    return c, out, err


def follow(client, dag_id: str, run_id: str, *, console: Console | None = None, live: bool = False, **kwargs):
    """follow_run reporting to the progress display a command would use (none: silent)."""
    if console is None:
        return follow_run(client, dag_id, run_id, **kwargs)
    with RunProgress(console, dag_id, run_id, live=live) as progress:
        return follow_run(client, dag_id, run_id, on_update=progress, reporter=progress,
                          tasks_each_poll=progress.tasks_each_poll, **kwargs)


def test_backoff_grows_from_one_to_five_seconds() -> None:
    gen = backoff_intervals()
    seq = [next(gen) for _ in range(8)]
    assert seq[0] == 1.0
    assert all(a <= b for a, b in itertools.pairwise(seq))
    assert seq[-1] == 5.0 and max(seq) == 5.0


def test_steady_run_polls_with_growing_intervals_then_returns_success() -> None:
    running = ("running", {"preprocess_data": "running", "train_model": None})
    client = ScriptedClient([running] * 10 + [("success", {"preprocess_data": "success", "train_model": "success"})])
    clock = FakeClock()
    console, out, err = _console()
    res = follow(client, "build_model", "r1", console=console, clock=clock, sleep=clock.sleep)
    assert res.succeeded and res.run.state == "success"
    assert [t.state for t in res.tasks] == ["success", "success"]
    assert set(clock.sleeps) == {1.0}  # a short run: polled every second, so its end is seen within one
    assert res.polls == 11 and res.requests == 22
    assert out.getvalue() == ""  # progress goes to stderr only
    lines = err.getvalue().splitlines()
    assert any("run r1: running" in line for line in lines)
    assert any("preprocess_data: running" in line for line in lines)
    assert any("train_model: success" in line for line in lines)
    assert sum("preprocess_data: running" in line for line in lines) == 1  # one line per change, not per poll


def test_a_state_change_resets_the_interval() -> None:
    a = ("running", {"p": "running", "t": None})
    b = ("running", {"p": "success", "t": "running"})
    client = ScriptedClient([a] * 125 + [b] * 3 + [("success", {"p": "success", "t": "success"})])
    clock = FakeClock()
    console, _, _ = _console()
    follow(client, "d", "r", console=console, clock=clock, sleep=clock.sleep)
    assert clock.sleeps[:120] == [1.0] * 120  # the first two minutes
    assert clock.sleeps[120:124] == [5.0] * 4  # then backed off: nothing changed for two minutes
    assert clock.sleeps[125:127] == [1.0, 1.5]  # the poll that saw a change: look again soon, then back off


def test_a_long_run_backs_off_to_five_seconds_after_the_first_two_minutes() -> None:
    client = ScriptedClient([("running", {"p": "running"})] * 200 + [("success", {"p": "success"})])
    clock = FakeClock()
    res = follow(client, "d", "r", console=None, clock=clock, sleep=clock.sleep)
    assert res.succeeded
    fast = [s for s, t in zip(clock.sleeps, itertools.accumulate([0.0, *clock.sleeps])) if t < 120]
    slow = [s for s, t in zip(clock.sleeps, itertools.accumulate([0.0, *clock.sleeps])) if t >= 120]
    assert set(fast) == {1.0} and len(fast) >= 119  # the end of a short run is seen within a second
    assert slow and set(slow[2:]) == {5.0}  # then 5 s apart: cheap on a long run


def test_json_mode_prints_nothing_and_reads_tasks_only_at_the_end() -> None:
    client = ScriptedClient([("queued", {})] * 3 + [("failed", {"p": "failed"})])
    clock = FakeClock()
    console, out, err = _console(json_mode=True)
    res = follow(client, "d", "r", console=console, clock=clock, sleep=clock.sleep)
    assert res.run.state == "failed" and not res.succeeded
    assert client.calls.count("task_instances") == 1 and client.calls[-1] == "task_instances"
    assert out.getvalue() == "" and err.getvalue() == ""


def test_timeout_raises_wait_timeout_with_reattach_hint_and_does_not_oversleep() -> None:
    client = ScriptedClient([("running", {"p": "running"})])
    clock = FakeClock()
    with pytest.raises(WaitTimeoutError) as info:
        follow(client, "d", "r42", console=None, timeout=7.0, clock=clock, sleep=clock.sleep)
    assert info.value.exit_code == ExitCode.TIMEOUT
    assert "keeps going" in info.value.message
    assert "mlopsctl status r42 --wait" in (info.value.hint or "")
    assert clock.now == pytest.approx(7.0)


def test_ctrl_c_raises_follow_interrupted_without_cancelling() -> None:
    client = ScriptedClient([("running", {"p": "running"})], interrupt_at=3)
    clock = FakeClock()
    with pytest.raises(FollowInterrupted) as info:
        follow(client, "d", "r7", console=None, clock=clock, sleep=clock.sleep)
    assert info.value.exit_code == ExitCode.INTERRUPTED == 130
    assert "mlopsctl status r7 --wait" in (info.value.hint or "")
    assert set(client.calls) <= {"get_run", "task_instances"}  # never a PATCH/DELETE: only reads


def test_live_display_renders_task_table_to_stderr() -> None:
    client = ScriptedClient([("running", {"preprocess_data": "running"}), ("success", {"preprocess_data": "success"})])
    clock = FakeClock()
    console, out, err = _console()
    follow(client, "build_model", "r1", console=console, clock=clock, sleep=clock.sleep, live=True)
    text = err.getvalue()
    assert "preprocess_data" in text and "success" in text and "build_model" in text
    assert out.getvalue() == ""
