"""The ``databricks`` compute backend: each job runs as a one-time Databricks run of a ``spark_python_task``.

Chosen by ``MLOPSCTL_COMPUTE=databricks`` (see ``common/compute.py``, which calls
``make_databricks_task``). Nothing here runs at DAG parse time except building the operator; every
setting below is read when the task runs.

Why ``DatabricksSubmitRunOperator`` (runs/submit): the jobs are already files (``deploy jobs`` uploads
them to a versioned path), each Airflow task is one job with its own parameters built from the DAG
run's conf, and Airflow owns the retries, dependencies and history. A one-time run needs no Databricks
job definition to create, version or clean up. ``DatabricksTaskOperator`` /
``DatabricksWorkflowTaskGroup`` create and run a *Databricks job* (workflow) per DAG run, which pays off
when several tasks should share one job cluster; here the two/one tasks per pipeline are sequential
and short, and a shared job definition would tie the DAG's shape to Databricks'. Trade-off: with jobs
compute, each task starts its own cluster (minutes); use an existing cluster or serverless to avoid it.

Runtime settings (environment of the Airflow workers; read at task run time):

=========================================  =========================================================
``MLOPSCTL_DATABRICKS_JOBS_PATH``          where ``mlopsctl deploy jobs`` put the job files, e.g.
                                           ``/Workspace/Shared/mlopsctl/jobs/v0.1.0-1a2b3c4d5e6f`` or
                                           ``/Volumes/main/mlops/jobs/v0.1.0-...``. The Airflow
                                           Variable of the same name (``deploy jobs --set-variable``)
                                           wins over the environment. Required.
``MLOPSCTL_DATABRICKS_CONN_ID``            Airflow connection (default ``databricks_default``;
                                           written by ``mlopsctl connect databricks``).
``MLOPSCTL_DATABRICKS_COMPUTE``            ``jobs`` (default: a ``new_cluster`` per run),
                                           ``existing`` or ``serverless``.
``MLOPSCTL_DATABRICKS_CLUSTER_ID``         the cluster for ``existing``.
``MLOPSCTL_DATABRICKS_SPARK_VERSION``      jobs compute runtime (default ``15.4.x-cpu-ml-scala2.12``:
                                           an ML runtime ships scikit-learn, pandas and MLflow).
``MLOPSCTL_DATABRICKS_NODE_TYPE_ID``       jobs compute node type (default ``i3.xlarge``).
``MLOPSCTL_DATABRICKS_NUM_WORKERS``        jobs compute workers (default ``1``).
``MLOPSCTL_DATABRICKS_CLUSTER_JSON``       extra ``new_cluster`` fields as a JSON object (optional,
                                           e.g. ``{"data_security_mode": "SINGLE_USER"}``).
``MLOPSCTL_DATABRICKS_ENVIRONMENT_VERSION`` serverless environment version (default ``2``).
``MLOPSCTL_DATABRICKS_PIP``                serverless pip dependencies, comma-separated (default
                                           ``scikit-learn>=1.5,pandas,matplotlib,mlflow>=3.1``).
``MLOPSCTL_DATABRICKS_WORK_DIR``           features tables; must be storage every run sees, e.g.
                                           ``/Volumes/main/mlops/work`` (default: ``<volume>/work``
                                           when the jobs path is in a volume, else required).
``MLOPSCTL_DATABRICKS_TRACKING_URI``       MLflow tracking URI the jobs use (default ``databricks``:
                                           the workspace's MLflow). Tests point it at a local server.
``MLOPSCTL_DATABRICKS_REGISTRY_URI``       model registry (default ``databricks-uc``; empty = the
                                           tracking server's registry).
``MLOPSCTL_DATABRICKS_UC_SCHEMA``          ``catalog.schema`` prefixed to a ``register_model`` name
                                           that has no dot (Unity Catalog names are
                                           ``catalog.schema.model``), e.g. ``main.mlops``.
``MLOPSCTL_DATABRICKS_EXPERIMENT_PREFIX``  MLflow experiment folder (default:
                                           ``MLOPSCTL_MLFLOW_EXPERIMENT_PREFIX`` if set, else
                                           ``/Shared/mlopsctl``: Databricks experiments are
                                           workspace paths).
``MLOPSCTL_DATABRICKS_POLL_SECONDS``       how often the operator polls ``runs/get`` (default 30).
``MLOPSCTL_DATABRICKS_RETRY_LIMIT``        API attempts on 429/5xx/connection errors (default 6,
                                           exponential backoff from 1 s).
=========================================  =========================================================

The job's argv (``arguments`` from the DAG, Jinja rendered by Airflow from the run's conf/params) is
passed as ``spark_python_task.parameters`` (a list of strings); the values of ``--work-dir``,
``--tracking-uri``, ``--registry-uri`` and ``--experiment-prefix`` are replaced with the Databricks
settings above, and ``--register-model`` gets the Unity Catalog prefix.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from airflow.providers.databricks.operators.databricks import DatabricksSubmitRunOperator

JOBS_PATH_KEY = "MLOPSCTL_DATABRICKS_JOBS_PATH"
ERROR_PREFIX = "mlopsctl-error:"  # printed by the jobs for bad data (exit 3): not worth a retry
DEFAULT_SPARK_VERSION = "15.4.x-cpu-ml-scala2.12"
DEFAULT_NODE_TYPE = "i3.xlarge"
DEFAULT_PIP = "scikit-learn>=1.5,pandas,matplotlib,mlflow>=3.1"
ENVIRONMENT_KEY = "mlopsctl"


class DatabricksConfigError(ValueError):
    """A Databricks backend setting is missing or wrong (fails the task without retries)."""


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return default if value is None else value.strip()


def jobs_path() -> str:
    """The uploaded job files' folder: Airflow Variable first (set by `deploy jobs --set-variable`), then env."""
    value = None
    try:
        from airflow.sdk import Variable

        value = Variable.get(JOBS_PATH_KEY, default=None)
    except Exception:  # noqa: BLE001 - no Variable backend reachable (e.g. unit tests): fall back to env
        value = None
    value = (value or _env(JOBS_PATH_KEY) or "").rstrip("/")
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


