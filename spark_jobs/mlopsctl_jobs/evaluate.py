"""Evaluating a registered model version beside the current holder of an alias (the `evaluate_model` job): both
score the same rows with MLflow's own `mlflow.models.evaluate`, and one MLflow run of role ``evaluation`` holds
both sets of metrics (``candidate_rmse``, ``champion_rmse``, ...), which `mlopsctl promote` judges its gates on.

The rows default to the held-out split the candidate's training run logged (`tracking.EVAL_SPLIT_ARTIFACT`).
A version without the raw-input tag takes cleaned features, not rows as a user has them, and is refused
(`tracking.require_raw_input`); so is a holder that needs columns the rows lack. Both are `DataError`s: a retry
cannot fix them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from mlopsctl_jobs.data import DataError
from mlopsctl_jobs.tracking import (
    EVAL_SPLIT_ARTIFACT,
    EVAL_SPLIT_MAX_ROWS,
    TARGET_TAG,
    require_raw_input,
    target_from_tag,
)

#: MLflow's built-in regressor metrics -> the names the training runs log and the gates use
METRICS = {"root_mean_squared_error": "rmse", "mean_absolute_error": "mae", "r2_score": "r2"}
#: the evaluation run's `mlopsctl.role` (the pipeline's result kind in dags/common/pipelines.json)
ROLE = "evaluation"
#: tags of the evaluation run naming what was evaluated (read by the CLI)
MODEL_TAG = "mlopsctl.model_name"
CANDIDATE_TAG = "mlopsctl.candidate_version"
ALIAS_TAG = "mlopsctl.alias"
CHAMPION_TAG = "mlopsctl.champion_version"
#: alias names MLflow keeps for itself: `latest` in any case, and `v<N>` (a version)
_RESERVED_ALIAS = re.compile(r"^(latest|v\d+)$", re.IGNORECASE)


@dataclass
class Contender:
    """One version to evaluate: its role (candidate or champion), number, URI, input columns and target."""

    role: str
    version: str
    uri: str
    run_id: str | None
    target: str | None
    inputs: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)


def reserved_alias(alias: str) -> bool:
    return bool(_RESERVED_ALIAS.match(alias))


def _version(client: Any, name: str, version: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, version)
    except MlflowException as exc:
        raise DataError(f"version {version} of registered model {name!r} not found: {exc.message}") from None


def _holder(client: Any, name: str, alias: str) -> Any | None:
    """The version `alias` points at, or None when the model has no such alias."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def contender(name: str, mv: Any, role: str) -> Contender:
    """A version that takes raw rows, as a Contender; DataError for one that does not (`require_raw_input`)."""
    require_raw_input(name, mv)
    tags = dict(mv.tags or {})
    return Contender(role, str(mv.version), f"models:/{name}/{mv.version}", mv.run_id or None,
                     target_from_tag(tags.get(TARGET_TAG)))


def resolve(client: Any, name: str, version: str, alias: str) -> tuple[Contender, Contender | None]:
    """The candidate and the alias's current holder (None when the alias is not set, or is the candidate)."""
    if reserved_alias(alias):
        raise DataError(f"alias {alias!r} is reserved by MLflow (latest, v<N>): choose another name")
    candidate = contender(name, _version(client, name, version), "candidate")
    holder = _holder(client, name, alias)
    if holder is None or str(holder.version) == candidate.version:
        return candidate, None
    return candidate, contender(name, holder, "champion")


def input_columns(uri: str) -> list[str]:
    """The columns a version's signature takes."""
    from mlflow.models import get_model_info

    signature = get_model_info(uri).signature
    if signature is None or signature.inputs is None:
        raise DataError(f"{uri} has no input signature: the columns it takes are unknown")
    return list(signature.inputs.input_names())


def load_eval_split(run_id: str | None) -> Any:
    """The held-out rows the training run `run_id` logged, as a pandas DataFrame."""
    import pandas as pd
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    if not run_id:
        raise DataError("the candidate has no training run to read its evaluation split from: give --eval-data")
    try:
        path = download_artifacts(run_id=run_id, artifact_path=EVAL_SPLIT_ARTIFACT)
    except (MlflowException, OSError) as exc:
        raise DataError(f"the candidate's run {run_id} logged no {EVAL_SPLIT_ARTIFACT} ({exc}): give --eval-data") from None
    return pd.read_parquet(path)


def load_eval_data(spark: Any, data: str, na_values: Any = None) -> Any:
    """`--eval-data` (file, URI, volume path or table) read by Spark, at most EVAL_SPLIT_MAX_ROWS rows, as pandas."""
    from mlopsctl_jobs.data import load_source

    return load_source(spark, data, na_values).limit(EVAL_SPLIT_MAX_ROWS).toPandas()


def check_columns(frame: Any, contenders: list[Contender], target: str, where: str, default_data: bool) -> None:
    """Each contender's inputs and the target are columns of `frame`; DataError naming what is missing."""
    have = set(frame.columns)
    if target not in have:
        raise DataError(f"{where} has no column {target!r}, the target the candidate was trained to predict")
    for c in contenders:
        missing = [col for col in c.inputs if col not in have]
        if missing:
            advice = ("; give data that has them with --eval-data" if default_data
                      else "; give data that has every input column of both versions")
            raise DataError(f"the {c.role} (version {c.version}) cannot score {where}: it needs the column(s) "
                            f"{', '.join(missing)}, which the data lacks{advice}")


def evaluate_version(c: Contender, frame: Any, target: str) -> dict[str, float]:
    """`mlflow.models.evaluate` of one version on `frame` (in the active run), its metrics renamed (METRICS)."""
    import mlflow

    result = mlflow.models.evaluate(
        c.uri, data=frame[[*c.inputs, target]], targets=target, model_type="regressor",
        evaluator_config={"log_model_explainability": False},
    )
    return {short: float(result.metrics[long]) for long, short in METRICS.items() if long in result.metrics}


def log_evaluation(experiment_id: str, tags: dict[str, str], params: dict[str, Any], frame: Any, target: str,
                   contenders: list[Contender]) -> str:
    """One evaluation run (`tags` carry its role) with each contender's metrics as ``<role>_<metric>``; each
    contender's `mlflow.models.evaluate` runs in a child run of its own, so their full outputs stay apart."""
    import mlflow

    with mlflow.start_run(experiment_id=experiment_id, run_name=tags.get("airflow.dag_run_id"), tags=tags) as run:
        mlflow.log_params(params)
        for c in contenders:
            child_tags = {**tags, "mlopsctl.role": "child", "mlopsctl.eval_role": c.role}
            with mlflow.start_run(experiment_id=experiment_id, run_name=f"{c.role} version {c.version}",
                                  nested=True, tags=child_tags):
                c.metrics = evaluate_version(c, frame, target)
            mlflow.log_metrics({f"{c.role}_{k}": v for k, v in c.metrics.items()})
        return run.info.run_id
