"""MLflow reads over REST, against httpx.MockTransport serving the shapes a real MLflow 3 server returns."""

from __future__ import annotations

import json

import httpx
import pytest

from mlopsctl.errors import ExitCode, UnreachableError
from mlopsctl.tracking import Tracking, TrackingError, airflow_run_filter, run_from_rest
from tests.fixtures.fakes import BUILD, GRID, RID, FakeMlflow, rest_run


def _tracking(fake) -> Tracking:
    return Tracking("http://127.0.0.1:5000", transport=httpx.MockTransport(fake))


def test_filter_quotes_dotted_tag_keys_and_values() -> None:
    assert airflow_run_filter("build_model", "a'b", role="single") == (
        "tags.`airflow.dag_id` = 'build_model' and tags.`airflow.dag_run_id` = 'a\\'b' "
        "and tags.`mlopsctl.role` = 'single'"
    )


def test_run_from_rest_reads_params_metrics_tags_and_registered_model() -> None:
    run = run_from_rest(BUILD)
    assert run.run_id == "ef61" and run.experiment_id == "1" and run.status == "FINISHED"
    assert run.metrics == {"rmse": 53.1, "mae": 43.2, "r2": 0.45}
    assert run.params["max_depth"] == "80"
    assert run.registered_model == {"name": "mlopsctl-random-forest", "version": "3"}
    assert "mlflow.user" not in run.as_dict()["tags"] and "mlflow.user" in run.as_dict(all_tags=True)["tags"]


def test_main_run_found_by_airflow_tags_not_latest() -> None:
    other = rest_run("zz", "later-run", "1", {"airflow.dag_id": "build_model", "airflow.dag_run_id": "other",
                                               "mlopsctl.role": "single"}, metrics={"rmse": 1.0}, start=1795489999999)
    fake = FakeMlflow([BUILD, other])
    t = _tracking(fake)
    run = t.outcome("single", "build_model", RID).main
    assert run is not None and run.run_id == "ef61" and run.metrics["rmse"] == 53.1
    body = json.loads(fake.requests[-1].content)
    assert body["experiment_ids"] == ["1"] and f"'{RID}'" in body["filter"]
    assert t.run_url(run) == "http://127.0.0.1:5000/#/experiments/1/runs/ef61"


def test_unknown_run_and_unknown_experiment_give_none() -> None:
    t = _tracking(FakeMlflow([BUILD]))
    assert t.outcome("single", "build_model", "nope").main is None
    assert t.outcome("parent", "grid_search_spark", RID).main is None


def test_grid_points_ranked_best_marked_failed_last() -> None:
    grid = _tracking(FakeMlflow(GRID)).outcome("parent", "grid_search", "g1")
    assert grid.main.run_id == "par" and sorted(c.run_id for c in grid.children) == ["c1", "c2", "c3"]
    pts = grid.points
    assert [p["run_id"] for p in pts] == ["c2", "c1", "c3"]
    assert [p["rank"] for p in pts] == [1, 2, None]
    assert pts[0]["best"] and not pts[1]["best"]
    assert pts[2]["status"] == "failed" and pts[2]["error"] == "ValueError: boom"
    assert (pts[0]["max_depth"], pts[0]["n_estimators"], pts[0]["cv_rmse_std"]) == (3, 20, 1.2)


def test_a_kind_without_a_child_reader_is_read_as_its_headline_run() -> None:
    """The result kinds are an open enumeration: a kind tracking.py has no reader for reads its headline run."""
    outcome = _tracking(FakeMlflow(GRID)).outcome("evaluation", "grid_search", "g1")
    assert outcome.main is not None and outcome.main.run_id == "par"  # no run has that role: the top-level run
    assert outcome.points is None and outcome.children == []


def test_search_follows_page_tokens() -> None:
    fake = FakeMlflow(GRID, page_size=1)
    runs = _tracking(fake).runs_of("grid_search", "g1")
    assert [r.run_id for r in runs] == ["par", "c1", "c2", "c3"]
    assert sum(r.url.path.endswith("runs/search") for r in fake.requests) == 4  # one per page


def test_key_runs_is_one_search_per_pipeline() -> None:
    other = rest_run("b2", "x", "1", {"airflow.dag_id": "build_model", "airflow.dag_run_id": "r2",
                                       "mlopsctl.role": "single"}, metrics={"rmse": 2.0})
    fake = FakeMlflow([BUILD, other])
    key = _tracking(fake).key_runs("build_model", "single")
    assert set(key) == {RID, "r2"} and key["r2"].metrics["rmse"] == 2.0
    assert sum(r.url.path.endswith("runs/search") for r in fake.requests) == 1


def test_unreachable_mlflow_raises_unreachable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(UnreachableError) as info:
        _tracking(refuse).outcome("single", "build_model", RID)
    assert info.value.exit_code == ExitCode.UNREACHABLE and "127.0.0.1:5000" in info.value.message


def test_server_error_is_a_tracking_error_with_mlflow_message() -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, json={"error_code": "INTERNAL_ERROR", "message": "db locked"})

    with pytest.raises(TrackingError, match="db locked"):
        _tracking(broken).outcome("single", "build_model", RID)