def compute_spec() -> dict[str, Any]:
    """The compute part of the runs/submit payload, from MLOPSCTL_DATABRICKS_COMPUTE."""
    kind = (_env("MLOPSCTL_DATABRICKS_COMPUTE") or "jobs").lower()
    if kind == "existing":
        cluster = _env("MLOPSCTL_DATABRICKS_CLUSTER_ID")
        if not cluster:
            raise DatabricksConfigError("MLOPSCTL_DATABRICKS_COMPUTE=existing needs MLOPSCTL_DATABRICKS_CLUSTER_ID")
        return {"existing_cluster_id": cluster}
    if kind == "serverless":
        deps = [d.strip() for d in (_env("MLOPSCTL_DATABRICKS_PIP") or DEFAULT_PIP).split(",") if d.strip()]
        spec = {"client": _env("MLOPSCTL_DATABRICKS_ENVIRONMENT_VERSION") or "2", "dependencies": deps}
        return {"environments": [{"environment_key": ENVIRONMENT_KEY, "spec": spec}],
                "environment_key": ENVIRONMENT_KEY}
    if kind == "jobs":
        try:
            workers = int(_env("MLOPSCTL_DATABRICKS_NUM_WORKERS") or "1")
        except ValueError:
            raise DatabricksConfigError("MLOPSCTL_DATABRICKS_NUM_WORKERS must be an integer") from None
        cluster: dict[str, Any] = {
            "spark_version": _env("MLOPSCTL_DATABRICKS_SPARK_VERSION") or DEFAULT_SPARK_VERSION,
            "node_type_id": _env("MLOPSCTL_DATABRICKS_NODE_TYPE_ID") or DEFAULT_NODE_TYPE,
            "num_workers": workers,
        }
        extra = _env("MLOPSCTL_DATABRICKS_CLUSTER_JSON")
        if extra:
            try:
                more = json.loads(extra)
            except ValueError:
                raise DatabricksConfigError("MLOPSCTL_DATABRICKS_CLUSTER_JSON is not valid JSON") from None
            if not isinstance(more, dict):
                raise DatabricksConfigError("MLOPSCTL_DATABRICKS_CLUSTER_JSON must be a JSON object")
            cluster.update(more)
        return {"new_cluster": cluster}
    raise DatabricksConfigError(
        f"MLOPSCTL_DATABRICKS_COMPUTE={kind!r}: expected jobs, existing or serverless"
    )


def experiment_prefix() -> str:
    return (_env("MLOPSCTL_DATABRICKS_EXPERIMENT_PREFIX") or _env("MLOPSCTL_MLFLOW_EXPERIMENT_PREFIX")
            or "/Shared/mlopsctl")


def model_name(name: str) -> str:
    schema = _env("MLOPSCTL_DATABRICKS_UC_SCHEMA")
    if name and schema and "." not in name:
        return f"{schema.rstrip('.')}.{name}"
    return name


def databricks_parameters(arguments: Sequence[Any], jobs: str) -> list[str]:
    """The rendered argv with the Databricks-side values swapped in (all strings, as the API wants)."""
    overrides = {
        "--work-dir": work_dir(jobs),
        "--tracking-uri": _env("MLOPSCTL_DATABRICKS_TRACKING_URI") or "databricks",
        "--registry-uri": _env("MLOPSCTL_DATABRICKS_REGISTRY_URI", "databricks-uc"),
        "--experiment-prefix": experiment_prefix(),
    }
    out = ["" if a is None else str(a) for a in arguments]
    for i, item in enumerate(out[:-1]):
        if item in overrides:
            out[i + 1] = overrides[item] or ""
        elif item == "--register-model":
            out[i + 1] = model_name(out[i + 1])
    return out


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
        from airflow.sdk.exceptions import AirflowException, AirflowFailException

        try:
            jobs = jobs_path()
            compute = compute_spec()
            parameters = databricks_parameters((self.spark_python_task or {}).get("parameters", []), jobs)
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
        self.databricks_conn_id = _env("MLOPSCTL_DATABRICKS_CONN_ID") or self.databricks_conn_id
        self.polling_period_seconds = _int_env("MLOPSCTL_DATABRICKS_POLL_SECONDS", 30)
        self.databricks_retry_limit = _int_env("MLOPSCTL_DATABRICKS_RETRY_LIMIT", self.databricks_retry_limit)
        self.__dict__.pop("_hook", None)  # built lazily from the (run-time) connection id and retry limit
        self.log.info("Databricks run of %s/%s on %s", jobs, self.script, ", ".join(sorted(compute)))
        try:
            return super().execute(context)
        except AirflowException as exc:
            if ERROR_PREFIX in str(exc):  # the job judged the input bad: retrying cannot help
                raise AirflowFailException(str(exc)) from None
            raise


def make_databricks_task(task_id: str, script: str, arguments: list[str], **kwargs: Any) -> MlopsctlDatabricksRunOperator:
    """The seam `common/compute.py` calls for MLOPSCTL_COMPUTE=databricks."""
    return MlopsctlDatabricksRunOperator(task_id=task_id, script=script, arguments=arguments, **kwargs)
