"""Markdown tables from result rows."""

from __future__ import annotations

from typing import Any

from bench.common import Row, fmt, quick_omissions


def _cell(text: str) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ")


def render_row(r: Row) -> str:
    if r.stats is not None:
        s = r.stats
        runs = str(s["n"])
        med, lo, hi = fmt(s["median"], r.unit), fmt(s["min"], r.unit), fmt(s["max"], r.unit)
    elif r.value is not None:
        runs, med, lo, hi = "-", fmt(r.value, r.unit), "", ""
    else:
        runs, med, lo, hi = "-", f"not measured: {r.reason}", "", ""
    unit = r.unit if r.measured else ""
    verdict = {"met": "met", "missed": "**missed**"}.get(r.verdict, r.verdict)
    cells = [r.what, unit, runs, med, lo, hi, r.peer, r.target, verdict, r.note]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


HEADER = (
    "| what | unit | runs | median | min | max | vs peer (same run) | target | verdict | note |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


def _load(meta: dict[str, Any]) -> str:
    m = meta.get("machine", {})
    a, b = m.get("load_avg_at_start"), m.get("load_avg_at_end")
    if not a or not b:
        return ""
    return (f" Machine load (1-min load average) {a[0]:.1f} at start, {b[0]:.1f} at end: other work shares"
            " these cores, so absolute seconds are inflated; ratios much less.")


def render_markdown(rows: list[Row], meta: dict[str, Any], modules: list[Any]) -> str:
    lines = [
        "# mlopsctl benchmarks",
        "",
        (
            f"Mode: **{meta['mode']}** ({meta['runs_per_figure']} timed run(s) per figure"
            f"{'' if meta['mode'] == 'quick' else ' after a warm-up'}, unless the row says otherwise);"
            f" {meta['machine']['cores']} cores; Python {meta['machine']['python']};"
            f" finished {meta['finished_utc']} in {meta['seconds']:.0f} s. Median with min/max; ratios are"
            " against the peer measured in the same run."
            + _load(meta)
        ),
        "",
    ]
    for mod in modules:
        mine = [r for r in rows if r.bench == mod.NAME]
        if not mine:
            continue
        lines += [f"## {mod.TITLE}", ""]
        if getattr(mod, "DESCRIPTION", ""):
            lines += [mod.DESCRIPTION.strip(), ""]
        lines.append(HEADER)
        lines += [render_row(r) for r in mine]
        lines.append("")
        omitted = quick_omissions(mod) if meta["mode"] == "quick" else {}
        if omitted:
            lines += [f"Left out of --quick: {key}: {why}." for key, why in omitted.items()] + [""]
    verdicts = [r for r in rows if r.verdict in ("met", "missed")]
    if verdicts:
        lines += ["## Targets", ""]
        for r in verdicts:
            lines.append(f"- {'MET' if r.verdict == 'met' else 'MISSED'}: {r.what} — target {r.target}"
                         f" — measured {fmt(r.stats['median'] if r.stats else r.value, r.unit)}"
                         + ("" if r.unit == "%" else f" {r.unit}")
                         + (f" ({r.note})" if r.note else ""))
        lines.append("")
    if meta.get("plots"):
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in meta["plots"]] + [""]
    return "\n".join(lines)
