"""`python -m bench [--quick] [--only NAME,...]`: every benchmark against its peer, in one run.

Writes bench/results/latest.md (tables), latest.json (every figure with its runs) and PNG plots, and
prints the tables. Each benchmark declares its rows up front: a row that could not be measured is still
written, saying "not measured: <reason>". `--quick` is the smoke run CI makes: one stack for every figure that
needs one, one run per figure and no warm-up runs, the smallest data; the rows a benchmark cannot measure on
that data it declares in `NOT_IN_QUICK`, with the reason, which latest.md prints.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench import BENCHMARKS
from bench.common import (
    CACHE_DIR,
    RESULTS_DIR,
    BenchContext,
    NotMeasured,
    Row,
    log,
    not_measured,
    planned_rows,
    rows_to_json,
    write_json,
)
from bench.report import render_markdown


def _parse(argv: list[str] | None) -> argparse.Namespace:
    names = [m.NAME for m in BENCHMARKS]
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke run: one stack, 1 run per figure, no warm-up runs, smallest data")
    p.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(names)}")
    p.add_argument("--rows", default="", metavar="KEY,...",
                   help="only the rows whose key starts with one of these (scale.1000000, scale.grid): a benchmark "
                        "measures what they need and writes only them")
    p.add_argument("--runs", type=int, default=None, help="timed runs per figure (default 5, --quick 1)")
    p.add_argument("--budget", type=float, default=None, metavar="MINUTES",
                   help="start no new measurement after this many minutes (rows left say so)")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where latest.md/json and PNGs go")
    args = p.parse_args(argv)
    only = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(only) - set(names))
    if unknown:
        p.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(names)}")
    args.only = only or names
    args.rows = tuple(k.strip() for k in args.rows.split(",") if k.strip())
    return args


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally below: every server started is stopped


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit_on_signal)
    runs = args.runs or (1 if args.quick else 5)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=CACHE_DIR))
    started = time.perf_counter()
    ctx = BenchContext(quick=args.quick, runs=runs, work=work, rows=args.rows,
                       deadline=started + args.budget * 60 if args.budget else None)
    all_rows: list[Row] = []
    timings: dict[str, float] = {}
    selected = [m for m in BENCHMARKS if m.NAME in args.only]
    load_start = os.getloadavg()
    try:
        for mod in selected:
            log(f"== {mod.NAME}: {mod.TITLE}")
            t0 = time.perf_counter()
            expected = planned_rows(mod, ctx)
            got: list[Row] = []
            try:
                ctx.check_budget(mod.NAME)
                got = mod.run(ctx)
            except NotMeasured as exc:
                log(f"{mod.NAME}: not measured: {exc}")
                got = [not_measured(mod.NAME, key, what, str(exc)) for key, what in expected]
            except Exception as exc:  # noqa: BLE001 - one broken benchmark must not sink the others
                log(f"{mod.NAME} failed: {type(exc).__name__}: {exc}")
                traceback.print_exc(file=sys.stderr)
                reason = f"{type(exc).__name__}: {exc}"
                got = [not_measured(mod.NAME, key, what, reason) for key, what in expected]
            planned = {key for key, _what in expected}
            got = [r for r in got if r.key in planned]  # less the rows left out of --quick
            have = {r.key for r in got}
            for key, what in expected:
                if key not in have:
                    got.append(not_measured(mod.NAME, key, what, "benchmark produced no figure for this row"))
            all_rows.extend(got)
            timings[mod.NAME] = time.perf_counter() - t0
            log(f"== {mod.NAME} done in {timings[mod.NAME]:.0f} s")
            _write_partial(args.results_dir, args, runs, selected, started, timings, load_start, all_rows, ctx)
    finally:
        for fn in reversed(ctx.cleanups):
            try:
                fn()
            except Exception as exc:  # noqa: BLE001
                log(f"cleanup failed: {exc}")
        shutil.rmtree(work, ignore_errors=True)

    out = args.results_dir
    out.mkdir(parents=True, exist_ok=True)
    meta = _meta(args, runs, selected, started, timings, load_start)
    plots: list[str] = []
    try:
        from bench.plots import make_plots

        plots = make_plots(all_rows, ctx.shared, out)
    except Exception as exc:  # noqa: BLE001 - plots are a bonus
        log(f"plots skipped: {type(exc).__name__}: {exc}")
    meta["plots"] = plots
    write_json(out / "latest.json", {"meta": meta, "rows": rows_to_json(all_rows), "extra": ctx.shared})
    md = render_markdown(all_rows, meta, [m for m in selected])
    (out / "latest.md").write_text(md)
    for partial in (out / "partial.md", out / "partial.json"):
        partial.unlink(missing_ok=True)
    sys.stdout.write(md)
    log(f"wrote {out / 'latest.md'} and latest.json in {meta['seconds']:.0f} s")
    return 0


def _write_partial(out: Path, args, runs, selected, started, timings, load_start, rows, ctx) -> None:
    """Results so far (bench/results/partial.*), so a long run can be read while it goes on."""
    out.mkdir(parents=True, exist_ok=True)
    meta = _meta(args, runs, selected, started, timings, load_start) | {"partial": True}
    write_json(out / "partial.json", {"meta": meta, "rows": rows_to_json(rows), "extra": ctx.shared})
    (out / "partial.md").write_text(render_markdown(rows, meta, selected))


def _meta(args, runs, selected, started, timings, load_start) -> dict:
    total = time.perf_counter() - started
    return {
        "mode": "quick" if args.quick else "full",
        "runs_per_figure": runs,
        "budget_minutes": args.budget,
        "benchmarks": [m.NAME for m in selected],
        "seconds": total,
        "seconds_per_benchmark": timings,
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_avg_at_start": load_start,
            "load_avg_at_end": os.getloadavg(),
        },
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


if __name__ == "__main__":
    raise SystemExit(main())
