"""MLflow reads returning plain data (no rendering here).

The MLflow run(s) of an Airflow run are found by the tags the pipelines set
(`airflow.dag_id` + `airflow.dag_run_id`), never by "latest run in the experiment".

- http(s) tracking URIs: httpx against MLflow's REST API (fast; mlflow is not imported).
- `databricks` URIs: `mlflow.MlflowClient`, imported lazily.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from mlopsctl.errors import MlopsctlError, NotFoundError, UnreachableError

DEFAULT_EXPERIMENT_PREFIX = "/mlopsctl"
_SEARCH_PAGE = 1000


class TrackingError(MlopsctlError):
    """MLflow answered with an error we cannot work around."""


@dataclass
class MlflowRun:
    run_id: str
    run_name: str | None
    experiment_id: str
    status: str
    start_time: int | None = None  # epoch ms
    end_time: int | None = None
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def role(self) -> str | None:
        return self.tags.get("mlopsctl.role")

    @property
    def parent_run_id(self) -> str | None:
        return self.tags.get("mlflow.parentRunId")

    @property
    def registered_model(self) -> dict[str, str] | None:
        name = self.tags.get("mlopsctl.registered_model_name")
        if not name:
            return None
        return {"name": name, "version": self.tags.get("mlopsctl.registered_model_version")}

    def as_dict(self, *, all_tags: bool = False) -> dict[str, Any]:
        data = asdict(self)
        if not all_tags:
            data["tags"] = {k: v for k, v in self.tags.items() if k.startswith(("mlopsctl.", "airflow."))}
        data["registered_model"] = self.registered_model
        return data


def run_from_rest(payload: dict[str, Any]) -> MlflowRun:
    """Build from one element of `runs/search`'s `runs` (REST shape: lists of {key, value})."""
    info = payload.get("info", {})
    data = payload.get("data", {}) or {}
    return MlflowRun(
        run_id=info.get("run_id") or info.get("run_uuid"),
        run_name=info.get("run_name"),
        experiment_id=str(info.get("experiment_id")),
        status=info.get("status", "UNKNOWN"),
        start_time=_int_or_none(info.get("start_time")),
        end_time=_int_or_none(info.get("end_time")),
        params={p["key"]: p.get("value") for p in data.get("params", []) or []},
        metrics={m["key"]: m.get("value") for m in data.get("metrics", []) or []},
        tags={t["key"]: t.get("value") for t in data.get("tags", []) or []},
    )


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def airflow_run_filter(dag_id: str, dag_run_id: str | None = None, role: str | None = None) -> str:
    parts = [f"tags.`airflow.dag_id` = {_quote(dag_id)}"]
    if dag_run_id is not None:
        parts.append(f"tags.`airflow.dag_run_id` = {_quote(dag_run_id)}")
    if role is not None:
        parts.append(f"tags.`mlopsctl.role` = {_quote(role)}")
    return " and ".join(parts)


def grid_points(parent: MlflowRun | None, children: list[MlflowRun]) -> list[dict[str, Any]]:
    """One dict per grid point (child run), ranked by cv_rmse_mean (failed points last, unranked)."""
    best_id = parent.tags.get("mlopsctl.best_child_run_id") if parent else None
    pts = []
    for c in children:
        failed = c.status != "FINISHED" or "cv_rmse_mean" not in c.metrics
        pts.append(
            {
                "run_id": c.run_id,
                "max_depth": _num(c.params.get("max_depth")),
                "n_estimators": _num(c.params.get("n_estimators")),
                "cv_rmse_mean": c.metrics.get("cv_rmse_mean"),
                "cv_rmse_std": c.metrics.get("cv_rmse_std"),
                "cv_r2_mean": c.metrics.get("cv_r2_mean"),
                "status": "failed" if failed else "ok",
                "mlflow_status": c.status,
                "error": c.tags.get("mlopsctl.error"),
                "rank": None,
                "best": False,
            }
        )
    ok = sorted((p for p in pts if p["status"] == "ok"), key=lambda p: p["cv_rmse_mean"])
    for i, p in enumerate(ok, start=1):
        p["rank"] = i
    if best_id and any(p["run_id"] == best_id for p in ok):
        for p in ok:
            p["best"] = p["run_id"] == best_id
    elif ok:
        ok[0]["best"] = True
    bad = sorted((p for p in pts if p["status"] != "ok"), key=lambda p: (p["max_depth"] or 0, p["n_estimators"] or 0))
    return ok + bad


