"""3. Orchestration overhead: `mlopsctl run build-model` vs an in-process floor, the same jobs bare, `airflow dags test`."""

from __future__ import annotations

import json

from bench.common import VENV_BIN, BenchContext, Measurements, NotMeasured, Row, Stats, log, repeat, run_cmd
from bench.localstack import LocalStack, shared_stack
from bench.sparkcluster import spark_env

NAME = "orchestration"
TITLE = "3. Orchestration overhead (build_model, max_depth 80, n_estimators 100, diabetes data)"
CONF = {"max_depth": 80, "n_estimators": 100}
DESCRIPTION = """
mlopsctl: `mlopsctl run build-model --max-depth 80 --n-estimators 100` on the running local stack, trigger to
exit (Airflow scheduling, both tasks, MLflow logging + model registration, result fetch). Floor: one Python
process (`bench/peers/inprocess_build.py`) that loads the diabetes data, fits the same model (a Pipeline: median
fill and ordinal codes learnt on the training split, then the RandomForestRegressor) and logs the same params,
metrics, held-out rows and registered model to the same MLflow server, no Airflow, no Spark. Bare: the
two jobs (`spark_jobs/preprocess_data.py` then `train_model.py`, same arguments, same MLflow server) run back to
back the way the local backend runs them: forked by the stack's job launcher, as Spark Connect clients of the
stack's Connect server, no Airflow.
In-process peer: `airflow dags test build_model -c '{...}'` with the stack's Airflow configuration (the DAG
paused meanwhile so the scheduler stays out of it).
"""


def expected_rows(ctx: BenchContext) -> list[tuple[str, str]]:
    return [
        (f"{NAME}.mlopsctl", "mlopsctl run build-model (trigger to exit)"),
        (f"{NAME}.floor", "in-process floor: one Python process fits and logs the same model"),
        (f"{NAME}.bare", "both jobs bare, forked by the job launcher as Spark Connect clients (no Airflow)"),
        (f"{NAME}.dags_test", "airflow dags test build_model (in-process)"),
        (f"{NAME}.overhead", "orchestration overhead: mlopsctl - bare"),
    ]


def _jobs_dir():
    from mlopsctl.paths import bundled_spark_jobs_dir

    d = bundled_spark_jobs_dir()
    for f in ("preprocess_data.py", "train_model.py", "mlopsctl_jobs/__init__.py"):
        if not (d / f).exists():
            raise NotMeasured(f"spark_jobs/{f} not found")
    return d


def _dag_compute():
    """The DAGs' own local-backend helpers (dags/common/compute.py): the exact argv and env of a job."""
    import sys

    from bench.common import ROOT

    dags = str(ROOT / "dags")
    if dags not in sys.path:
        sys.path.insert(0, dags)
    try:
        from common import compute  # type: ignore[import-not-found]
    except ImportError as exc:
        raise NotMeasured(f"dags/common/compute.py not importable: {exc}") from None
    return compute


def floor_once(st: LocalStack) -> float:
    from bench.common import BENCH_DIR

    res = run_cmd([str(VENV_BIN / "python"), str(BENCH_DIR / "peers" / "inprocess_build.py"),
                   "--tracking-uri", st.mlflow_url, "--max-depth", str(CONF["max_depth"]),
                   "--n-estimators", str(CONF["n_estimators"])], env=spark_env(), timeout=600)
    return res.wall


def bare_once(st: LocalStack, work, i: list[int]) -> float:
    """preprocess_data then train_model as Connect clients of the stack's server, built by the DAGs' own
    job_argv/job_env, no Airflow."""
    jobs = _jobs_dir()
    compute = _dag_compute()
    i[0] += 1
    run_id = f"bench_bare_{i[0]}"
    common = ["--dag-id", "build_model", "--run-id", run_id, "--try-number", "1", "--work-dir", str(work),
              "--tracking-uri", st.mlflow_url, "--registry-uri", "", "--experiment-prefix", "/mlopsctl",
              "--data", "", "--target", "target"]
    model = ["--max-depth", str(CONF["max_depth"]), "--n-estimators", str(CONF["n_estimators"]),
             "--test-size", "0.2", "--random-state", "42", "--register-model", "mlopsctl-random-forest"]
    remote = st.settings().local_spark_remote
    env = spark_env({"MLOPSCTL_MLFLOW_TRACKING_URI": st.mlflow_url})
    env.update({k: v for k, v in compute.job_env("local[*]", remote).items() if k in ("SPARK_REMOTE", "SPARK_HOME")})
    from mlopsctl.devenv.layout import StackLayout

    launcher = StackLayout(st.state).launcher_socket
    total = 0.0
    for job, args in (("preprocess_data.py", common), ("train_model.py", [*common, *model])):
        argv = compute.job_argv(job, args, spark=True, remote=remote, jobs_dir=jobs)
        total += _launched_wall(launcher, argv, env)
    return total


