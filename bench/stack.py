"""2. Local stack: `mlopsctl dev start` cold/warm to fully healthy, stack RSS/PSS, vs `airflow standalone`."""

from __future__ import annotations

import shutil
import subprocess
import time

from bench.common import (
    VENV_BIN,
    BenchContext,
    NotMeasured,
    Row,
    Stats,
    airflow_healthy,
    bench_env,
    figure_row,
    free_port,
    kill_group,
    log,
    tree_memory,
    wait_until,
)
from bench.localstack import new_stack

NAME = "stack"
TITLE = "2. Local stack start-up and memory"
DESCRIPTION = """
`mlopsctl dev start` returns when all four Airflow components, MLflow, the Spark Connect server and the job launcher report
healthy and the DAG files are parsed. Cold = fresh state dir (DB migration included); warm = existing DBs and the Spark server's
class-data archive (written in the background after the cold start, which the bench waits for; --quick does not) after `dev stop`. Memory: sum of
RSS and of PSS over every process of the stack (psutil, process trees from the stack's PID files), 5 s after a
warm start and the job launcher's preload (idle; Airflow parallelism 4). RSS counts shared pages once per process, PSS splits them. Peer:
`airflow standalone` (defaults except: examples off, AIRFLOW_HOME in a temp dir, API on 127.0.0.1:<free
port>), measured first, with no stack of ours running, to all components healthy in `/api/v2/monitor/health`;
it forks one LocalExecutor worker per slot (parallelism 32 by default). Its log servers bind all interfaces
(the host is hard-coded); only their ports (default 8793/8794) can be moved, which the bench does (free
ports). It is stopped with all its children by process group.
"""

SETTLE = 5.0
#: --quick restarts the stack at once after the cold start: the class-data archive's writer, at the lowest CPU
#: priority, can take minutes on a busy machine, and a quick run is a smoke run
QUICK_WARM_NOTE = "--quick: without the Spark server's class-data archive (not waited for), so slower than a warm start"


def _counts(ctx: BenchContext) -> dict[str, int]:
    if ctx.quick:
        return {"cold": 1, "warm": 1, "sa_cold": 1, "sa_warm": 0}
    return {"cold": 2, "warm": max(3, ctx.runs - 2), "sa_cold": 1, "sa_warm": 1}


def _idle_helpers(ctx: BenchContext) -> tuple[str, ...] | None:
    """The background helpers of `dev start` that the idle memory waits for: all of them (None); in --quick
    only the Spark warm-up, since a warm start without the class-data archive starts its writer again."""
    from mlopsctl.devenv.stack import SPARK_WARMUP

    return (SPARK_WARMUP,) if ctx.quick else None


def expected_rows(ctx: BenchContext) -> list[tuple[str, str]]:
    rows = [
        (f"{NAME}.mlopsctl_cold", "mlopsctl dev start, cold (fresh state)"),
        (f"{NAME}.mlopsctl_warm", "mlopsctl dev start, warm (existing DBs)"),
        (f"{NAME}.mlopsctl_rss", "stack RSS (5 processes + children)"),
        (f"{NAME}.mlopsctl_pss", "stack PSS"),
        (f"{NAME}.standalone_start", "airflow standalone to healthy"),
        (f"{NAME}.standalone_rss", "airflow standalone RSS"),
        (f"{NAME}.standalone_pss", "airflow standalone PSS"),
    ]
    return rows


