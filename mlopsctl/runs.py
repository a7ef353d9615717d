"""The runs service: preflight -> trigger -> follow -> result/failure, shared by every run-shaped command.

It returns typed results (pydantic models) and never prints: notices go to a `Reporter` (the console
implements it), poll updates go to the `on_update` callback of :func:`follow_run`. Errors are raised as
:mod:`mlopsctl.errors` types; `mlopsctl.cli.main` maps them to exit codes.

Following polls every second during the first two minutes (most runs end there, and their end is then seen
within a second), then backs off from 1 s to 5 s; the back-off restarts when something changes. A `timeout` raises WaitTimeoutError and Ctrl-C
raises FollowInterrupted: the run keeps going in Airflow either way. A run's path end to end:
docs/architecture.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from pydantic import BaseModel, Field

from mlopsctl.airflow.models import (
    TERMINAL_RUN_STATES,
    Dag,
    DagRun,
    ImportError_,
    TaskInstance,
    import_errors_of,
    run_duration,
)
from mlopsctl.errors import (
    DagError,
    ExitCode,
    MlopsctlError,
    NotFoundError,
    RunFailedError,
    ServerError,
    UnreachableError,
    WaitTimeoutError,
)

if TYPE_CHECKING:
    from mlopsctl.airflow.client import AirflowClient
    from mlopsctl.pipelines import Pipeline
    from mlopsctl.settings import Settings
    from mlopsctl.tracking import Tracking

LOG_TAIL_LINES = 30
POLL_INITIAL = 1.0
POLL_MAX = 5.0
#: during the first FAST_WINDOW seconds of following, polls are at most POLL_MAX_FAST apart
POLL_MAX_FAST = 1.0
FAST_WINDOW = 120.0
POLL_FACTOR = 1.5
#: keep following through an Airflow outage (api-server restart, network blip) this long before giving up
OUTAGE_GRACE = 600.0


class Reporter(Protocol):
    """Where the service sends notices (plain text, no markup)."""

    def info(self, message: str) -> None: ...
    def warn(self, message: str) -> None: ...


class _Silent:
    def info(self, message: str) -> None:
        pass

    def warn(self, message: str) -> None:
        pass


class RunSource(Protocol):  # the two AirflowClient methods following needs
    def get_run(self, dag_id: str, dag_run_id: str) -> DagRun: ...
    def task_instances(self, dag_id: str, dag_run_id: str) -> list[TaskInstance]: ...


#: on_update(run, tasks, elapsed_seconds), called after every successful poll
UpdateCallback = Callable[[DagRun, list[TaskInstance], float], None]
#: a pre-trigger check: raises an MlopsctlError to stop the run before anything is triggered
PreflightCheck = Callable[["Pipeline"], None]


def reattach_hint(dag_run_id: str) -> str:
    return f"mlopsctl status {dag_run_id} --wait"


class FollowInterrupted(MlopsctlError):
    """Ctrl-C while following: the run keeps going in Airflow."""

    exit_code = ExitCode.INTERRUPTED

    def __init__(self, dag_id: str, dag_run_id: str):
        super().__init__(
            f"Stopped following run {dag_run_id} of {dag_id}; the run keeps going in Airflow.",
            hint=f"Reattach with: {reattach_hint(dag_run_id)}",
        )
        self.dag_id = dag_id
        self.dag_run_id = dag_run_id


# --- results ----------------------------------------------------------------------------------------


class TaskRow(BaseModel):
    task_id: str
    map_index: int = -1
    state: str | None = None
    try_number: int = 0
    duration: float | None = None


class Links(BaseModel):
    airflow: str
    mlflow: str | None = None


class FollowStats(BaseModel):
    polls: int
    requests: int
    waited_s: float
    wall_s: float | None = None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


class RunRow(BaseModel):
    """A run of a pipeline: what every run-shaped output starts with (times in ISO 8601)."""

    pipeline: str
    dag_id: str
    dag_run_id: str
    state: str
    start_date: str | None = None
    end_date: str | None = None
    duration_s: float | None = None

    @classmethod
    def fields_of(cls, pipeline: Pipeline, run: DagRun, now: datetime | None = None) -> dict[str, Any]:
        """The RunRow fields of an Airflow run (`now`: the duration of a run still going)."""
        return {
            "pipeline": pipeline.name,
            "dag_id": pipeline.dag_id,
            "dag_run_id": run.dag_run_id,
            "state": run.state,
            "start_date": _iso(run.start_date),
            "end_date": _iso(run.end_date),
            "duration_s": run_duration(run.start_date, run.end_date, None if run.finished else now),
        }


class RunResult(RunRow):
    """One pipeline run as the commands print it (tables, or `to_json()` with --json)."""

    queued_at: str | None = None
    conf: dict[str, Any] | None = None
    tasks: list[TaskRow] = Field(default_factory=list)
    links: Links
    mlflow: dict[str, Any] | None = None
    warnings: list[str] = Field(default_factory=list)
    follow: FollowStats | None = None
    failed_task: str | None = None
    log_tail: list[str] | None = None

    def to_json(self) -> dict[str, Any]:
        doc = self.model_dump(exclude={"follow", "failed_task", "log_tail"})
        if self.follow is not None:
            doc["follow"] = self.follow.model_dump(exclude_none=True)
        if self.failed_task is not None:
            doc["failed_task"] = self.failed_task
            doc["log_tail"] = self.log_tail or []
        return doc

    def failure(self) -> RunFailedError | None:
        """The error a finished, unsuccessful run exits with (None when it succeeded or is not finished)."""
        if self.state == "success" or self.state not in TERMINAL_RUN_STATES:
            return None
        failed = self.failed_task
        where = f": task {failed!r} failed" if failed else ""
        return RunFailedError(
            f"Run {self.dag_run_id} of {self.dag_id} ended {self.state}{where}.",
            hint=f"Full log: mlopsctl logs {self.dag_run_id} --task {failed}" if failed else f"See {self.links.airflow}",
        )


class Triggered(BaseModel):
    """A run just triggered (what `--no-wait` prints)."""

    pipeline: str
    dag_id: str
    dag_run_id: str
    state: str
    conf: dict[str, Any]
    links: dict[str, str]


class RecentRun(RunRow):
    run_type: str | None = None
    metric: str
    metric_value: float | None = None
    mlflow_run_id: str | None = None


class RecentRuns(BaseModel):
    runs: list[RecentRun]
    warnings: list[str] = Field(default_factory=list)


# --- following --------------------------------------------------------------------------------------


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


def backoff_intervals(
    initial: float = POLL_INITIAL, maximum: float = POLL_MAX, factor: float = POLL_FACTOR
) -> Iterator[float]:
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


def follow_run(
    client: RunSource,
    dag_id: str,
    dag_run_id: str,
    *,
    on_update: UpdateCallback | None = None,
    reporter: Reporter | None = None,
    tasks_each_poll: bool | None = None,
    timeout: float | None = None,
    poll_initial: float = POLL_INITIAL,
    poll_max: float = POLL_MAX,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], None] | None = None,
    outage_grace: float = OUTAGE_GRACE,
) -> FollowResult:
    """Poll until the run is success/failed. Raises WaitTimeoutError or FollowInterrupted.

    Task instances are read on every poll when `tasks_each_poll` (default: when there is an `on_update`),
    else once at the end. Airflow unreachable or answering 5xx (after the client's own retries) is an
    outage, not the end: polling continues (one warning to `reporter`) for up to `outage_grace` seconds."""
    clock = clock or time.monotonic
    sleep = sleep or time.sleep
    reporter = reporter or _Silent()
    if tasks_each_poll is None:
        tasks_each_poll = on_update is not None
    started = clock()
    result = FollowResult(run=None, tasks=[])  # type: ignore[arg-type]
    last: tuple | None = None
    intervals = backoff_intervals(poll_initial, poll_max)
    outage_since: float | None = None
    try:
        while True:
            try:
                run = client.get_run(dag_id, dag_run_id)
                result.requests += 1
                tasks: list[TaskInstance] = []
                finished = run.state in TERMINAL_RUN_STATES
                if tasks_each_poll or finished:
                    tasks = client.task_instances(dag_id, dag_run_id)
                    result.requests += 1
            except (UnreachableError, ServerError) as exc:
                now = clock()
                if outage_since is None:
                    outage_since = now
                    reporter.warn(f"{exc.message} Still following run {dag_run_id}: it keeps going in Airflow.")
                if now - outage_since > outage_grace or (timeout is not None and now - started >= timeout):
                    raise
                sleep(min(poll_max, max(poll_initial, 1.0)))
                continue
            if outage_since is not None:
                outage_since = None
                reporter.info(f"Airflow is reachable again; following run {dag_run_id}.")
            result.polls += 1
            result.run, result.tasks = run, task_order(tasks)
            if on_update is not None:
                on_update(run, result.tasks, clock() - started)
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


# --- the service ------------------------------------------------------------------------------------


class RunsService:
    """Trigger, follow and report pipeline runs against one Airflow and one MLflow.

    `preflight_checks` run before every trigger, after the DAG itself is checked: each raises an
    MlopsctlError to stop the run (e.g. a compute backend that is down)."""

    def __init__(
        self,
        airflow: AirflowClient,
        settings: Settings,
        *,
        tracking: Callable[[], Tracking],
        reporter: Reporter | None = None,
        preflight_checks: tuple[PreflightCheck, ...] = (),
    ) -> None:
        self.airflow = airflow
        self.settings = settings
        self.tracking = tracking
        self.reporter: Reporter = reporter or _Silent()
        self.preflight_checks = preflight_checks

    def run_url(self, dag_id: str, dag_run_id: str) -> str:
        return f"{self.settings.airflow_url}/dags/{quote(dag_id, safe='')}/runs/{quote(dag_run_id, safe='')}"

    # --- before the trigger ---------------------------------------------------------------------
    def preflight(self, pipeline: Pipeline, conf: dict[str, Any] | None = None, *, auto_unpause: bool = True) -> Dag:
        """Everything checked before a trigger: the DAG is loaded, `conf` suits the compute it publishes (see
        `check_conf`), `preflight_checks` pass; then the DAG is unpaused. A failed check changes nothing."""
        dag = self.loaded_dag(pipeline.dag_id)
        if conf is not None:
            self.check_conf(dag, conf)
        for check in self.preflight_checks:
            check(pipeline)
        self._unpause(dag, auto_unpause)
        return dag

    def check_conf(self, dag: Dag, conf: dict[str, Any]) -> None:
        """What only the DAG can tell: its compute kind (its `compute:<kind>` tag). A path on this machine as
        `data` is refused (InputError) when the tasks run on Databricks; a DAG without the tag refuses nothing."""
        from mlopsctl.datasources import check_data, compute_of

        check_data(conf.get("data"), compute=compute_of(dag.tags), dag_id=dag.dag_id)

    def ensure_dag(self, dag_id: str, *, auto_unpause: bool = True) -> Dag:
        """The DAG must be loaded (else its own file's import error, if any); unpause it unless told not to."""
        dag = self.loaded_dag(dag_id)
        self._unpause(dag, auto_unpause)
        return dag

    def loaded_dag(self, dag_id: str) -> Dag:
        """The DAG as Airflow has it loaded: NotFoundError, or DagError with its file's import error."""
        try:
            dag = self.airflow.get_dag(dag_id)
        except NotFoundError:
            errors = self._import_errors(dag_id)
            if errors:
                err = errors[0]
                trace = (err.stack_trace or "").strip().splitlines()
                raise DagError(
                    f"DAG {dag_id!r} is not loaded: {err.filename} failed to import:\n" + "\n".join(trace[-15:]),
                    hint="Fix the DAG file, then check with `mlopsctl dags` (the dag-processor re-parses it within seconds).",
                ) from None
            raise NotFoundError(
                f"DAG {dag_id!r} is not loaded in Airflow at {self.settings.airflow_url}.",
                hint="Start the local stack (`mlopsctl dev start`) or deploy the bundled DAGs; `mlopsctl dags` lists them.",
            ) from None
        if dag.is_stale:
            self.reporter.warn(
                f"DAG {dag_id} is marked stale (its file is gone from the dags folder); the run may not start."
            )
        return dag

    def _unpause(self, dag: Dag, auto_unpause: bool) -> None:
        if not dag.is_paused:
            return
        if auto_unpause:
            self.airflow.set_paused(dag.dag_id, False)
            self.reporter.info(f"Unpaused DAG {dag.dag_id}.")
        else:
            self.reporter.warn(
                f"DAG {dag.dag_id} is paused: the run will stay queued until you unpause it "
                "(drop --no-auto-unpause, or unpause it in the Airflow UI)."
            )

    def _import_errors(self, dag_id: str) -> list[ImportError_]:
        try:
            errors = self.airflow.import_errors()
        except MlopsctlError:
            return []
        return import_errors_of(errors, dag_id)

    # --- trigger and follow ---------------------------------------------------------------------
    def trigger(self, pipeline: Pipeline, conf: dict[str, Any], *, auto_unpause: bool = True) -> Triggered:
        """Preflight (`conf` included), then trigger with a client-chosen run id (a retried trigger finds the
        same run)."""
        from mlopsctl import pipelines

        self.preflight(pipeline, conf, auto_unpause=auto_unpause)
        run = self.airflow.trigger(pipeline.dag_id, conf, dag_run_id=pipelines.new_dag_run_id())
        return Triggered(
            pipeline=pipeline.name,
            dag_id=pipeline.dag_id,
            dag_run_id=run.dag_run_id,
            state=run.state,
            conf=conf,
            links={"airflow": self.run_url(pipeline.dag_id, run.dag_run_id)},
        )

    def follow(
        self,
        pipeline: Pipeline,
        dag_run_id: str,
        *,
        timeout: float | None = None,
        on_update: UpdateCallback | None = None,
        tasks_each_poll: bool | None = None,
        started: float | None = None,
    ) -> RunResult:
        """Follow to the end, then the result: MLflow metrics on success, the failed task's log tail otherwise.

        A failed run is a result, not an exception: `RunResult.failure()` gives the error to exit with."""
        followed = follow_run(
            self.airflow,
            pipeline.dag_id,
            dag_run_id,
            on_update=on_update,
            reporter=self.reporter,
            tasks_each_poll=tasks_each_poll,
            timeout=timeout,
        )
        result = self.describe(pipeline, followed.run, followed.tasks)
        result.follow = FollowStats(
            polls=followed.polls,
            requests=followed.requests,
            waited_s=round(followed.waited, 3),
            wall_s=round(time.monotonic() - started, 3) if started is not None else None,
        )
        return result

    # --- one run --------------------------------------------------------------------------------
    def locate(self, dag_run_id: str, pipelines: list[Pipeline]) -> tuple[Pipeline, DagRun]:
        """(pipeline, DagRun) of a run id, trying each pipeline's DAG in turn."""
        for p in pipelines:
            try:
                return p, self.airflow.get_run(p.dag_id, dag_run_id)
            except NotFoundError:
                continue
        where = ", ".join(p.dag_id for p in pipelines)
        raise NotFoundError(f"No run {dag_run_id!r} in {where}.", hint="List recent runs with: mlopsctl status")

    def describe(self, pipeline: Pipeline, run: DagRun, tasks: list[TaskInstance] | None = None) -> RunResult:
        """A run as it stands: MLflow result when it succeeded (or partial ones while it runs), the
        failed task's log tail when it failed. MLflow trouble is a warning, never a failure."""
        if tasks is None:
            tasks = task_order(self.airflow.task_instances(pipeline.dag_id, run.dag_run_id))
        result = RunResult(
            **RunRow.fields_of(pipeline, run),
            queued_at=_iso(run.queued_at),
            conf=run.conf,
            tasks=[
                TaskRow(task_id=t.task_id, map_index=t.map_index, state=t.state, try_number=t.try_number,
                        duration=t.duration)
                for t in tasks
            ],
            links=Links(airflow=self.run_url(pipeline.dag_id, run.dag_run_id)),
        )
        if run.state == "failed":
            self._attach_failure(result, tasks)
        else:
            self._attach_mlflow(result, pipeline, missing_ok=run.state != "success")
        return result

    def _attach_mlflow(self, result: RunResult, pipeline: Pipeline, *, missing_ok: bool = False) -> None:
        tracking = self.tracking()
        try:
            outcome = tracking.outcome(pipeline.result, pipeline.dag_id, result.dag_run_id)
            main, points = outcome.main, outcome.points
        except MlopsctlError as exc:
            result.warnings.append(f"MLflow result unavailable: {exc.message}")
            return
        finally:
            tracking.close()
        if main is None and not points:
            if not missing_ok:
                result.warnings.append(
                    f"No MLflow run tagged airflow.dag_run_id={result.dag_run_id} in experiment "
                    f"{tracking.experiment_name(pipeline.dag_id)} at {tracking.tracking_uri}."
                )
            return
        result.mlflow = {"run": main.as_dict() if main else None}
        if points is not None:
            result.mlflow["points"] = points
        if main is not None:
            result.links.mlflow = tracking.run_url(main, self.settings.mlflow_ui)

    def _attach_failure(self, result: RunResult, tasks: list[TaskInstance]) -> None:
        failed = [t for t in tasks if t.state == "failed"] or [t for t in tasks if t.state == "upstream_failed"]
        if not failed:
            return
        task = failed[0]
        result.failed_task = task.task_id
        try:
            lines = self.airflow.read_log(result.dag_id, result.dag_run_id, task.task_id, max(task.try_number, 1),
                                          map_index=task.map_index)
            result.log_tail = lines[-LOG_TAIL_LINES:]
        except MlopsctlError as exc:
            result.log_tail = []
            result.warnings.append(f"Could not read the log of {task.task_id}: {exc.message}")

    # --- recent runs ----------------------------------------------------------------------------
    def recent(self, pipelines: list[Pipeline], limit: int) -> RecentRuns:
        """The latest `limit` runs across `pipelines`, newest first, with each one's key MLflow metric
        (one MLflow search per pipeline, not per run)."""
        now = datetime.now(UTC)
        warnings: list[str] = []
        per_pipeline: dict[str, list[DagRun]] = {}
        for p in pipelines:
            try:
                per_pipeline[p.name] = self.airflow.list_runs(p.dag_id, limit=limit)
            except NotFoundError:
                warnings.append(f"DAG {p.dag_id} is not loaded in Airflow (see `mlopsctl dags`).")
        rows: list[tuple[float, RecentRun]] = []
        tracking = self.tracking()
        try:
            for p in pipelines:
                runs = per_pipeline.get(p.name) or []
                if not runs:
                    continue
                key: dict[str, Any] = {}
                try:
                    key = tracking.key_runs(p.dag_id, p.result, max_results=max(100, limit * 5))
                except MlopsctlError as exc:
                    if not any(w.startswith("MLflow") for w in warnings):
                        warnings.append(f"MLflow metrics unavailable: {exc.message}")
                for r in runs:
                    m = key.get(r.dag_run_id)
                    row = RecentRun(
                        **RunRow.fields_of(p, r, now),
                        run_type=r.run_type,
                        metric=p.key_metric,
                        metric_value=m.metrics.get(p.key_metric) if m else None,
                        mlflow_run_id=m.run_id if m else None,
                    )
                    rows.append(((r.start_date or r.queued_at or now).timestamp(), row))
        finally:
            tracking.close()
        rows.sort(key=lambda pair: pair[0], reverse=True)
        return RecentRuns(runs=[row for _, row in rows[:limit]], warnings=warnings)
