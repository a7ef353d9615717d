"""MLflow: the tracking setup a job runs beside its work (`prepare_tracking`, `beside`), run tags, the logged
and registered model (signature on the raw input columns, the held-out rows beside it), and the grid's parent
and child runs (`log_grid`).

MLflow and matplotlib are imported inside the functions; `quiet_mlflow_env` sets what must be set before
MLflow's first import.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from mlopsctl_jobs.data import DataError, is_numeric
from mlopsctl_jobs.grid import PointResult, choose_best

DEFAULT_TRACKING_URI = "http://127.0.0.1:5000"
DEFAULT_REGISTERED_MODEL = "mlopsctl-random-forest"
#: what Unity Catalog refuses in a tag key: these characters, blanks at either end, more than 255 characters
_UC_TAG_KEY_FORBIDDEN = re.compile(r"[.,\-=/:]")
UC_TAG_KEY_MAX = 255

#: what a training run logs for the model's evaluation: its held-out rows as read (the input columns under their
#: own names and types, the target under its own name), at most EVAL_SPLIT_MAX_ROWS of them, as one Parquet file
EVAL_SPLIT_ARTIFACT = "eval/test_split.parquet"
EVAL_SPLIT_MAX_ROWS = 100_000
#: version tags of a model that takes raw rows: INPUT_TAG = INPUT_RAW, and the name of the column it predicts
INPUT_TAG = "mlopsctl_input"
INPUT_RAW = "raw"
TARGET_TAG = "mlopsctl_target"


def require_raw_input(name: str, mv: Any) -> None:
    """DataError unless the model version ``mv`` of ``name`` takes raw rows (its tag ``INPUT_TAG`` = ``INPUT_RAW``,
    which `model_version_tags` sets): a version without it expects cleaned features, not rows as a user has them."""
    if (mv.tags or {}).get(INPUT_TAG) != INPUT_RAW:
        raise DataError(
            f"version {mv.version} of registered model {name!r} takes cleaned features, not raw rows: it lacks the "
            f"version tag {INPUT_TAG}={INPUT_RAW} that this mlopsctl sets on every version it registers; register a "
            "new version with this mlopsctl (mlopsctl run build-model) and use that one"
        )


def experiment_name(prefix: str, dag_id: str) -> str:
    return f"{prefix.rstrip('/')}/{dag_id}"


def quiet_mlflow_env() -> None:
    """Set before MLflow is imported: no progress bars in task logs, and no usage telemetry.

    MLflow's telemetry client sets and unsets ``_MLFLOW_TELEMETRY_SESSION_ID`` in ``os.environ`` from its
    own thread; a request being made at that moment iterates ``os.environ`` (for proxy settings) and fails
    with KeyError, which failed whole tasks. A batch job has no use for it either."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def warn_if_tracking_unreachable(tracking_uri: str, timeout: float = 5.0) -> bool:
    """One clear log line when an http(s) tracking server does not answer at all: MLflow's own client then
    retries silently for minutes before failing. True if it answered (any HTTP status counts)."""
    from urllib.error import HTTPError, URLError
    from urllib.parse import urlparse
    from urllib.request import urlopen

    parsed = urlparse(tracking_uri)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return True
    where = f"{parsed.scheme}://{parsed.hostname}" + (f":{parsed.port}" if parsed.port else "")  # no user:pw@
    try:
        urlopen(f"{where}/health", timeout=timeout).close()  # http(s) only, checked above
    except HTTPError:
        return True
    except (URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"mlopsctl: MLflow tracking server {where} is not reachable ({reason}); MLflow retries its "
              "requests for a few minutes, then this task fails (and Airflow retries it).", flush=True)
        return False
    return True


def setup_mlflow(tracking_uri: str, experiment: str, registry_uri: str | None = None) -> str:
    """Point MLflow at the tracking server and return the experiment id (created if missing)."""
    quiet_mlflow_env()
    warn_if_tracking_unreachable(tracking_uri)
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    if registry_uri:
        mlflow.set_registry_uri(registry_uri)
    client = mlflow.MlflowClient()
    last_error: Exception | None = None
    for _ in range(3):  # two runs may create the experiment at the same time
        exp = client.get_experiment_by_name(experiment)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                client.restore_experiment(exp.experiment_id)
            return exp.experiment_id
        try:
            return client.create_experiment(experiment)
        except Exception as exc:  # noqa: BLE001 - RESOURCE_ALREADY_EXISTS race; re-read
            last_error = exc
    raise RuntimeError(f"could not get or create MLflow experiment {experiment!r}: {last_error}")