def run(ctx: BenchContext) -> list[Row]:
    n = _counts(ctx)
    rows: list[Row] = []
    st = new_stack(ctx)
    ctx.objects["stack"] = st
    ctx.cleanups.append(lambda: st.stop() if st.running else None)

    # the peer first, on a machine with no stack of ours running; then ours, which stays up afterwards
    errors: dict[str, str] = {}
    sa_cold: list[float] = []
    sa_warm: list[float] = []
    sa_rss: list[float] = []
    sa_pss: list[float] = []
    sa_procs: list[int] = []
    home = ctx.work / "standalone" / "airflow-home"
    try:
        for i in range(n["sa_cold"] + n["sa_warm"]):
            kind = "cold" if i < n["sa_cold"] else "warm"
            if kind == "cold" and home.exists():
                shutil.rmtree(home)
            ctx.check_budget("airflow standalone")
            log(f"stack: airflow standalone ({kind})")
            secs, r, p, k = _standalone_once(ctx, home)
            (sa_cold if kind == "cold" else sa_warm).append(secs)
            sa_rss.append(r)
            sa_pss.append(p)
            sa_procs.append(k)
    except NotMeasured as exc:
        errors["standalone"] = str(exc)

    cold: list[float] = []
    warm: list[float] = []
    rss: list[float] = []
    pss: list[float] = []
    procs: list[int] = []
    by_comp: dict[str, tuple[float, float, int]] = {}
    try:
        for i in range(n["cold"]):
            if st.running:
                st.stop()
            st.wipe()
            log(f"stack: cold dev start {i + 1}/{n['cold']}")
            cold.append(st.start())
            if not ctx.quick:
                wait_until(st.helpers_done, timeout=600, what="the Spark server's class-data archive and warm-up")
        for i in range(n["warm"]):
            if warm:
                ctx.check_budget("more warm starts")
            st.stop()
            log(f"stack: warm dev start {i + 1}/{n['warm']}")
            warm.append(st.start())
            wait_until(st.launcher_ready, timeout=120, what="the job launcher's preload")
            wait_until(lambda: st.helpers_done(_idle_helpers(ctx)), timeout=120, what="the Spark server's warm-up")
            time.sleep(SETTLE)
            r, p, k = st.memory()
            by_comp = st.memory_by_component()
            rss.append(r)
            pss.append(p)
            procs.append(k)
    except NotMeasured as exc:
        errors["mlopsctl"] = str(exc)
    # the warm stack stays up for the next benchmarks

    sa_all = sa_warm or sa_cold
    sa_label = "warm" if sa_warm else "cold"

    def row(key: str, what: str, values: list[float], unit: str, err: str) -> Row:
        return figure_row(NAME, key, what, Stats(values) if values else None, errors.get(err, "not run"), unit)

    r_cold = row("mlopsctl_cold", "mlopsctl dev start, cold (fresh state)", cold, "s", "mlopsctl")
    r_cold.note = "no separate warm-up: each run starts from an empty state dir"
    r_warm = row("mlopsctl_warm", "mlopsctl dev start, warm (existing DBs)", warm, "s", "mlopsctl")
    r_warm.target = "<= 25 s"
    if ctx.quick:
        r_warm.note = QUICK_WARM_NOTE
    if warm:
        r_warm.verdict = "met" if Stats(warm).median <= 25 else "missed"
        if sa_all:
            r_warm.peer = f"{Stats(warm).median / Stats(sa_all).median:.2f}x standalone ({sa_label})"
    if cold and sa_cold:
        r_cold.peer = f"{Stats(cold).median / Stats(sa_cold).median:.2f}x standalone (cold)"
    r_rss = row("mlopsctl_rss", "stack RSS (all processes)", rss, "MB", "mlopsctl")
    if rss:
        r_rss.note = f"{max(procs)} processes; last run by component (RSS/PSS MB): " + ", ".join(
            f"{c} {v[0]:.0f}/{v[1]:.0f}" for c, v in by_comp.items())
        if sa_rss:
            r_rss.peer = f"{Stats(rss).median / Stats(sa_rss).median:.2f}x standalone"
    r_pss = row("mlopsctl_pss", "stack PSS (shared pages split)", pss, "MB", "mlopsctl")
    r_pss.target = "<= 1.8 GB (1843 MB), Spark server included"
    if pss:
        r_pss.verdict = "met" if Stats(pss).median <= 1843 else "missed"
    if pss and sa_pss:
        r_pss.peer = f"{Stats(pss).median / Stats(sa_pss).median:.2f}x standalone"
    r_sa = row("standalone_start", "airflow standalone to healthy", sa_all, "s", "standalone")
    if sa_all:
        r_sa.note = f"{sa_label} start{'s' if len(sa_all) > 1 else ''}"
        if sa_cold and sa_warm:
            r_sa.note += f"; cold start {Stats(sa_cold).median:.1f} s (1 run)"
        if len(sa_all) < 5:
            r_sa.note += f"; {len(sa_all)} run(s) to fit the time budget"
        r_sa.note += "; healthy = the 4 components in /monitor/health (no DAGs to parse, no MLflow)"
    r_sa_rss = row("standalone_rss", "airflow standalone RSS", sa_rss, "MB", "standalone")
    if sa_procs:
        r_sa_rss.note = f"{max(sa_procs)} processes"
    r_sa_pss = row("standalone_pss", "airflow standalone PSS", sa_pss, "MB", "standalone")
    rows += [r_cold, r_warm, r_rss, r_pss, r_sa, r_sa_rss, r_sa_pss]
    ctx.shared["stack"] = {"cold": cold, "warm": warm, "rss_mb": rss, "pss_mb": pss,
                           "standalone_cold": sa_cold, "standalone_warm": sa_warm,
                           "standalone_rss_mb": sa_rss, "standalone_pss_mb": sa_pss,
                           "by_component_mb": {c: {"rss": v[0], "pss": v[1], "processes": v[2]}
                                               for c, v in by_comp.items()}}
    return rows


def _standalone_once(ctx: BenchContext, home) -> tuple[float, float, float, int]:
    """Start `airflow standalone`, time it to healthy, measure its tree, stop it by process group."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = bench_env(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        }
    )
    logf = open(home.parent / "standalone.log", "ab")  # noqa: SIM115 - handed to the child
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(VENV_BIN / "airflow"), "standalone"], env=env, stdout=logf,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            if proc.poll() is not None:
                raise NotMeasured(f"airflow standalone exited {proc.returncode} (see {home.parent}/standalone.log)")
            return airflow_healthy(url)

        wait_until(ready, timeout=400, interval=0.5, what="airflow standalone healthy")
        secs = time.perf_counter() - t0
        time.sleep(SETTLE)
        rss, pss, k = tree_memory([proc.pid])
        return secs, rss, pss, k
    finally:
        kill_group(proc, timeout=30)
        logf.close()

