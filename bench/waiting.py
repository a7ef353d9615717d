"""6. Waiting cost: CPU seconds of the CLI and requests per minute while it follows a run."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

from bench.common import BenchContext, NotMeasured, Row, free_port, log
from bench.gridsearch import dataset
from bench.localstack import shared_stack

NAME = "waiting"
TITLE = "6. Waiting cost while following a run"
FOLLOW_FULL = 60.0
FOLLOW_QUICK = 15.0
DESCRIPTION = """
A long grid search is triggered with `--no-wait`, then `mlopsctl status RUN_ID --wait --timeout T` follows it
for T seconds through a counting pass-through proxy on 127.0.0.1 (every HTTP request the CLI sends to Airflow
is counted there). CPU = user+sys of the CLI process over its whole life (start-up and login included, so an
upper bound), from `getrusage(RUSAGE_CHILDREN)`.
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
    data = dataset(2_000 if ctx.quick else 100_000)
    # a run that outlasts the window: the bench grid on the biggest data set (quick: a small one)
    res = st.mlopsctl("grid-search", "--max-depth", "4,8,12,16", "--n-estimators", "10,20,30", "--cv", "3",
                      "--data", str(data), "--no-register", "--no-wait", "--json", timeout=300, check=False)
    if res.returncode != 0:
        raise NotMeasured(f"could not trigger a run to follow: {(res.stderr or res.stdout)[-300:]}")
    run_id = json.loads(res.stdout)["dag_run_id"]
    log(f"waiting: following {run_id} for {secs:.0f} s through a counting proxy")
    with CountingProxy(st.airflow_url) as proxy:
        env = st.env({"MLOPSCTL_AIRFLOW_URL": proxy.url, "MLOPSCTL_AIRFLOW_PORT": str(proxy.port)})
        out = st.mlopsctl("status", run_id, "--wait", "--timeout", str(int(secs)), env=env,
                          timeout=secs + 120, check=False)
        reqs = list(proxy.requests)
    if out.returncode not in (0, 8, 9):  # ok, run failed, wait timed out
        raise NotMeasured(f"mlopsctl status --wait exited {out.returncode}: {(out.stderr or out.stdout)[-300:]}")
    elapsed = out.wall
    cpu_share = out.cpu / elapsed * 100
    per_min = len(reqs) / elapsed * 60
    ended = "window elapsed" if out.returncode == 9 else "run ended first"
    paths: dict[str, int] = {}
    for _t, method, path in reqs:
        key = f"{method} {path.split('?')[0]}"
        key = key.replace(run_id, "{run}")
        paths[key] = paths.get(key, 0) + 1
    ctx.shared["waiting"] = {"elapsed_s": elapsed, "cpu_s": out.cpu, "requests": len(reqs), "by_path": paths,
                             "exit_code": out.returncode}
    return [
        Row(NAME, f"{NAME}.cpu", f"CLI CPU following a run for {elapsed:.0f} s (share of one core)", unit="%",
            value=cpu_share, target="< 2% of one core", verdict="met" if cpu_share < 2 else "missed",
            note=f"{out.cpu:.2f} CPU s in {elapsed:.1f} s wall ({ended}); 1 run"),
        Row(NAME, f"{NAME}.requests", "requests per minute while following", unit="req/min", value=per_min,
            note=f"{len(reqs)} requests in {elapsed:.1f} s: "
                 + ", ".join(f"{v}x {k}" for k, v in sorted(paths.items(), key=lambda kv: -kv[1])[:4])),
    ]
