"""The ``databricks`` compute backend: each job runs as a one-time Databricks run of a ``spark_python_task``.

Chosen by ``MLOPSCTL_COMPUTE=databricks`` (``common/compute.py`` calls ``make_databricks_task``). Nothing here
runs at DAG parse time except building the operator, a ``DatabricksSubmitRunOperator``; every
``MLOPSCTL_DATABRICKS_*`` setting is read when the task runs, and a setting that is wrong for the target fails
the task before anything is submitted. Per compute mode (``jobs``, ``existing``, ``serverless``) it builds the
compute spec and what the task installs: the jobs' wheel that ``deploy jobs`` uploaded beside the entry
scripts, plus MLflow and, on serverless, the libraries the serverless image lacks. It rewrites the job's
Databricks-specific arguments and derives an idempotency token per Airflow try. Failures are what they look
like, with ``deferrable`` on or off: a job's bad-data exit (a ``mlopsctl-error:`` line in the run's log tail)
and a request Databricks refuses (a 4xx other than 429 and ``COULD_NOT_ACQUIRE_LOCK``) fail the task without
retries; any other failed run fails it with the job's log tail, and Airflow retries it.

Every setting, the compute modes and why one-time runs: docs/databricks.md; the payloads it sends:
docs/databricks-payloads.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from typing import Any

from airflow.providers.databricks.operators.databricks import DatabricksSubmitRunOperator
from airflow.sdk.exceptions import AirflowException

JOBS_PATH_KEY = "MLOPSCTL_DATABRICKS_JOBS_PATH"
ERROR_PREFIX = "mlopsctl-error:"  # printed by the jobs for bad data (exit 3): not worth a retry
DEFAULT_SPARK_VERSION = "17.3.x-cpu-ml-scala2.13"  # 17.3 LTS ML: MLflow 3 in the image
#: new clusters' access mode: the legacy name of dedicated access, the one valid without ``kind``
DEFAULT_DATA_SECURITY_MODE = "SINGLE_USER"
DATA_SECURITY_MODES = ("SINGLE_USER", "DATA_SECURITY_MODE_DEDICATED")  # databricks-sdk DataSecurityMode names
#: ``kind`` a cluster spec needs for the DATA_SECURITY_MODE_* names and for these fields (databricks-sdk
#: ClusterSpec docstrings)
CLASSIC_PREVIEW = "CLASSIC_PREVIEW"
KIND_ONLY_FIELDS = ("is_single_node", "use_ml_runtime")
#: serverless environment versions (Databricks release notes, "Serverless environment versions"): the Spark
#: client each ships, and whether the jobs, which are pyspark 4.0 client code, run on it
SERVERLESS_ENVIRONMENTS = {
    "1": ("Python 3.10, Databricks Connect 14.3 (Spark 3.5 client)", False),
    "2": ("Python 3.11, Databricks Connect 15.4 (Spark 3.5 client)", False),
    "3": ("Python 3.12, Databricks Connect 16.4 (Spark 3.5 client)", False),
    "4": ("Python 3.12, Databricks Connect 17.2 (Spark 4.0 client)", True),
    "5": ("Python 3.12, Databricks Connect 18 (Spark 4.1 client)", True),
}
DEFAULT_ENVIRONMENT_VERSION = "4"
#: the one MLflow the jobs run with on every compute: serverless dependencies, classic libraries and the jobs'
#: wheel (spark_jobs/pyproject.toml); tests/unit/test_jobs_wheel.py holds all three to uv.lock's MLflow
MLFLOW_PIN = "mlflow==3.17.2"
#: a jobs folder of ``deploy jobs``: ``v<version>-<label>``; its wheel's version is ``<version>+<label>``
#: (a copy of mlopsctl/jobs_wheel.py's ``FOLDER``, which tests/unit/test_databricks_backend.py compares)
JOBS_FOLDER = re.compile(r"v(?P<public>[0-9][0-9a-z.!]*)-(?P<local>[a-z0-9]+(?:\.[a-z0-9]+)*)")
#: what the jobs import that a serverless environment lacks, at the versions of uv.lock (the same test pins them)
SERVERLESS_PINS = (MLFLOW_PIN, "scikit-learn==1.9.1", "matplotlib==3.11.2")
#: on classic compute the ML runtime brings the rest; the jobs bring their MLflow
CLASSIC_PYPI = (MLFLOW_PIN,)
#: runs/submit fields that go to the top level of the payload, not into the task
TOP_LEVEL_FIELDS = ("environments", "performance_target")
DEFAULT_EXPERIMENT_PREFIX = "/Shared/mlopsctl"
#: 4xx error codes that a retry may cure (the provider's hook retries them, and so may Airflow)
RETRIED_ERROR_CODES = frozenset({"COULD_NOT_ACQUIRE_LOCK"})
ENVIRONMENT_KEY = "mlopsctl"
#: jobs that use no Spark: on jobs compute they get a single-node cluster
SINGLE_NODE_SCRIPTS = frozenset({"grid_search.py"})
#: what Databricks requires of a single-node cluster besides num_workers 0
SINGLE_NODE_SPARK_CONF = {"spark.databricks.cluster.profile": "singleNode", "spark.master": "local[*, 4]"}
SINGLE_NODE_TAGS = {"ResourceClass": "SingleNode"}


class DatabricksConfigError(ValueError):
    """A Databricks backend setting is missing or wrong (fails the task without retries)."""


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return default if value is None else value.strip()


def _variable_or_env(name: str) -> str | None:
    """A setting that can change without redeploying the Airflow image: the Airflow Variable of the same name
    wins over the environment (``VARIABLE_SETTINGS``)."""
    value = None
    try:
        from airflow.sdk import Variable

        value = Variable.get(name, default=None)
    except Exception:  # noqa: BLE001 - no Variable backend reachable (e.g. unit tests): fall back to env
        value = None
    return value.strip() if value and value.strip() else _env(name)


def jobs_path() -> str:
    """The uploaded job files' folder: Airflow Variable first (set by `deploy jobs --set-variable`), then env."""
    value = (_variable_or_env(JOBS_PATH_KEY) or "").rstrip("/")
    if not value:
        raise DatabricksConfigError(
            f"{JOBS_PATH_KEY} is not set: run `mlopsctl deploy jobs --set-variable` (or set it on the Airflow "
            "workers to the path `deploy jobs` printed)"
        )
    if not value.startswith(("/Workspace/", "/Volumes/", "dbfs:/")):
        raise DatabricksConfigError(f"{JOBS_PATH_KEY}={value!r} must start with /Workspace/, /Volumes/ or dbfs:/")
    return value


