"""MLflow reads returning plain data (no rendering here).

The MLflow run(s) of an Airflow run are found by the tags the pipelines set
(`airflow.dag_id` + `airflow.dag_run_id`), never by "latest run in the experiment".

- http(s) tracking URIs: httpx against MLflow's REST API (fast; mlflow is not imported).
- `databricks` URIs: `mlflow.MlflowClient`, imported lazily.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from mlopsctl.errors import MlopsctlError, UnreachableError

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
            self._mlflow_client = MlflowClient(tracking_uri=self.tracking_uri)
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