def _launched_wall(launcher, argv: list[str], env: dict[str, str]) -> float:
    """One job forked by the stack's job launcher, as the local backend's tasks start it: request to exit."""
    import time

    from common.launcher_client import launch  # type: ignore[import-not-found] # dags/ is on sys.path (_dag_compute)

    t0 = time.perf_counter()
    job = launch(str(launcher), argv, env, str(launcher.parent))
    out = job.stdout.read()
    code = job.wait(timeout=600)
    wall = time.perf_counter() - t0
    if code != 0:
        raise NotMeasured(f"{argv[1]} exited {code}: {out[-300:]}")
    return wall


def mlopsctl_once(st: LocalStack) -> float:
    res = st.mlopsctl("run", "build-model", "--max-depth", str(CONF["max_depth"]), "--n-estimators",
                      str(CONF["n_estimators"]), timeout=900, check=False)
    if res.returncode != 0:
        raise NotMeasured(f"mlopsctl run build-model exited {res.returncode}: {(res.stderr or res.stdout)[-300:]}")
    return res.wall


def _set_paused(st: LocalStack, paused: bool) -> None:
    from mlopsctl.airflow.client import AirflowClient

    client = AirflowClient.from_settings(st.settings())
    try:
        client.set_paused("build_model", paused)
    finally:
        client.close()


def dags_test_once(st: LocalStack) -> float:
    from mlopsctl.devenv.layout import StackLayout
    from mlopsctl.devenv.stack import airflow_env

    env = airflow_env(st.settings(), StackLayout(st.state))
    env.update({"NO_COLOR": "1", "PYTHONWARNINGS": "ignore"})
    res = run_cmd([str(VENV_BIN / "airflow"), "dags", "test", "build_model", "-c", json.dumps(CONF)],
                  env=env, timeout=900, check=False)
    if res.returncode != 0:  # it exits non-zero when the DagRun fails
        raise NotMeasured(f"airflow dags test exited {res.returncode}: {(res.stderr or res.stdout)[-300:]}")
    return res.wall


def paused_dags_test(ctx: BenchContext, st: LocalStack, runs: int) -> Stats:
    """`airflow dags test` runs with the DAG paused meanwhile, so the scheduler stays out of it."""
    ctx.check_budget("airflow dags test")
    _set_paused(st, True)
    try:
        # no warm-up: the bare runs just before warmed the same Spark jobs
        return repeat(lambda: dags_test_once(st), runs, warmup=0)
    finally:
        _set_paused(st, False)


def run(ctx: BenchContext) -> list[Row]:
    runs = ctx.runs
    st = shared_stack(ctx)
    m = Measurements(NAME)
    work = ctx.work / "bare-work"
    counter = [0]
    plan = [
        ("mlopsctl", lambda: mlopsctl_once(st)),
        ("floor", lambda: floor_once(st)),
        ("bare", lambda: bare_once(st, work, counter)),
    ]
    for key, fn in plan:
        warm = 0 if ctx.quick else 1
        log(f"orchestration: {key} x{runs} (+{warm} warm-up)")
        m.take(key, key, lambda fn=fn, warm=warm: repeat(fn, runs, warmup=warm))
    # airflow dags test: ~10-20 s each; fewer runs in quick mode
    dt_runs = 1 if ctx.quick else max(3, runs - 2)  # ~20 s each
    log(f"orchestration: airflow dags test x{dt_runs}")
    # keep_going: client errors (pause/unpause) cost this row only
    m.take("dags_test", "airflow dags test", lambda: paused_dags_test(ctx, st, dt_runs), keep_going=True)

    stats: dict[str, Stats] = m.figures
    bare = stats.get("bare")
    labels = dict(expected_rows(ctx))
    floor = stats.get("floor")

    def annotate(key: str, r: Row, s: Stats) -> None:
        if floor and key != "floor":
            r.peer = f"{s.median / floor.median:.2f}x floor (+{s.median - floor.median:.1f} s)"
        if key == "mlopsctl" and floor:
            r.target = "<= 2.0x the in-process floor"
            r.verdict = "met" if s.median / floor.median <= 2.0 else "missed"
        if key == "dags_test" and s.n < 5:
            r.note = f"{s.n} run(s)"

    rows = m.rows([(key, labels[f"{NAME}.{key}"]) for key in ("mlopsctl", "floor", "bare", "dags_test")], annotate)
    if "mlopsctl" in stats and bare:
        over = stats["mlopsctl"].median - bare.median
        rows.append(Row(NAME, f"{NAME}.overhead", labels[f"{NAME}.overhead"], value=over,
                        target="<= 5 s", verdict="met" if over <= 5 else "missed",
                        note=f"medians: {stats['mlopsctl'].median:.1f} s - {bare.median:.1f} s"))
    else:
        rows.append(Row(NAME, f"{NAME}.overhead", labels[f"{NAME}.overhead"],
                        reason=m.reasons.get("mlopsctl") or m.reasons.get("bare") or "not run"))
    ctx.shared["orchestration"] = {k: v.as_dict() for k, v in stats.items()}
    return rows