def work_dir(jobs: str) -> str:
    explicit = _env("MLOPSCTL_DATABRICKS_WORK_DIR")
    if explicit:
        return explicit.rstrip("/")
    parts = [p for p in jobs.split("/") if p]
    if jobs.startswith("/Volumes/") and len(parts) >= 4:
        return "/" + "/".join(parts[:4]) + "/work"
    raise DatabricksConfigError(
        "MLOPSCTL_DATABRICKS_WORK_DIR is not set (training tables need storage all runs share, e.g. "
        "/Volumes/<catalog>/<schema>/<volume>/work)"
    )


def jobs_version(jobs: str) -> str:
    """The version of the jobs' wheel in a deploy folder, from its name: ``.../v0.1.0-1a2b3c4d5e6f`` ->
    ``0.1.0+1a2b3c4d5e6f``. Each task passes it to its job (``--jobs-version``), which refuses to run
    another installed version: a cluster keeps the first version of a library until it restarts."""
    folder = jobs.rstrip("/").rsplit("/", 1)[-1]
    match = JOBS_FOLDER.fullmatch(folder)
    if match is None:
        raise DatabricksConfigError(
            f"{JOBS_PATH_KEY}={jobs!r}: its last folder {folder!r} is not a folder `mlopsctl deploy jobs` made "
            "(v<version>-<label>, e.g. v0.1.0-1a2b3c4d5e6f), whose name gives the version of the jobs' wheel "
            "in it. Deploy with `mlopsctl deploy jobs --set-variable`. Nothing was submitted."
        )
    return f"{match['public']}+{match['local']}"


