"""Pure functions from plain data to rich renderables (tables, leaderboard, terminal heatmap).

Nothing here prints or does I/O. Colour is decoration only: every cell also carries text, so the
output reads the same with NO_COLOR.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from rich.console import Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from mlopsctl.airflow.models import run_duration

STATE_STYLE = {
    "success": "green",
    "failed": "bold red",
    "upstream_failed": "red",
    "running": "cyan",
    "queued": "yellow",
    "scheduled": "yellow",
    "up_for_retry": "magenta",
    "up_for_reschedule": "magenta",
    "deferred": "blue",
    "skipped": "dim",
    "removed": "dim",
    None: "dim",
}


def state_text(state: str | None) -> Text:
    return Text(state or "none", style=STATE_STYLE.get(state, ""))


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def fmt_metric(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    try:
        return f"{float(value):.{digits}g}" if abs(float(value)) >= 1e4 else f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return str(value)


def fmt_time(value: datetime | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


# --- live follow ------------------------------------------------------------------------------------


def follow_table(dag_id: str, dag_run_id: str, run: Any, tasks: Iterable[Any], elapsed: float) -> Group:
    """The live display while following: a header line, then one row per task (state, try, task time)."""
    state = run.state if run is not None else "…"
    head = Text(f"{dag_id} · {dag_run_id} · ")
    head.append_text(state_text(state if run is not None else None) if run is not None else Text("…"))
    head.append(f" · {fmt_duration(elapsed)}")
    table = Table(expand=False)
    table.add_column("task")
    table.add_column("state")
    table.add_column("try", justify="right")
    table.add_column("time", justify="right")
    now = datetime.now(UTC)
    rows = 0
    for t in tasks:
        dur = t.duration if t.duration is not None else run_duration(t.start_date, t.end_date, now)
        name = t.task_id if t.map_index < 0 else f"{t.task_id}[{t.map_index}]"
        table.add_row(escape(name), state_text(t.state), str(t.try_number or "-"), fmt_duration(dur))
        rows += 1
    if not rows:
        table.add_row("(waiting for the scheduler)", state_text(state if run is not None else None), "", "")
    return Group(head, table)


def fmt_elapsed(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def follow_changes(
    run: Any, tasks: Iterable[Any], last_run_state: str | None, last_states: dict[tuple[str, int], str | None],
    elapsed: float,
) -> list[str]:
    """Plain progress lines for what changed since the last poll: the run's state, then each task's."""
    stamp = fmt_elapsed(elapsed)
    lines = []
    if run.state != last_run_state:
        lines.append(f"[{stamp}] run {run.dag_run_id}: {run.state}")
    for t in tasks:
        key = (t.task_id, t.map_index)
        if key not in last_states or last_states[key] != t.state:
            if t.state is None and key not in last_states:
                continue  # not yet scheduled: say nothing until it moves
            name = t.task_id if t.map_index < 0 else f"{t.task_id}[{t.map_index}]"
            tries = f" (try {t.try_number})" if t.try_number and t.try_number > 1 else ""
            lines.append(f"[{stamp}]   {name}: {t.state or 'none'}{tries}")
    return lines


def tasks_table(tasks: Iterable[dict[str, Any]]) -> Table:
    table = Table(title="Tasks", title_justify="left")
    table.add_column("task")
    table.add_column("state")
    table.add_column("try", justify="right")
    table.add_column("duration", justify="right")
    for t in tasks:
        table.add_row(escape(t["task_id"]), state_text(t.get("state")), str(t.get("try_number") or "-"),
                      fmt_duration(t.get("duration")))
    return table


# --- results ----------------------------------------------------------------------------------------


def kv_table(title: str, data: dict[str, Any]) -> Table:
    table = Table(title=title, title_justify="left", show_header=False, box=None, pad_edge=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for k, v in data.items():
        table.add_row(escape(str(k)), escape(fmt_metric(v) if isinstance(v, float) else str(v)))
    return table


def run_summary(doc: dict[str, Any]) -> Group:
    """The result of one pipeline run (the dict the command also prints as JSON)."""
    parts: list[Any] = []
    head = Text()
    head.append(f"{doc['pipeline']} ", style="bold")
    head.append(doc["dag_run_id"])
    head.append("  ")
    head.append_text(state_text(doc.get("state")))
    if doc.get("duration_s") is not None:
        head.append(f"  in {fmt_duration(doc['duration_s'])}")
    parts.append(head)
    ml = doc.get("mlflow")
    if ml:
        run = ml.get("run") or {}
        if run:
            parts.append(Text(f"MLflow run: {run.get('run_name') or '-'} ({run.get('run_id')})"))
            if run.get("params"):
                parts.append(kv_table("Params", run["params"]))
            metrics = run.get("metrics") or {}
            shown = {k: metrics[k] for k in ("rmse", "mae", "r2", "best_cv_rmse") if k in metrics}
            shown.update({k: v for k, v in metrics.items() if k not in shown})
            if shown:
                parts.append(kv_table("Metrics", shown))
            reg = run.get("registered_model")
            if reg:
                parts.append(Text(f"Registered model: {reg['name']} version {reg.get('version') or '?'}"))
    return Group(*parts)


def link_lines(doc: dict[str, Any]) -> list[str]:
    """`Airflow: <url>` / `MLflow: <url>` (print with soft_wrap=True so a URL is never cut or wrapped)."""
    links = doc.get("links") or {}
    return [f"{label}: {links[key]}" for label, key in (("Airflow", "airflow"), ("MLflow", "mlflow")) if links.get(key)]


def leaderboard(points: list[dict[str, Any]]) -> Table:
    """Every grid point: rank, params, CV rmse mean ± std (best highlighted, failed shown as failed)."""
    table = Table(title="Grid search leaderboard (lower CV RMSE is better)", title_justify="left")
    table.add_column("rank", justify="right")
    table.add_column("max_depth", justify="right")
    table.add_column("n_estimators", justify="right")
    table.add_column("CV RMSE (mean ± std)", justify="right")
    table.add_column("CV R²", justify="right")
    table.add_column("status")
    for p in points:
        if p["status"] == "ok":
            cv = f"{fmt_metric(p['cv_rmse_mean'])} ± {fmt_metric(p.get('cv_rmse_std'))}"
            status = Text("best ★" if p.get("best") else "ok", style="bold green" if p.get("best") else "")
            style = "bold" if p.get("best") else ""
            rank = str(p.get("rank"))
            r2 = fmt_metric(p.get("cv_r2_mean"))
        else:
            cv = "-"
            err = p.get("error")
            status = Text("failed" + (f": {err[:60]}" if err else ""), style="red")
            style = ""
            rank = "-"
            r2 = "-"
        table.add_row(rank, str(p.get("max_depth")), str(p.get("n_estimators")), cv, r2, status, style=style)
    return table


_RAMP = ["green", "green3", "yellow3", "dark_orange", "red"]


def heatmap(points: list[dict[str, Any]]) -> Table:
    """max_depth (rows) × n_estimators (columns) of CV RMSE mean; colour from best (green) to worst (red).

    Each cell holds the number, so it degrades to a plain grid of numbers with NO_COLOR; the best
    cell is marked with ★ and failed cells read `fail`.
    """
    depths = sorted({p["max_depth"] for p in points if p.get("max_depth") is not None}, key=_sort_key)
    trees = sorted({p["n_estimators"] for p in points if p.get("n_estimators") is not None}, key=_sort_key)
    cell = {(p.get("max_depth"), p.get("n_estimators")): p for p in points}
    values = [p["cv_rmse_mean"] for p in points if p["status"] == "ok" and p.get("cv_rmse_mean") is not None]
    lo, hi = (min(values), max(values)) if values else (0.0, 0.0)
    table = Table(title="CV RMSE: max_depth × n_estimators", title_justify="left", show_lines=False)
    table.add_column("depth \\ trees", justify="right", style="bold")
    for n in trees:
        table.add_column(str(n), justify="right")
    for d in depths:
        row: list[Any] = [str(d)]
        for n in trees:
            p = cell.get((d, n))
            if p is None:
                row.append(Text("·", style="dim"))
            elif p["status"] != "ok" or p.get("cv_rmse_mean") is None:
                row.append(Text("fail", style="bold white on red"))
            else:
                v = p["cv_rmse_mean"]
                frac = 0.0 if hi == lo else (v - lo) / (hi - lo)
                colour = _RAMP[min(len(_RAMP) - 1, int(frac * len(_RAMP)))]
                label = fmt_metric(v, 3) + (" ★" if p.get("best") else "  ")
                row.append(Text(label, style=f"black on {colour}"))
        table.add_row(*row)
    return table


def _sort_key(v: Any):
    return (0, v) if isinstance(v, (int, float)) else (1, str(v))


# --- status / dags ----------------------------------------------------------------------------------


def runs_table(rows: list[dict[str, Any]]) -> Table:
    from rich import box

    table = Table(title="Recent runs", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("pipeline", overflow="fold")
    table.add_column("run id", no_wrap=True, min_width=min(36, max((len(r["dag_run_id"]) for r in rows), default=6)))
    table.add_column("state", overflow="fold")
    table.add_column("start (UTC)")
    table.add_column("duration", justify="right")
    table.add_column("key metric", justify="right")
    for r in rows:
        metric = "-"
        if r.get("metric_value") is not None:
            metric = f"{r['metric']} {fmt_metric(r['metric_value'], 3)}"
        table.add_row(escape(r["pipeline"]), escape(r["dag_run_id"]), state_text(r.get("state")),
                      fmt_time(r.get("start_date"))[5:], fmt_duration(r.get("duration_s")), metric)
    if not rows:
        table.add_row("(no runs yet)", "", "", "", "", "")
    return table


def dags_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="Pipelines", title_justify="left", show_lines=True)
    table.add_column("pipeline")
    table.add_column("dag_id")
    table.add_column("paused")
    table.add_column("last run")
    table.add_column("params (defaults)", overflow="fold")
    for r in rows:
        if not r.get("loaded"):
            paused = Text("not loaded", style="red")
        else:
            paused = Text("yes", style="yellow") if r.get("is_paused") else Text("no", style="green")
        params = "\n".join(f"{k}={v!r}" for k, v in (r.get("params") or {}).items()) or "-"
        last = r.get("last_run") or {}
        last_txt = Text("-")
        if last:
            last_txt = state_text(last.get("state"))
            last_txt.append(f"\n{fmt_time(last.get('start_date'))}", style="dim")
        table.add_row(escape(r["pipeline"]), escape(r["dag_id"]), paused, last_txt, escape(params))
    return table


def fmt_bytes(n: int) -> str:
    return f"{n / 1e6:,.0f} MB" if n else "-"


def stack_table(st: Any) -> Table:
    """`dev status`: one row per component of the local stack (a `devenv.results.StackStatus`), and the total."""
    table = Table(title=f"Local stack ({st.state_dir})", title_justify="left")
    for col in ("component", "pid", "port", "health", "rss", "pss", "procs"):
        table.add_column(col, justify="left" if col in ("component", "health") else "right")
    colors = {"healthy": "green", "stopped": "dim", "unhealthy": "red"}
    for c in st.components:
        color = colors.get(c.health, "yellow")
        table.add_row(
            c.name,
            str(c.pid) if c.running else "-",
            str(c.port or "-"),
            f"[{color}]{c.health}[/{color}]",
            fmt_bytes(c.rss_bytes),
            fmt_bytes(c.pss_bytes),
            str(c.processes or "-"),
        )
    table.add_row(
        "[bold]total[/bold]",
        "",
        "",
        "",
        f"[bold]{fmt_bytes(st.total_rss_bytes)}[/bold]",
        f"[bold]{fmt_bytes(st.total_pss_bytes)}[/bold]",
        "",
    )
    return table
