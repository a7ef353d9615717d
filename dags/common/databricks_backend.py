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
from collections.abc import Sequence
from typing import Any

from airflow.providers.databricks.operators.databricks import DatabricksSubmitRunOperator
from airflow.sdk.exceptions import AirflowException

JOBS_PATH_KEY = "MLOPSCTL_DATABRICKS_JOBS_PATH"
ERROR_PREFIX = "mlopsctl-error:"  # printed by the jobs for bad data (exit 3): not worth a retry
DEFAULT_SPARK_VERSION = "17.3.x-cpu-ml-scala2.13"  # 17.3 LTS ML: MLflow 3 in the image
DEFAULT_DATA_SECURITY_MODE = "DATA_SECURITY_MODE_DEDICATED"
DATA_SECURITY_MODES = ("DATA_SECURITY_MODE_DEDICATED", "SINGLE_USER")  # databricks-sdk DataSecurityMode names
DEFAULT_ENVIRONMENT_VERSION = "2"
#: the jobs' wheel, uploaded by ``deploy jobs`` next to the entry scripts; its version is mlopsctl's
#: (pyproject.toml), which tests/unit/test_jobs_wheel.py pins
JOBS_WHEEL = "mlopsctl_jobs-0.1.0-py3-none-any.whl"
#: what the jobs import that a serverless environment lacks, at the versions of uv.lock (the same test pins them)
SERVERLESS_PINS = ("mlflow==3.17.2", "scikit-learn==1.9.1", "matplotlib==3.11.2")
#: on classic compute the ML runtime brings the rest; MLflow 3 is what the jobs' log_model(name=...) needs
CLASSIC_PYPI = ("mlflow>=3.1,<4",)
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
        "MLOPSCTL_DATABRICKS_WORK_DIR is not set (features tables need storage all runs share, e.g. "
        "/Volumes/<catalog>/<schema>/<volume>/work)"
    )


def jobs_wheel_path(jobs: str) -> str:
    return f"{jobs}/{JOBS_WHEEL}"


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
        spec = {"environment_version": _env("MLOPSCTL_DATABRICKS_ENVIRONMENT_VERSION") or DEFAULT_ENVIRONMENT_VERSION,
                "dependencies": [jobs_wheel_path(jobs), *SERVERLESS_PINS, *extra]}
        return {"environments": [{"environment_key": ENVIRONMENT_KEY, "spec": spec}],
                "environment_key": ENVIRONMENT_KEY}
    if kind == "jobs":
        return {"new_cluster": _new_cluster(script), "libraries": libraries}
    raise DatabricksConfigError(
        f"MLOPSCTL_DATABRICKS_COMPUTE={kind!r}: expected jobs, existing or serverless"
    )


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
            "(the access modes that run an ML runtime and read Unity Catalog)"
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
    return cluster


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
    """The rendered argv with the Databricks-side values swapped in (all strings, as the API wants)."""
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
    return out


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
        task.update({k: v for k, v in compute.items() if k != "environments"})
        self.tasks = [task]
        self.environments = compute.get("environments")
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