def jobs_wheel_path(jobs: str) -> str:
    """The jobs' wheel `deploy jobs` uploaded into the folder ``jobs``."""
    return f"{jobs}/mlopsctl_jobs-{jobs_version(jobs)}-py3-none-any.whl"


def compute_spec(jobs: str, script: str = "") -> dict[str, Any]:
    """The compute and library part of the runs/submit payload, from MLOPSCTL_DATABRICKS_COMPUTE (``jobs``:
    the uploaded jobs' folder, which holds the wheel; ``script``: the job file, which decides whether a new
    cluster needs workers). ``environments`` goes to the top level of the payload, the rest into the task."""
    kind = (_variable_or_env("MLOPSCTL_DATABRICKS_COMPUTE") or "jobs").lower()
    libraries = [{"whl": jobs_wheel_path(jobs)}, *({"pypi": {"package": p}} for p in CLASSIC_PYPI)]
    if kind == "existing":
        cluster = _variable_or_env("MLOPSCTL_DATABRICKS_CLUSTER_ID")
        if not cluster:
            raise DatabricksConfigError("MLOPSCTL_DATABRICKS_COMPUTE=existing needs MLOPSCTL_DATABRICKS_CLUSTER_ID")
        return {"existing_cluster_id": cluster, "libraries": libraries}
    if kind == "serverless":
        extra = [d.strip() for d in (_env("MLOPSCTL_DATABRICKS_PIP") or "").split(",") if d.strip()]
        spec = {"environment_version": environment_version(),
                "dependencies": [jobs_wheel_path(jobs), *SERVERLESS_PINS, *extra]}
        out: dict[str, Any] = {"environments": [{"environment_key": ENVIRONMENT_KEY, "spec": spec}],
                               "environment_key": ENVIRONMENT_KEY}
        target = performance_target()
        if target:
            out["performance_target"] = target
        return out
    if kind == "jobs":
        return {"new_cluster": _new_cluster(script), "libraries": libraries}
    raise DatabricksConfigError(
        f"MLOPSCTL_DATABRICKS_COMPUTE={kind!r}: expected jobs, existing or serverless"
    )


def environment_version() -> str:
    """MLOPSCTL_DATABRICKS_ENVIRONMENT_VERSION, refused unless its Spark client runs the jobs (pyspark 4)."""
    name = "MLOPSCTL_DATABRICKS_ENVIRONMENT_VERSION"
    version = _env(name) or DEFAULT_ENVIRONMENT_VERSION
    runs = [v for v, (_, ok) in SERVERLESS_ENVIRONMENTS.items() if ok]
    if version in SERVERLESS_ENVIRONMENTS and not SERVERLESS_ENVIRONMENTS[version][1]:
        raise DatabricksConfigError(
            f"{name}={version}: serverless environment {version} ships {SERVERLESS_ENVIRONMENTS[version][0]}, "
            f"and the jobs are pyspark 4 code (e.g. PySparkException.getCondition). Use {' or '.join(runs)} "
            f"(default {DEFAULT_ENVIRONMENT_VERSION}). Nothing was submitted."
        )
    if version not in SERVERLESS_ENVIRONMENTS:
        raise DatabricksConfigError(
            f"{name}={version!r} is not a serverless environment version the jobs are known to run on: use "
            f"{' or '.join(runs)} (default {DEFAULT_ENVIRONMENT_VERSION}). Nothing was submitted."
        )
    return version


