"""6. Waiting cost: CPU seconds of the CLI and requests per minute while it follows a run."""

from __future__ import annotations

import json
import resource
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

from bench.common import (
    ROOT,
    VENV_BIN,
    BenchContext,
    NotMeasured,
    Row,
    free_port,
    kill_group,
    log,
    tail,
    wait_until,
)
from bench.gridsearch import dataset
from bench.localstack import shared_stack

NAME = "waiting"
TITLE = "6. Waiting cost while following a run"
FOLLOW_FULL = 60.0
FOLLOW_QUICK = 15.0
DESCRIPTION = """
A long grid search is triggered with `--no-wait`, then `mlopsctl status RUN_ID --wait --timeout T` follows it
for T seconds through a counting pass-through proxy on 127.0.0.1 (every HTTP request the CLI sends to Airflow
is counted there). CPU = user+sys of the CLI process (psutil when its first poll of the run reaches the proxy, then
`getrusage(RUSAGE_CHILDREN)` when it exits): the figure is the following part; the note gives the whole
process, start-up and login included.
"""


def follow_seconds(ctx: BenchContext) -> float:
    return FOLLOW_QUICK if ctx.quick else FOLLOW_FULL


def expected_rows(ctx: BenchContext) -> list[tuple[str, str]]:
    return [
        (f"{NAME}.cpu", "CLI CPU while following (share of one core)"),
        (f"{NAME}.requests", "requests per minute while following"),
    ]


class CountingProxy:
    """Forwards every request to `upstream` (streaming the response body) and records (time, method, path)."""

    def __init__(self, upstream: str):
        import httpx

        self.upstream = upstream.rstrip("/")
        self.requests: list[tuple[float, str, str]] = []
        self.lock = threading.Lock()
        self.client = httpx.Client(base_url=self.upstream, timeout=60)
        self.port = free_port()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _forward(self) -> None:
                with proxy.lock:
                    proxy.requests.append((time.perf_counter(), self.command, self.path))
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "connection", "content-length", "transfer-encoding")}
                req = proxy.client.build_request(self.command, self.path, headers=headers, content=body)
                resp = proxy.client.send(req, stream=True)
                try:
                    data = resp.read()
                finally:
                    resp.close()
                self.send_response(resp.status_code)
                for k, v in resp.headers.items():
                    if k.lower() not in ("connection", "content-length", "transfer-encoding", "content-encoding"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.client.close()


def run(ctx: BenchContext) -> list[Row]:
    st = shared_stack(ctx)
    secs = follow_seconds(ctx)
    data = dataset(2_000 if ctx.quick else 80_000)
    # a run that outlasts the window: the bench grid on the biggest data set (quick: a small one)
    res = st.mlopsctl("grid-search", "--max-depth", "4,8,12,16", "--n-estimators", "10,20,30", "--cv", "3",
                      "--data", str(data), "--no-register", "--no-wait", "--json", timeout=300, check=False)
    if res.returncode != 0:
        raise NotMeasured(f"could not trigger a run to follow: {(res.stderr or res.stdout)[-300:]}")
    run_id = json.loads(res.stdout)["dag_run_id"]
    log(f"waiting: following {run_id} for {secs:.0f} s through a counting proxy")
    with CountingProxy(st.airflow_url) as proxy:
        env = st.env({"MLOPSCTL_AIRFLOW_URL": proxy.url, "MLOPSCTL_AIRFLOW_PORT": str(proxy.port)})
        m = _follow(proxy, env, run_id, secs)
    if m["returncode"] not in (0, 8, 9):  # ok, run failed, wait timed out
        raise NotMeasured(f"mlopsctl status --wait exited {m['returncode']}: {m['tail']}")
    elapsed, cpu, reqs = m["steady_wall"], m["steady_cpu"], m["steady_requests"]
    cpu_share = cpu / elapsed * 100
    per_min = len(reqs) / elapsed * 60
    total_share = m["total_cpu"] / m["total_wall"] * 100
    ended = "window elapsed" if m["returncode"] == 9 else "run ended first"
    paths: dict[str, int] = {}
    for _t, method, path in m["all_requests"]:
        key = f"{method} {path.split('?')[0]}"
        key = key.replace(run_id, "{run}")
        paths[key] = paths.get(key, 0) + 1
    ctx.shared["waiting"] = {"steady_s": elapsed, "steady_cpu_s": cpu, "requests": len(reqs), "by_path": paths,
                             "total_s": m["total_wall"], "total_cpu_s": m["total_cpu"],
                             "total_requests": m["total_requests"], "exit_code": m["returncode"]}
    return [
        Row(NAME, f"{NAME}.cpu", f"CLI CPU following a run for {elapsed:.0f} s (share of one core)", unit="%",
            value=cpu_share, target="< 2% of one core", verdict="met" if cpu_share < 2 else "missed",
            note=f"{cpu:.2f} CPU s in {elapsed:.1f} s of following ({ended}); whole process incl. start-up and"
                 f" login: {m['total_cpu']:.2f} CPU s in {m['total_wall']:.1f} s = {total_share:.1f}%; 1 run"),
        Row(NAME, f"{NAME}.requests", "requests per minute while following", unit="req/min", value=per_min,
            note=f"{len(reqs)} requests in {elapsed:.1f} s of following; whole process: "
                 + ", ".join(f"{v}x {k}" for k, v in sorted(paths.items(), key=lambda kv: -kv[1])[:4])),
    ]


def _follow(proxy: CountingProxy, env: dict[str, str], run_id: str, secs: float) -> dict:
    """Run `mlopsctl status RUN --wait` through the proxy; split its cost into start-up and steady following.

    The steady window opens when the proxy sees the CLI's first poll of the run (imports, settings and
    login are behind it) and closes when the process exits (its --timeout)."""
    import psutil

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(VENV_BIN / "mlopsctl"), "status", run_id, "--wait", "--timeout", str(int(secs + 5))],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        ps = psutil.Process(proc.pid)

        def polled() -> bool:
            with proxy.lock:
                return any(run_id in path for _t, _m, path in proxy.requests) or proc.poll() is not None

        wait_until(polled, timeout=300, interval=0.05, what="the CLI's first poll")
        t_a = time.perf_counter()
        try:
            ct = ps.cpu_times()
            cpu_a = ct.user + ct.system
        except psutil.NoSuchProcess:
            cpu_a = None
        with proxy.lock:
            n_a = len(proxy.requests)
        out, err = proc.communicate(timeout=secs + 300)
    except BaseException:
        kill_group(proc)
        raise
    t_b = time.perf_counter()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    total_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    with proxy.lock:
        reqs = list(proxy.requests)
    if cpu_a is None:
        raise NotMeasured(f"the CLI exited before following started: {tail(err or out)}")
    return {"returncode": proc.returncode, "tail": tail(err or out), "total_wall": t_b - t0, "total_cpu": total_cpu,
            "total_requests": len(reqs), "all_requests": reqs, "steady_wall": t_b - t_a,
            "steady_cpu": total_cpu - cpu_a, "steady_requests": reqs[n_a:]}