@contextmanager
def beside(fn: Callable[..., Any], *args: Any, name: str, **kwargs: Any) -> Iterator[Future]:
    """Run ``fn`` in a thread beside the ``with`` block, which gets its future. A block that ends normally
    waits for the thread; one that raises does not, so a failing job exits at once: one that fails on its data,
    say, while MLflow's client in the thread still retries an unreachable tracking server."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
    future = pool.submit(fn, *args, **kwargs)
    try:
        yield future
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def prepare_tracking(args: argparse.Namespace, *, figures: bool = False) -> str:
    """Import what logging a model (and, with ``figures``, a matplotlib figure) needs, get or create the
    run's experiment and close the runs of a crashed earlier try; returns the experiment id.

    Nothing here depends on the model, so the jobs run it in a thread beside their Spark read, fit or
    search: MLflow's import alone takes seconds of a job's critical path otherwise. Callers import
    scikit-learn first (`import_sklearn`), so the two threads never import the same packages at once."""
    quiet_mlflow_env()
    import mlflow.sklearn  # noqa: F401 - used by `log_model`
    import pyarrow.parquet  # noqa: F401 - used by `log_eval_split`
    from mlflow.models.signature import ModelSignature  # noqa: F401 - used by `input_signature`

    if figures:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot  # used by `heatmap_figure`; imported here, off the critical path
    exp_id = setup_mlflow(tracking_uri(args), experiment_name(args.experiment_prefix, args.dag_id), args.registry_uri)
    close_stale_runs(exp_id, args.run_id)
    return exp_id


def close_stale_runs(experiment_id: str, dag_run_id: str) -> list[str]:
    """Mark runs of an earlier, crashed try of the same Airflow run (still RUNNING) as FAILED.

    A retried task then leaves exactly one live run per Airflow run; returns the ids it closed.
    """
    import mlflow

    client = mlflow.MlflowClient()
    stale = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`airflow.dag_run_id` = '{dag_run_id.replace(chr(39), '')}' and attributes.status = 'RUNNING'",
    )
    for run in stale:
        client.set_tag(run.info.run_id, "mlopsctl.error", "superseded by a retry of the Airflow task")
        client.set_terminated(run.info.run_id, status="FAILED")
    return [r.info.run_id for r in stale]


def run_tags(dag_id: str, run_id: str, role: str, engine: str, try_number: int | None = None) -> dict[str, str]:
    tags = {
        "airflow.dag_id": dag_id,
        "airflow.dag_run_id": run_id,
        "mlopsctl.pipeline": dag_id,
        "mlopsctl.role": role,
        "mlopsctl.engine": engine,
    }
    if try_number is not None:
        tags["airflow.try_number"] = str(try_number)
    return tags


def uc_tag_key(key: str) -> str:
    """``key`` as a tag key Unity Catalog accepts: each of ``. , - = / :`` becomes ``_``, blanks at either end
    go, and it is cut to 255 characters."""
    return _UC_TAG_KEY_FORBIDDEN.sub("_", key.strip())[:UC_TAG_KEY_MAX]


def model_version_tags(run_id: str, dag_run_id: str, hyperparams: dict[str, Any], target: str) -> dict[str, str]:
    """The tags of a registered model version: the MLflow run that logged it, the Airflow run, the
    hyperparameters, and that it takes raw rows (``INPUT_TAG``) to predict ``target`` (``TARGET_TAG``). Their
    keys are Unity Catalog tag keys (`uc_tag_key`), the same in every registry, so a version is found by the
    same tag on a local MLflow and in Unity Catalog."""
    tags = {"mlflow_run_id": run_id, "airflow_dag_run_id": dag_run_id, **hyperparams,
            INPUT_TAG: INPUT_RAW, TARGET_TAG: target_tag_value(target)}
    return {uc_tag_key(k): str(v) for k, v in tags.items()}


def target_tag_value(target: str) -> str:
    """``target`` as the value of TARGET_TAG: the column name as it is, or JSON-quoted when it begins or ends with
    a blank (Unity Catalog refuses such a tag value, and a column may be named ``"price "``) or begins with a
    double quote (so a quoted value always means JSON). `target_from_tag` reads both forms."""
    if target != target.strip() or target.startswith('"'):
        return json.dumps(target, ensure_ascii=False)
    return target


def target_from_tag(value: str | None) -> str | None:
    """The target column named by a TARGET_TAG value (`target_tag_value`); None without the tag."""
    if value and value.startswith('"'):
        try:
            name = json.loads(value)
        except ValueError:
            return value
        return name if isinstance(name, str) else value
    return value


def model_requirements() -> list[str]:
    """Pinned requirements of the logged model: the versions this job trained with."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for dist in ("mlflow", "scikit-learn", "cloudpickle", "numpy", "pandas", "scipy"):
        try:
            out.append(f"{dist}=={version(dist)}")
        except PackageNotFoundError:
            continue
    return out