def performance_target() -> str | None:
    """MLOPSCTL_DATABRICKS_PERFORMANCE_TARGET (serverless runs' ``performance_target``), checked against
    databricks-sdk's PerformanceTarget, since the Jobs API drops a value it does not know; unset: None."""
    name = "MLOPSCTL_DATABRICKS_PERFORMANCE_TARGET"
    value = (_env(name) or "").upper()
    if not value:
        return None
    try:
        from databricks.sdk.service.jobs import PerformanceTarget
    except ImportError:
        raise DatabricksConfigError(f"{name} is checked against databricks-sdk, which is not installed on "
                                    "this Airflow worker (pip install databricks-sdk)") from None
    known = [t.value for t in PerformanceTarget]
    if value not in known:
        raise DatabricksConfigError(f"{name}={value!r}: expected one of {', '.join(known)}. Nothing was submitted.")
    return value


def _new_cluster(script: str) -> dict[str, Any]:
    node_type = _env("MLOPSCTL_DATABRICKS_NODE_TYPE_ID")
    if not node_type:
        raise DatabricksConfigError(
            "MLOPSCTL_DATABRICKS_NODE_TYPE_ID is not set, and MLOPSCTL_DATABRICKS_COMPUTE=jobs starts a new "
            "cluster per task, whose node type only the workspace's cloud knows (e.g. i3.xlarge on AWS, "
            "Standard_DS3_v2 on Azure, n2-standard-4 on GCP; `databricks clusters list-node-types` lists "
            "them). Set it on the Airflow workers, or use MLOPSCTL_DATABRICKS_COMPUTE=serverless or "
            "existing. Nothing was submitted."
        )
    mode = (_env("MLOPSCTL_DATABRICKS_DATA_SECURITY_MODE") or DEFAULT_DATA_SECURITY_MODE).upper()
    if mode not in DATA_SECURITY_MODES:
        raise DatabricksConfigError(
            f"MLOPSCTL_DATABRICKS_DATA_SECURITY_MODE={mode!r}: expected one of {', '.join(DATA_SECURITY_MODES)} "
            "(dedicated access, which runs an ML runtime and reads Unity Catalog)"
        )
    cluster: dict[str, Any] = {
        "spark_version": _env("MLOPSCTL_DATABRICKS_SPARK_VERSION") or DEFAULT_SPARK_VERSION,
        "node_type_id": node_type,
        "data_security_mode": mode,
    }
    if script in SINGLE_NODE_SCRIPTS:
        cluster.update(num_workers=0, spark_conf=dict(SINGLE_NODE_SPARK_CONF), custom_tags=dict(SINGLE_NODE_TAGS))
    else:
        try:
            cluster["num_workers"] = int(_env("MLOPSCTL_DATABRICKS_NUM_WORKERS") or "1")
        except ValueError:
            raise DatabricksConfigError("MLOPSCTL_DATABRICKS_NUM_WORKERS must be an integer") from None
    extra = _env("MLOPSCTL_DATABRICKS_CLUSTER_JSON")
    if extra:
        try:
            more = json.loads(extra)
        except ValueError:
            raise DatabricksConfigError("MLOPSCTL_DATABRICKS_CLUSTER_JSON is not valid JSON") from None
        if not isinstance(more, dict):
            raise DatabricksConfigError("MLOPSCTL_DATABRICKS_CLUSTER_JSON must be a JSON object")
        cluster.update(more)
    _check_kind(cluster)
    return cluster


def _check_kind(cluster: dict[str, Any]) -> None:
    """The Clusters API takes the DATA_SECURITY_MODE_* names, ``is_single_node`` and ``use_ml_runtime`` only
    from a cluster of ``kind`` CLASSIC_PREVIEW: refuse such a spec before a workspace does."""
    if str(cluster.get("kind") or "").upper() == CLASSIC_PREVIEW:
        return
    mode = str(cluster.get("data_security_mode") or "")
    needs = [f"data_security_mode={mode}"] if mode.startswith("DATA_SECURITY_MODE_") else []
    needs += [field for field in KIND_ONLY_FIELDS if field in cluster]
    if needs:
        raise DatabricksConfigError(
            f"the new cluster sets {', '.join(needs)}, which Databricks accepts only with kind "
            f"{CLASSIC_PREVIEW}: add \"kind\": \"{CLASSIC_PREVIEW}\" to MLOPSCTL_DATABRICKS_CLUSTER_JSON, or use "
            f"MLOPSCTL_DATABRICKS_DATA_SECURITY_MODE={DEFAULT_DATA_SECURITY_MODE} (the default). Nothing was submitted."
        )


