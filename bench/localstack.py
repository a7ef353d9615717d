"""The embedded stack as the benchmarks use it: `mlopsctl dev start/stop` on free ports, a scratch state dir.

Started through the CLI (that is what is measured), inspected with the project's own devenv helpers
(PID files, process trees). Nothing from a stack already running on this machine is reused.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    ROOT,
    VENV_BIN,
    BenchContext,
    NotMeasured,
    airflow_healthy,
    bench_env,
    free_port,
    http,
    log,
    run_cmd,
    tree_memory,
)
from mlopsctl.devenv import components


@dataclass
class LocalStack:
    state: Path
    ports: dict[str, int]  # port setting -> port, one per component that listens (mlopsctl.devenv.components)
    extra_env: dict[str, str] = field(default_factory=dict)
    running: bool = False

    def _settings(self, **fields: Any):
        from mlopsctl.settings import Settings

        return Settings(project_dir=ROOT, state_dir=self.state, **self.ports, **fields)

    @property
    def airflow_url(self) -> str:
        return self._settings().local_airflow_url

    @property
    def mlflow_url(self) -> str:
        return self._settings().local_mlflow_url

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        e = bench_env(
            {
                "MLOPSCTL_PROJECT_DIR": str(ROOT),
                "MLOPSCTL_STATE_DIR": str(self.state),
                **{c.port.env_var: str(self.ports[c.port.setting]) for c in components.with_ports()},
                "MLOPSCTL_AIRFLOW_URL": self.airflow_url,
                "MLOPSCTL_MLFLOW_TRACKING_URI": self.mlflow_url,
                "MLOPSCTL_START_TIMEOUT": "300",
                **self.extra_env,
            }
        )
        if extra:
            e.update(extra)
        return e

    def mlopsctl(self, *args: str, timeout: float = 900, check: bool = True, env: dict[str, str] | None = None):
        return run_cmd([str(VENV_BIN / "mlopsctl"), *args], env=env or self.env(), cwd=ROOT, timeout=timeout,
                       check=check)

    def settings(self):
        """The project's Settings for this stack (for devenv helpers)."""
        return self._settings(airflow_url=self.airflow_url, mlflow_tracking_uri=self.mlflow_url,
                              **_settings_extra(self.extra_env))

    def start(self) -> float:
        """`mlopsctl dev start` to fully healthy; returns the wall seconds."""
        res = self.mlopsctl("dev", "start", timeout=400)
        self.running = True
        wall = res.wall
        if not self.healthy():  # dev start returned before everything was healthy: count the rest too
            from bench.common import wait_until

            wall += wait_until(self.healthy, timeout=120, what="healthy stack after dev start")
        return wall

    def stop(self) -> float:
        res = self.mlopsctl("dev", "stop", timeout=120, check=False)
        self.running = False
        if res.returncode != 0:
            log(f"dev stop exited {res.returncode}: {res.stderr[-300:]}")
        return res.wall

    def wipe(self) -> None:
        shutil.rmtree(self.state, ignore_errors=True)

    def healthy(self) -> bool:
        if not airflow_healthy(self.airflow_url):
            return False
        return http().get(f"{self.mlflow_url}/health").status_code == 200

    def launcher_ready(self) -> bool:
        """The job launcher answers and has ended its preload (it is healthy at once, and imports once `dev start`
        has seen the whole stack healthy): only then is the stack's idle memory its steady one."""
        from mlopsctl.devenv.launcher import ping
        from mlopsctl.devenv.layout import StackLayout

        return bool((ping(StackLayout(self.state).launcher_socket) or {}).get("ready"))

    def helpers_done(self, helpers: tuple[str, ...] | None = None) -> bool:
        """No background helper of `dev start` (of `helpers`, default all) is at work: the writer of the Spark
        server's class-data archive (started after a start without an archive) and the Spark server's warm-up
        job (after each start of the server). `dev stop` would kill them; a stack used for longer than they take
        has its archive at its next start, as a warm start should, and its idle memory is measured after the
        warm-up."""
        from mlopsctl.devenv.layout import StackLayout
        from mlopsctl.devenv.servers import helper_running
        from mlopsctl.devenv.stack import HELPERS

        layout = StackLayout(self.state)
        return not any(helper_running(layout, helper) for helper in helpers or HELPERS)

    def pids(self) -> list[int]:
        """Leader PIDs of every component and every process in their trees (project helpers)."""
        from mlopsctl.devenv.process import read_pid_file, tree_of

        pids: list[int] = []
        for comp in components.names():
            rec = read_pid_file(self.state / "pids" / f"{comp}.pid")
            if rec is None:
                continue
            pids += [p.pid for p in tree_of(rec)]
        return pids

    def memory_by_component(self) -> dict[str, tuple[float, float, int]]:
        """component -> (RSS MB, PSS MB, processes), as `mlopsctl dev status` counts them."""
        from mlopsctl.devenv.status import stack_status

        return {
            c.name: (c.rss_bytes / 2**20, c.pss_bytes / 2**20, c.processes)
            for c in stack_status(self.settings(), probe=False).components
            if c.running
        }

    def memory(self) -> tuple[float, float, int]:
        """(RSS MB, PSS MB, processes) of the whole stack."""
        pids = self.pids()
        if not pids:
            raise NotMeasured("no stack processes found from the PID files")
        return tree_memory(pids)


def _settings_extra(extra_env: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in extra_env.items():
        if k.startswith("MLOPSCTL_"):
            out[k.removeprefix("MLOPSCTL_").lower()] = v
    return out


def new_stack(ctx: BenchContext, name: str = "stack") -> LocalStack:
    state = ctx.work / name / ".mlopsctl"
    state.parent.mkdir(parents=True, exist_ok=True)
    return LocalStack(state=state, ports={c.port.setting: free_port() for c in components.with_ports()})


def shared_stack(ctx: BenchContext) -> LocalStack:
    """The stack shared by the benchmarks after `stack`: started (warm) if not running yet."""
    st: LocalStack | None = ctx.objects.get("stack")
    if st is None:
        st = new_stack(ctx)
        ctx.objects["stack"] = st
        ctx.cleanups.append(lambda: st.stop() if st.running else None)
    if not st.running:
        log("starting the shared local stack (mlopsctl dev start)")
        st.start()
    return st


def stop_shared_stack(ctx: BenchContext) -> None:
    st: LocalStack | None = ctx.objects.get("stack")
    if st is not None and st.running:
        log("stopping the shared local stack")
        st.stop()