def input_signature(X: Any) -> Any:
    """The MLflow signature of the model on raw rows X: every input column under its own name, required,
    ``double`` where X holds numbers (MLflow refuses NaN in integer columns) and ``string`` elsewhere; one
    ``double`` out. Read from X's column types, which the training table fixed, not from its values (an
    all-missing sample would pass for numbers)."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema

    inputs = [ColSpec(DataType.double if is_numeric(X[c].dtype) else DataType.string, c) for c in X.columns]
    return ModelSignature(Schema(inputs), Schema([ColSpec(DataType.double)]))


def log_eval_split(X_test: Any, y_test: Any, target: str) -> None:
    """Log the held-out rows as ``EVAL_SPLIT_ARTIFACT``: the input columns as the model takes them (double or
    string, nulls where values are missing), the target under its own name, at most ``EVAL_SPLIT_MAX_ROWS``
    rows (the split is shuffled, so the first ones are a random sample). Must be called inside an active run."""
    import posixpath
    import tempfile
    from pathlib import Path

    import mlflow
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = X_test.head(EVAL_SPLIT_MAX_ROWS).assign(**{target: y_test.head(EVAL_SPLIT_MAX_ROWS).to_numpy("float64")})
    schema = pa.schema([(c, pa.float64() if is_numeric(X_test[c].dtype) else pa.string()) for c in X_test.columns]
                       + [(target, pa.float64())])
    folder, name = posixpath.split(EVAL_SPLIT_ARTIFACT)
    with tempfile.TemporaryDirectory(prefix="mlopsctl-eval-") as tmp:
        path = Path(tmp) / name
        pq.write_table(pa.Table.from_pandas(rows, schema=schema, preserve_index=False), path)
        mlflow.log_artifact(str(path), artifact_path=folder)


def log_model(
    model: Any, X_sample: Any, register_as: str | None, run_id: str, hyperparams: dict[str, Any], dag_run_id: str,
    *, holdout_rows: tuple[Any, Any], target: str,
) -> tuple[str | None, str | None]:
    """Log the sklearn Pipeline (cloudpickle; signature on the raw input columns + input example) and its
    held-out rows (`log_eval_split`); register it when asked.

    Returns (registered name, version) or (None, None). Must be called inside an active run.
    """
    import mlflow

    log_eval_split(*holdout_rows, target)
    info = mlflow.sklearn.log_model(
        model,
        name="model",
        serialization_format="cloudpickle",
        signature=input_signature(X_sample),
        input_example=X_sample.head(5),
        registered_model_name=register_as or None,
        pip_requirements=model_requirements(),  # explicit: skips MLflow's slow requirement inference
    )
    if not register_as:
        return None, None
    version = str(info.registered_model_version) if info.registered_model_version is not None else None
    if version is None:
        return register_as, None
    client = mlflow.MlflowClient()
    for k, v in model_version_tags(run_id, dag_run_id, hyperparams, target).items():
        client.set_model_version_tag(register_as, version, k, v)
    mlflow.set_tags({"mlopsctl.registered_model_name": register_as, "mlopsctl.registered_model_version": version})
    return register_as, version


def heatmap_figure(results: Sequence[PointResult]) -> Any:
    """max_depth x n_estimators -> mean CV rmse (failed points left blank)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    depths = sorted({r.max_depth for r in results})
    trees = sorted({r.n_estimators for r in results})
    grid = np.full((len(depths), len(trees)), np.nan)
    for r in results:
        if r.ok:
            grid[depths.index(r.max_depth), trees.index(r.n_estimators)] = r.cv_rmse_mean
    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(trees), 1.2 + 0.7 * len(depths)))
    im = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis_r", aspect="auto")
    ax.set_xticks(range(len(trees)), [str(t) for t in trees])
    ax.set_yticks(range(len(depths)), [str(d) for d in depths])
    ax.set_xlabel("n_estimators")
    ax.set_ylabel("max_depth")
    ax.set_title("mean CV rmse (lower is better)")
    for i in range(len(depths)):
        for j in range(len(trees)):
            text = "failed" if np.isnan(grid[i, j]) else f"{grid[i, j]:.2f}"
            ax.text(j, i, text, ha="center", va="center", color="white", fontsize=8)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return fig