def tracking_uri() -> str:
    return _env("MLOPSCTL_DATABRICKS_TRACKING_URI") or "databricks"


def registry_uri() -> str:
    return _env("MLOPSCTL_DATABRICKS_REGISTRY_URI", "databricks-uc") or ""


def _is_workspace_mlflow(uri: str) -> bool:
    return uri == "databricks" or uri.startswith("databricks://")


def experiment_prefix(tracking: str | None = None) -> str:
    """The experiment folder; with the workspace's MLflow it must be a folder non-admins can write to."""
    prefix = (_env("MLOPSCTL_DATABRICKS_EXPERIMENT_PREFIX") or DEFAULT_EXPERIMENT_PREFIX).rstrip("/")
    if _is_workspace_mlflow(tracking or tracking_uri()) and not prefix.startswith(("/Shared/", "/Users/")):
        raise DatabricksConfigError(
            f"MLOPSCTL_DATABRICKS_EXPERIMENT_PREFIX={prefix!r} is not under /Shared/ or /Users/: on Databricks "
            "an experiment is a workspace path whose parent folder must exist, and only admins can create "
            "top-level folders. Use e.g. /Shared/mlopsctl (the default) or /Users/<you>/mlopsctl; "
            "`mlopsctl deploy jobs` creates it. Nothing was submitted."
        )
    return prefix


def model_name(name: str, registry: str | None = None) -> str:
    """The registered model name: ``MLOPSCTL_DATABRICKS_UC_SCHEMA`` prefixes a name without a dot; the
    Unity Catalog registry takes only ``catalog.schema.model``."""
    schema = _env("MLOPSCTL_DATABRICKS_UC_SCHEMA")
    if name and schema and "." not in name:
        name = f"{schema.strip('.')}.{name}"
    registry = registry_uri() if registry is None else registry
    if name and registry.startswith("databricks-uc") and (
            len(name.split(".")) != 3 or not all(name.split("."))):
        raise DatabricksConfigError(
            f"model name {name!r} is not catalog.schema.model, which the Unity Catalog registry "
            f"({registry}) requires. Set MLOPSCTL_DATABRICKS_UC_SCHEMA to the catalog.schema to register "
            "into (e.g. main.mlops; you need USE SCHEMA and CREATE MODEL on it), or pass a three-part "
            "--register-model name. Nothing was submitted."
        )
    return name


def databricks_parameters(arguments: Sequence[Any], jobs: str) -> list[str]:
    """The rendered argv with the Databricks-side values swapped in (all strings, as the API wants), and
    the jobs' wheel version the job must find installed."""
    tracking, registry = tracking_uri(), registry_uri()
    overrides = {
        "--work-dir": work_dir(jobs),
        "--tracking-uri": tracking,
        "--registry-uri": registry,
        "--experiment-prefix": experiment_prefix(tracking),
    }
    out = ["" if a is None else str(a) for a in arguments]
    for i, item in enumerate(out[:-1]):
        if item in overrides:
            out[i + 1] = overrides[item] or ""
        elif item == "--register-model":
            out[i + 1] = model_name(out[i + 1], registry)
    return [*out, "--jobs-version", jobs_version(jobs)]  # the job checks its installed wheel against it


def idempotency_token(dag_id: str, run_id: str, task_id: str, try_number: int) -> str:
    """64 hex characters (the Jobs API's limit): one Databricks run per Airflow try."""
    key = "\n".join((dag_id, run_id, task_id, str(try_number)))
    return hashlib.sha256(key.encode()).hexdigest()