#: result kind (pipelines.py) -> how its child runs become points. The enumeration is open: a kind not listed here
#: is read as its headline run alone.
CHILD_READERS: dict[str, Callable[[MlflowRun | None, list[MlflowRun]], list[dict[str, Any]]]] = {
    "parent": grid_points,
}


@dataclass
class RunOutcome:
    """What one Airflow run logged to MLflow: its headline run, its child runs, and the points read from them
    (None for a kind of result without children)."""

    main: MlflowRun | None
    children: list[MlflowRun] = field(default_factory=list)
    points: list[dict[str, Any]] | None = None


def _num(value: Any) -> Any:
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            return float(value)
        except (TypeError, ValueError):
            return value


class Tracking:
    """Read-only MLflow access for mlopsctl."""

    def __init__(
        self,
        tracking_uri: str,
        *,
        experiment_prefix: str | None = None,
        timeout: float = 10.0,
        transport: Any = None,
        verify: bool | str = True,
    ) -> None:
        self.tracking_uri = tracking_uri.rstrip("/")
        self.prefix = (experiment_prefix or DEFAULT_EXPERIMENT_PREFIX).rstrip("/")
        self.timeout = timeout
        self._transport = transport
        self._verify = verify
        self._http = None
        self._mlflow_client = None
        self._exp_cache: dict[str, str | None] = {}

    @property
    def is_http(self) -> bool:
        return self.tracking_uri.startswith(("http://", "https://"))

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    # --- transport ---------------------------------------------------------------------------------
    def _client(self):
        if self._http is None:
            import httpx

            headers = {}
            token = os.environ.get("MLFLOW_TRACKING_TOKEN")
            if token:
                headers["Authorization"] = f"Bearer {token}"
            kwargs: dict[str, Any] = {
                "base_url": self.tracking_uri,
                "timeout": self.timeout,
                "headers": headers,
                "verify": self._verify,
            }
            kwargs["transport"] = self._transport or httpx.HTTPTransport(retries=2)
            self._http = httpx.Client(**kwargs)
        return self._http

    def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any] | None:
        """JSON body of a 2xx; None on RESOURCE_DOES_NOT_EXIST/404; raises otherwise."""
        import httpx

        try:
            resp = self._client().request(method, f"/api/2.0/mlflow/{path}", **kwargs)
        except httpx.TransportError as exc:
            raise UnreachableError(
                f"MLflow at {self.tracking_uri} is not reachable ({type(exc).__name__}).",
                hint="Start it (`mlopsctl dev start`) or set MLOPSCTL_MLFLOW_TRACKING_URI.",
            ) from None
        if resp.status_code == 404:
            return None
        if resp.status_code >= 400:
            try:
                body = resp.json()
            except ValueError:
                body = {}
            if body.get("error_code") == "RESOURCE_DOES_NOT_EXIST":
                return None
            msg = body.get("message") or resp.text[:200]
            raise TrackingError(f"MLflow {path} returned HTTP {resp.status_code}: {msg}")
        return resp.json()

    def _mlflow(self):
        if self._mlflow_client is None:
            try:
                from mlflow import MlflowClient
            except ImportError as exc:  # pragma: no cover - mlflow is a dependency
                raise TrackingError(f"mlflow is needed for tracking URI {self.tracking_uri!r}: {exc}") from None
            self._mlflow_client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)
        return self._mlflow_client

    # --- experiments -------------------------------------------------------------------------------
    def experiment_name(self, dag_id: str) -> str:
        return f"{self.prefix}/{dag_id}"

    def experiment_id(self, dag_id: str) -> str | None:
        """Id of `<prefix>/<dag_id>`; falls back to any experiment whose name ends in `/<dag_id>`."""
        if dag_id in self._exp_cache:
            return self._exp_cache[dag_id]
        exp_id = self._experiment_by_name(self.experiment_name(dag_id))
        if exp_id is None:
            exp_id = self._experiment_by_suffix(dag_id)
        self._exp_cache[dag_id] = exp_id
        return exp_id

    def _experiment_by_name(self, name: str) -> str | None:
        if self.is_http:
            body = self._request("GET", "experiments/get-by-name", params={"experiment_name": name})
            return str(body["experiment"]["experiment_id"]) if body and body.get("experiment") else None
        exp = self._mlflow().get_experiment_by_name(name)
        return str(exp.experiment_id) if exp is not None else None

    def _experiment_by_suffix(self, dag_id: str) -> str | None:
        flt = f"name LIKE {_quote('%/' + dag_id)}"
        if self.is_http:
            body = self._request("POST", "experiments/search", json={"filter": flt, "max_results": 10})
            exps = (body or {}).get("experiments", [])
            return str(exps[0]["experiment_id"]) if exps else None
        exps = self._mlflow().search_experiments(filter_string=flt, max_results=10)
        return str(exps[0].experiment_id) if exps else None

    # --- runs --------------------------------------------------------------------------------------
    def search(
        self, dag_id: str, filter_string: str, *, max_results: int = _SEARCH_PAGE, order_by: list[str] | None = None
    ) -> list[MlflowRun]:
        exp_id = self.experiment_id(dag_id)
        if exp_id is None:
            return []
        order_by = order_by or ["attributes.start_time ASC"]
        if not self.is_http:
            runs = self._mlflow().search_runs(
                [exp_id], filter_string=filter_string, max_results=max_results, order_by=order_by
            )
            return [_run_from_entity(r) for r in runs]
        out: list[MlflowRun] = []
        token = None
        while True:
            body: dict[str, Any] = {
                "experiment_ids": [exp_id],
                "filter": filter_string,
                "max_results": min(max_results - len(out), _SEARCH_PAGE),
                "order_by": order_by,
            }
            if token:
                body["page_token"] = token
            data = self._request("POST", "runs/search", json=body) or {}
            out.extend(run_from_rest(r) for r in data.get("runs", []))
            token = data.get("next_page_token")
            if not token or len(out) >= max_results:
                return out

    def runs_of(self, dag_id: str, dag_run_id: str) -> list[MlflowRun]:
        """All MLflow runs an Airflow run logged (single run, or grid parent + children)."""
        return self.search(dag_id, airflow_run_filter(dag_id, dag_run_id))

    def outcome(self, kind: str, dag_id: str, dag_run_id: str) -> RunOutcome:
        """What the Airflow run logged, read as its pipeline's kind of result: the headline run is the one whose
        `mlopsctl.role` is the kind (else the first top-level run); its children become points when the kind
        has a reader in CHILD_READERS."""
        runs = self.runs_of(dag_id, dag_run_id)
        main = next((r for r in runs if r.role == kind), None) or next((r for r in runs if not r.parent_run_id), None)
        reader = CHILD_READERS.get(kind)
        if reader is None:
            return RunOutcome(main)
        children = [r for r in runs if r.role == "child" or (main and r.parent_run_id == main.run_id)]
        return RunOutcome(main, children, reader(main, children))

    def key_runs(self, dag_id: str, role: str, *, max_results: int = 200) -> dict[str, MlflowRun]:
        """The headline run per Airflow run id for one pipeline: ONE search (for `status`)."""
        runs = self.search(
            dag_id,
            airflow_run_filter(dag_id, role=role),
            max_results=max_results,
            order_by=["attributes.start_time DESC"],
        )
        out: dict[str, MlflowRun] = {}
        for r in runs:
            rid = r.tags.get("airflow.dag_run_id")
            if rid and rid not in out:
                out[rid] = r
        return out

    # --- the model registry (see the section at the end of this module) -----------------------------
    @property
    def registry_uri(self) -> str:
        """Where the registered models are: Unity Catalog for a workspace's tracking, else the tracking server."""
        if self.tracking_uri == "databricks" or self.tracking_uri.startswith("databricks://"):
            return "databricks-uc" + self.tracking_uri[len("databricks"):]
        return self.tracking_uri

    @property
    def in_unity_catalog(self) -> bool:
        """Whether the registered models are in Unity Catalog (its names, tag rules and artifact repository)."""
        return self.registry_uri.startswith("databricks-uc")

    def _client_call(self, call: Callable[[], Any], missing: str | None = None,
                     missing_codes: tuple[str, ...] = ("RESOURCE_DOES_NOT_EXIST",)) -> Any:
        """An MlflowClient call; an error in `missing_codes` becomes NotFoundError(missing), others TrackingError."""
        from mlflow.exceptions import MlflowException

        try:
            return call()
        except MlflowException as exc:
            if exc.error_code in missing_codes and missing is not None:
                raise NotFoundError(missing) from None
            raise TrackingError(f"MLflow registry at {self.registry_uri}: {exc.message}") from None

    def _pages(self, path: str, key: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        token = None
        while True:
            page = {**params, "max_results": _REGISTRY_PAGE, **({"page_token": token} if token else {})}
            body = self._request("GET", path, params=page) or {}
            out.extend(body.get(key, []))
            token = body.get("next_page_token")
            if not token:
                return out

    def _model_names(self) -> list[str]:
        if self.is_http:
            return sorted(m["name"] for m in self._pages("registered-models/search", "registered_models", {}))
        client = self._mlflow()
        models = self._client_call(lambda: list(_all_pages(client.search_registered_models)))
        return sorted(m.name for m in models)

    def model_aliases(self, name: str) -> dict[str, str]:
        """alias -> version of one registered model (its own record: searches may leave aliases out)."""
        missing = f"No registered model {name!r} at {self.registry_uri}."
        if self.is_http:
            body = self._request("GET", "registered-models/get", params={"name": name})
            if body is None:
                raise NotFoundError(missing, hint="List them with: mlopsctl models list")
            aliases = body["registered_model"].get("aliases") or []
            return {a["alias"]: str(a["version"]) for a in aliases}
        client = self._mlflow()
        model = self._client_call(lambda: client.get_registered_model(name), missing)
        return {alias: str(version) for alias, version in (model.aliases or {}).items()}

    def _versions(self, name: str) -> list[ModelVersion]:
        """Every version of a model, from the registry's search (aliases not read: see `model_version`)."""
        if self.is_http:
            found = self._pages("model-versions/search", "model_versions", {"filter": f"name={_quote(name)}"})
            return [version_from_rest(v) for v in found]
        client = self._mlflow()
        flt = f"name={_quote(name)}"
        found = self._client_call(lambda: list(_all_pages(client.search_model_versions, filter_string=flt)))
        return [_version_from_entity(v, searched=True) for v in found]

    def model_version(self, name: str, version: str) -> ModelVersion:
        """One version, read on its own (with its aliases); NotFoundError naming the model or the version."""
        missing = f"No version {version} of registered model {name!r}."
        found: ModelVersion | None = None
        if self.is_http:
            body = self._request("GET", "model-versions/get", params={"name": name, "version": version})
            found = version_from_rest(body["model_version"]) if body else None
        else:
            client = self._mlflow()
            try:
                found = _version_from_entity(self._client_call(lambda: client.get_model_version(name, version), missing))
            except NotFoundError:
                found = None
        if found is None:
            self.model_aliases(name)  # a missing model is its own NotFoundError
            raise NotFoundError(missing, hint=f"List them with: mlopsctl models versions {name}")
        return found

    def version_by_alias(self, name: str, alias: str) -> ModelVersion:
        """The version an alias points at; NotFoundError when the model or the alias does not exist."""
        aliases = self.model_aliases(name)
        missing = f"Registered model {name!r} has no alias {alias!r}."
        hint = (f"Its aliases: {', '.join(f'{a} -> {v}' for a, v in sorted(aliases.items()))}." if aliases
                else "It has no aliases yet.")
        if alias in aliases:
            return self.model_version(name, aliases[alias])
        if self.is_http:
            raise NotFoundError(missing, hint=hint)
        client = self._mlflow()  # the alias's own record, in case the model's left it out
        try:  # an MLflow server's registry says INVALID_PARAMETER_VALUE for an alias it does not have
            mv = self._client_call(lambda: client.get_model_version_by_alias(name, alias), missing,
                                   ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"))
        except NotFoundError:
            raise NotFoundError(missing, hint=hint) from None
        return _version_from_entity(mv)

    def get_run(self, run_id: str) -> MlflowRun | None:
        if self.is_http:
            body = self._request("GET", "runs/get", params={"run_id": run_id})
            return run_from_rest(body["run"]) if body else None
        client = self._mlflow()
        return _run_from_entity(self._client_call(lambda: client.get_run(run_id), f"No MLflow run {run_id}."))

    def _run_or_none(self, run_id: str | None) -> MlflowRun | None:
        if not run_id:
            return None
        try:
            return self.get_run(run_id)
        except NotFoundError:
            return None

    def signature(self, name: str, version: str) -> dict[str, Any] | None:
        """The version's model signature, read from its MLmodel file (None when there is none to read)."""
        if self.is_http:
            body = self._request("GET", "model-versions/get-download-uri", params={"name": name, "version": version})
            uri = (body or {}).get("artifact_uri") or ""
            if not uri.startswith("mlflow-artifacts:"):
                return None  # an artifact store the server does not proxy
            import httpx

            path = uri[len("mlflow-artifacts:"):].strip("/")
            try:
                resp = self._client().get(f"/api/2.0/mlflow-artifacts/artifacts/{path}/MLmodel")
            except httpx.TransportError as exc:
                raise UnreachableError(f"MLflow at {self.tracking_uri} is not reachable ({type(exc).__name__}).") from None
            return signature_of(resp.text) if resp.status_code == 200 else None
        import tempfile
        from pathlib import Path

        client = self._mlflow()
        missing = f"No MLmodel file for {name} version {version}."

        def download(dst: str) -> str:
            if self.in_unity_catalog:  # Unity Catalog's own artifact repository
                from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

                repo = ModelsArtifactRepository(f"models:/{name}/{version}", tracking_uri=self.tracking_uri,
                                                registry_uri=self.registry_uri)
                return repo.download_artifacts("MLmodel", dst_path=dst)
            from mlflow.artifacts import download_artifacts

            uri = client.get_model_version_download_uri(name, version).rstrip("/")
            return download_artifacts(artifact_uri=f"{uri}/MLmodel", dst_path=dst, tracking_uri=self.tracking_uri)

        with tempfile.TemporaryDirectory() as tmp:
            return signature_of(Path(self._client_call(lambda: download(tmp), missing)).read_text(encoding="utf-8"))

    def registered_models(self) -> list[dict[str, Any]]:
        """Each registered model: its aliases (alias -> version), latest version and number of versions."""
        out = []
        for name in self._model_names():
            numbers = [int(v.version) for v in self._versions(name)]
            out.append({"name": name, "aliases": self.model_aliases(name),
                        "latest_version": str(max(numbers)) if numbers else None, "versions": len(numbers)})
        return out

    def version_rows(self, name: str, *, sort: str = "created", limit: int | None = None) -> list[dict[str, Any]]:
        """A model's versions with their run's pipeline, data and metrics, sorted here (VERSION_SORTS; the
        registry cannot order by metric), the first `limit`; aliases read per version."""
        self.model_aliases(name)  # NotFoundError for an unknown model, not an empty list
        versions = sorted(self._versions(name), key=lambda v: int(v.version), reverse=True)
        if sort == "created":  # only the rows shown need their run
            versions = sorted(versions, key=lambda v: v.created or 0, reverse=True)[:limit]
        rows = sort_versions([self._version_row(v, self._run_or_none(v.run_id)) for v in versions], sort)[:limit]
        for row in rows:
            row["aliases"] = self.model_version(name, row["version"]).aliases
        return rows

    @staticmethod
    def _version_row(mv: ModelVersion, run: MlflowRun | None) -> dict[str, Any]:
        from mlopsctl.pipelines import pipeline_for_dag

        dag_id = run.tags.get("mlopsctl.pipeline") if run else None
        known = pipeline_for_dag(dag_id) if dag_id else None
        metrics = run.metrics if run else {}
        return {
            "version": mv.version, "aliases": mv.aliases, "run_id": mv.run_id,
            "pipeline": known.name if known else dag_id, "data": run.params.get("data") if run else None,
            "rmse": metrics.get("rmse"), "r2": metrics.get("r2"), "mae": metrics.get("mae"),
            "created": _iso_ms(mv.created), "status": mv.status,
        }

    def describe_version(self, ref: str, ui_base: str | None = None) -> dict[str, Any]:
        """`NAME@ALIAS` or `NAME/VERSION` resolved: the version, a link to its run, its signature, the run's
        params and metrics, and its promotion record (the version tags starting PROMOTION_TAG_PREFIX)."""
        name, version, alias = parse_model_ref(ref)
        mv = self.version_by_alias(name, alias) if alias else self.model_version(name, version or "")
        run = self._run_or_none(mv.run_id)
        row = self._version_row(mv, run)
        return {
            "name": mv.name or name, "ref": ref, "alias": alias, **row, "aliases": mv.aliases, "source": mv.source,
            "run_url": self.run_url(run, ui_base) if run else None,
            "signature": self.signature(name, mv.version),
            "params": run.params if run else {}, "metrics": run.metrics if run else {},
            "promotion": {k: v for k, v in sorted(mv.tags.items()) if k.startswith(PROMOTION_TAG_PREFIX)},
            "tags": mv.tags,
        }

    # --- links -------------------------------------------------------------------------------------
    def run_url(self, run: MlflowRun, ui_base: str | None = None) -> str | None:
        base = (ui_base or "").rstrip("/")
        if not base.startswith(("http://", "https://")):
            if self.is_http:
                base = self.tracking_uri
            elif os.environ.get("DATABRICKS_HOST"):
                host = os.environ["DATABRICKS_HOST"].rstrip("/")
                host = host if host.startswith("http") else f"https://{host}"
                return f"{host}/ml/experiments/{run.experiment_id}/runs/{run.run_id}"
            else:
                return None
        return f"{base}/#/experiments/{run.experiment_id}/runs/{run.run_id}"

    # --- registry writes (promote) -----------------------------------------------------------------
    def set_alias(self, name: str, alias: str, version: str) -> None:
        """Point `alias` of model `name` at `version` (created, or moved from wherever it pointed)."""
        missing = f"No version {version} of registered model {name!r}."
        if self.is_http:
            body = {"name": name, "alias": alias, "version": str(version)}
            if self._request("POST", "registered-models/alias", json=body) is None:
                raise NotFoundError(missing)
            return
        client = self._mlflow()
        self._client_call(lambda: client.set_registered_model_alias(name, alias, str(version)), missing)

    def set_version_tags(self, name: str, version: str, tags: dict[str, str]) -> None:
        """Set each tag on one model version (keys must suit Unity Catalog: see `uc_tag_key`)."""
        missing = f"No version {version} of registered model {name!r}."
        client = None if self.is_http else self._mlflow()
        for key, value in tags.items():
            if client is None:
                body = {"name": name, "version": str(version), "key": key, "value": str(value)}
                if self._request("POST", "model-versions/set-tag", json=body) is None:
                    raise NotFoundError(missing)
            else:
                self._client_call(lambda k=key, v=value: client.set_model_version_tag(name, str(version), k, str(v)),
                                  missing)

    # --- versions that take raw rows (promote, score) ------------------------------------------------
    def raw_input_version(self, ref: str, *, action: str = "score a file as it comes") -> ModelVersion:
        """`NAME@ALIAS` or `NAME/VERSION` resolved to its version, which must take raw rows (the version tag
        INPUT_TAG = INPUT_RAW): NotFoundError for an unknown model, version or alias, InputError naming
        `action` for a version registered before models took raw rows."""
        from mlopsctl.errors import InputError

        name, version, alias = parse_model_ref(ref)
        mv = self.version_by_alias(name, alias) if alias else self.model_version(name, version or "")
        if mv.tags.get(INPUT_TAG) != INPUT_RAW:
            raise InputError(
                f"{name} version {mv.version} takes cleaned features, not raw rows: it was registered before models "
                f"took rows as they come (no version tag {INPUT_TAG}={INPUT_RAW}), so it cannot {action}.",
                hint="Train a new version (`mlopsctl run build-model ...`) and use that one.",
            )
        return mv


def _run_from_entity(run: Any) -> MlflowRun:
    """From an mlflow.entities.Run (databricks path)."""
    info, data = run.info, run.data
    return MlflowRun(
        run_id=info.run_id,
        run_name=getattr(info, "run_name", None),
        experiment_id=str(info.experiment_id),
        status=str(info.status),
        start_time=info.start_time,
        end_time=info.end_time,
        params=dict(data.params),
        metrics=dict(data.metrics),
        tags=dict(data.tags),
    )


# --- the model registry ---------------------------------------------------------------------------------
# The same reads against an MLflow server (REST, through httpx) and a Databricks workspace (`mlflow.MlflowClient`,
# registry `databricks-uc`, three-part names). Unity Catalog's searches leave aliases out and cannot order or
# filter by metric, so aliases are read per model / per version and versions are sorted here.

#: `models versions --sort` keys -> whether larger is better (created: newest first)
VERSION_SORTS: dict[str, bool] = {"created": True, "rmse": False, "mae": False, "r2": True}
#: version tags that hold a promotion record start with this (Unity Catalog tag keys allow no dots)
PROMOTION_TAG_PREFIX = "mlopsctl_"
#: the version tag of a model that takes raw rows (INPUT_TAG = INPUT_RAW), the jobs' own copy being
#: mlopsctl_jobs/tracking.py's (tests/unit/test_score_cli.py pins the two)
INPUT_TAG = "mlopsctl_input"
INPUT_RAW = "raw"

_REGISTRY_PAGE = 1000


@dataclass
class ModelVersion:
    """One registered model version (plain data; `created` in epoch ms)."""

    name: str
    version: str
    run_id: str | None = None
    created: int | None = None
    status: str | None = None
    source: str | None = None
    aliases: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)


def version_from_rest(payload: dict[str, Any]) -> ModelVersion:
    aliases = payload.get("aliases") or []
    return ModelVersion(
        name=payload.get("name", ""),
        version=str(payload.get("version")),
        run_id=payload.get("run_id") or None,
        created=_int_or_none(payload.get("creation_timestamp")),
        status=payload.get("status"),
        source=payload.get("source"),
        aliases=sorted(a if isinstance(a, str) else a.get("alias", "") for a in aliases),
        tags={t["key"]: t.get("value") for t in payload.get("tags", []) or []},
    )


def _version_from_entity(mv: Any, *, searched: bool = False) -> ModelVersion:
    """From an mlflow ModelVersion. A `searched` one (Unity Catalog's ModelVersionSearch) has no aliases or tags
    to read: its `aliases`/`tags` raise, telling to get the version on its own."""
    return ModelVersion(
        name=mv.name, version=str(mv.version), run_id=mv.run_id or None, created=mv.creation_timestamp,
        status=str(mv.status) if mv.status is not None else None, source=mv.source,
        aliases=[] if searched else sorted(mv.aliases or []), tags={} if searched else dict(mv.tags or {}),
    )


def parse_model_ref(ref: str) -> tuple[str, str | None, str | None]:
    """'NAME@ALIAS' -> (name, None, alias); 'NAME/VERSION' -> (name, version, None); else InputError."""
    from mlopsctl.errors import InputError

    name, sep, alias = ref.rpartition("@")
    if sep:
        if not name or not alias:
            raise InputError(f"{ref!r} names no alias.", hint="Give NAME@ALIAS, e.g. my-model@champion.")
        return name, None, alias
    name, sep, version = ref.rpartition("/")
    if not sep:
        raise InputError(f"{ref!r} names no version or alias.",
                         hint="Give NAME@ALIAS or NAME/VERSION, e.g. my-model@champion or my-model/3.")
    if not name or not version.isdigit() or int(version) < 1:
        raise InputError(f"{ref!r}: the version must be a positive integer.", hint="e.g. my-model/3")
    return name, version, None


def sort_versions(rows: list[dict[str, Any]], sort: str) -> list[dict[str, Any]]:
    """Rows sorted by `sort` (VERSION_SORTS): created newest first, rmse/mae ascending, r2 descending; ties and
    the rows without the metric (last) newest version first."""
    newest_first = sorted(rows, key=lambda r: int(r["version"]), reverse=True)
    have = [r for r in newest_first if r.get(sort) is not None]
    have.sort(key=lambda r: r[sort], reverse=VERSION_SORTS[sort])  # stable: ties stay newest first
    return have + [r for r in newest_first if r.get(sort) is None]


def signature_of(mlmodel_text: str) -> dict[str, Any] | None:
    """The signature of an MLmodel file: {inputs: [{name, type}], outputs: [...]} (None when it has none)."""
    import yaml

    meta = yaml.safe_load(mlmodel_text) or {}
    signature = meta.get("signature") if isinstance(meta, dict) else None
    if not isinstance(signature, dict):
        return None
    out: dict[str, Any] = {}
    for part in ("inputs", "outputs"):
        raw = signature.get(part)
        specs = json.loads(raw) if isinstance(raw, str) else raw or []
        out[part] = [{"name": s.get("name"), "type": s.get("type")} for s in specs]
    return out


def _all_pages(search: Callable[..., Any], **kwargs: Any) -> Any:
    """Every item of an MlflowClient search that pages (PagedList with a token)."""
    token = None
    while True:
        page = search(max_results=_REGISTRY_PAGE, page_token=token, **kwargs)
        yield from page
        token = page.token
        if not token:
            return


def _iso_ms(ms: int | None) -> str | None:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).isoformat() if ms else None