@dataclass
class GridOutcome:
    parent_run_id: str
    best: PointResult
    holdout: dict[str, float]
    child_run_ids: list[str]
    registered: tuple[str | None, str | None]


def log_grid(
    *,
    experiment_id: str,
    dag_id: str,
    dag_run_id: str,
    try_number: int | None,
    engine: str,
    results: Sequence[PointResult],
    cv: int,
    common_params: dict[str, Any],
    refit: Callable[[PointResult], tuple[Any, dict[str, float]]],
    X_sample: Any,
    holdout_rows: tuple[Any, Any],
    target: str,
    register_as: str | None,
    extra_metrics: dict[str, float] | None = None,
) -> GridOutcome:
    """One parent run + one child per grid point; best point refit (``refit``) and logged on the parent with
``holdout_rows`` (X_test, y_test) as its evaluation split.
    Runs of a crashed earlier try are closed beforehand (`prepare_tracking`).

    The refit runs in a thread while the child runs are logged: it fits in native code without the GIL, and
    the logging mostly waits on the tracking server."""
    import mlflow

    best = choose_best(results)  # raises GridError before anything is logged if every point failed
    with beside(refit, best, name="refit") as fitted, mlflow.start_run(
        experiment_id=experiment_id,
        run_name=f"{dag_id} {dag_run_id}",
        tags=run_tags(dag_id, dag_run_id, "parent", engine, try_number),
    ) as parent:
        mlflow.log_params({**common_params, "cv": cv, "grid_size": len(results)})
        child_ids = []
        for r in results:
            with mlflow.start_run(
                experiment_id=experiment_id,
                run_name=f"max_depth={r.max_depth} n_estimators={r.n_estimators}",
                nested=True,
                tags=run_tags(dag_id, dag_run_id, "child", engine, try_number),
            ) as child:
                child_ids.append(child.info.run_id)
                mlflow.log_params({"max_depth": r.max_depth, "n_estimators": r.n_estimators})
                if r.ok:
                    mlflow.log_metrics(
                        {"cv_rmse_mean": r.cv_rmse_mean, "cv_rmse_std": r.cv_rmse_std, "cv_r2_mean": r.cv_r2_mean}
                    )
                else:
                    mlflow.set_tag("mlopsctl.error", r.error or "unknown error")
            if not r.ok:
                mlflow.MlflowClient().set_terminated(child.info.run_id, status="FAILED")
            if r is best:
                best_child = child.info.run_id
        model, holdout = fitted.result()
        mlflow.set_tag("mlopsctl.best_child_run_id", best_child)
        mlflow.log_params({"best_max_depth": best.max_depth, "best_n_estimators": best.n_estimators})
        mlflow.log_metrics({"best_cv_rmse": best.cv_rmse_mean, **holdout, **(extra_metrics or {})})
        mlflow.log_figure(heatmap_figure(results), "heatmap.png")
        registered = log_model(
            model,
            X_sample,
            register_as,
            parent.info.run_id,
            {"max_depth": best.max_depth, "n_estimators": best.n_estimators, "cv": cv},
            dag_run_id,
            holdout_rows=holdout_rows,
            target=target,
        )
    return GridOutcome(parent.info.run_id, best, holdout, child_ids, registered)


def tracking_uri(args: argparse.Namespace) -> str:
    return args.tracking_uri or os.environ.get("MLOPSCTL_MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