def run_name(dag_id: str, task_id: str, run_id: str) -> str:
    return f"mlopsctl {dag_id}.{task_id} [{run_id}]"


def bad_data_line(logs: str) -> str | None:
    """The job's last ``mlopsctl-error:`` line (printed before exit 3), if any."""
    found = [line.strip() for line in logs.splitlines() if ERROR_PREFIX in line]
    return found[-1][found[-1].index(ERROR_PREFIX):] if found else None


def databricks_refusal(exc: BaseException) -> str | None:
    """Databricks' own words when ``exc`` is a request it refused (a 4xx answer, e.g. a payload it does not
    accept): a retry sends the same request and is refused the same way. None for what a retry may cure:
    429 (throttled), 400 ``COULD_NOT_ACQUIRE_LOCK``, 5xx, and anything that is no answer from Databricks."""
    from airflow.providers.databricks.exceptions import DatabricksApiError

    status = getattr(exc, "http_status_code", None)
    if not isinstance(exc, DatabricksApiError) or status is None or not 400 <= status < 500 or status == 429:
        return None
    body: Any = None
    try:
        body = exc.__cause__.response.json()  # type: ignore[union-attr] - the hook raises from requests' HTTPError
    except Exception:  # noqa: BLE001 - no JSON answer: the hook's text stands
        body = None
    if not isinstance(body, dict):
        return f"{status}: {exc}"
    code = str(body.get("error_code") or "")
    if code in RETRIED_ERROR_CODES:
        return None
    return f"{status} {code}: {body.get('message') or exc}".replace(" :", ":")


class DatabricksRunFailed(AirflowException):
    """A failed run, with the job's log tail: Airflow may retry it."""


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join([ln for ln in text.splitlines() if ln.strip()][-lines:])


def _int_env(name: str, default: int) -> int:
    try:
        return max(1, int(_env(name) or default))
    except ValueError:
        return default


class MlopsctlDatabricksRunOperator(DatabricksSubmitRunOperator):
    """DatabricksSubmitRunOperator whose python_file, compute, connection and polling come from the
    runtime settings above, resolved when the task runs (the DAG file stays environment-free)."""

    def __init__(self, *, script: str, arguments: Sequence[str], **kwargs: Any) -> None:
        kwargs.setdefault("databricks_conn_id", "databricks_default")
        kwargs.setdefault("databricks_retry_limit", 6)
        kwargs.setdefault("databricks_retry_delay", 1)
        super().__init__(
            spark_python_task={"python_file": script, "parameters": list(arguments)},
            do_xcom_push=True,
            **kwargs,
        )
        self.script = script

    def execute(self, context: Any) -> Any:
        from airflow.sdk.exceptions import AirflowFailException

        try:
            jobs = jobs_path()
            compute = compute_spec(jobs, self.script)
            parameters = databricks_parameters((self.spark_python_task or {}).get("parameters", []), jobs)
            dag_id, run_id, try_number = _run_identity(context, self)
        except DatabricksConfigError as exc:
            raise AirflowFailException(f"databricks backend: {exc}") from None
        # The multi-task form (tasks[]), which every compute kind accepts (serverless needs it).
        task: dict[str, Any] = {
            "task_key": "".join(c if c.isalnum() or c in "-_" else "_" for c in self.task_id)[:100],
            "spark_python_task": {"python_file": f"{jobs}/{self.script}", "parameters": parameters},
        }
        task.update({k: v for k, v in compute.items() if k not in TOP_LEVEL_FIELDS})
        self.tasks = [task]
        self.environments = compute.get("environments")
        self.performance_target = compute.get("performance_target")
        self.spark_python_task = None
        self.idempotency_token = idempotency_token(dag_id, run_id, self.task_id, try_number)
        self.run_name = run_name(dag_id, self.task_id, run_id)
        timeout = self.execution_timeout.total_seconds() if self.execution_timeout else 0
        self.timeout_seconds = int(timeout) if timeout > 0 else None
        self._connection_settings()
        self.log.info("Databricks run of %s/%s on %s", jobs, self.script, ", ".join(sorted(compute)))
        try:
            return super().execute(context)
        except (AirflowFailException, DatabricksRunFailed):
            raise  # explained already (by `execute_complete`, when the run had ended before a deferral)
        except AirflowException as exc:
            raise self._explained(exc) from None

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        """Where a deferred run ends (``deferrable=True``, or Airflow's ``[operators] default_deferrable``): the
        provider raises a failed run from here, not from `execute`, so the same failure handling runs here.
        A resumed task is a fresh operator: its connection settings and the run id come back first."""
        from airflow.sdk.exceptions import AirflowFailException

        self._connection_settings()
        if self.run_id is None and isinstance(event, dict) and event.get("run_id") is not None:
            self.run_id = event["run_id"]
        try:
            return super().execute_complete(context, event)
        except (AirflowFailException, DatabricksRunFailed):
            raise
        except AirflowException as exc:
            raise self._explained(exc) from None

    def _connection_settings(self) -> None:
        """The connection id, polling period and retry limit from the runtime settings."""
        self.databricks_conn_id = _env("MLOPSCTL_DATABRICKS_CONN_ID") or self.databricks_conn_id
        self.polling_period_seconds = _int_env("MLOPSCTL_DATABRICKS_POLL_SECONDS", 30)
        self.databricks_retry_limit = _int_env("MLOPSCTL_DATABRICKS_RETRY_LIMIT", self.databricks_retry_limit)
        self.__dict__.pop("_hook", None)  # built lazily from the (run-time) connection id and retry limit

    def _explained(self, exc: Exception) -> Exception:
        """The exception that fails the task for a failed request or run: without retries for a refused
        request or bad data, else with the job's log tail (Airflow retries it)."""
        from airflow.sdk.exceptions import AirflowFailException

        refused = databricks_refusal(exc)
        if refused:  # the same request would be refused again
            return AirflowFailException(f"{self.task_id}: Databricks refused the request: {refused}")
        logs = self._failed_task_logs()
        line = bad_data_line(logs)
        if line:  # the job judged the input bad: retrying cannot help
            return AirflowFailException(f"{self.task_id}: {line}")
        if logs:
            return DatabricksRunFailed(f"{exc}\njob output (last lines):\n{_tail(logs)}")
        return exc

    def _failed_task_logs(self) -> str:
        """The ``logs`` (stdout/stderr tail) of the run's failed tasks; empty when unavailable."""
        if self.run_id is None:
            return ""
        try:
            run = self._hook.get_run(self.run_id)
            outputs = [self._hook.get_run_output(t["run_id"]) for t in run.get("tasks", [])
                       if t.get("state", {}).get("result_state") == "FAILED" and "run_id" in t]
        except Exception as exc:  # noqa: BLE001 - the provider's own error stands when the output is unreadable
            self.log.warning("could not read the failed run's output: %s", exc)
            return ""
        return "\n".join(str(o.get("logs") or "") for o in outputs)


def _run_identity(context: Any, op: Any) -> tuple[str, str, int]:
    """(dag id, Airflow run id, try number) of the running task instance."""
    ti = context.get("ti")
    dag_id = getattr(ti, "dag_id", None) or getattr(op, "dag_id", None)
    run_id = getattr(ti, "run_id", None) or context.get("run_id")
    try_number = getattr(ti, "try_number", None)
    if not dag_id or not run_id or try_number is None:
        raise DatabricksConfigError("the task instance has no DAG id, run id or try number: run it from a DAG run")
    return str(dag_id), str(run_id), int(try_number)


def make_databricks_task(task_id: str, script: str, arguments: list[str], **kwargs: Any) -> MlopsctlDatabricksRunOperator:
    """The seam `common/compute.py` calls for MLOPSCTL_COMPUTE=databricks."""
    return MlopsctlDatabricksRunOperator(task_id=task_id, script=script, arguments=arguments, **kwargs)
