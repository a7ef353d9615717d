"""Rendering from plain data: leaderboard, heatmap (NO_COLOR-safe), run summary, status table."""

from __future__ import annotations

import io

from rich.console import Console

from mlopsctl.render import (
    dags_table,
    fmt_duration,
    heatmap,
    leaderboard,
    link_lines,
    run_summary,
    runs_table,
)

POINTS = [
    {"run_id": "c2", "max_depth": 3, "n_estimators": 20, "cv_rmse_mean": 55.0, "cv_rmse_std": 1.2,
     "cv_r2_mean": 0.41, "status": "ok", "error": None, "rank": 1, "best": True},
    {"run_id": "c1", "max_depth": 3, "n_estimators": 10, "cv_rmse_mean": 57.0, "cv_rmse_std": 1.5,
     "cv_r2_mean": 0.4, "status": "ok", "error": None, "rank": 2, "best": False},
    {"run_id": "c4", "max_depth": 5, "n_estimators": 10, "cv_rmse_mean": 60.0, "cv_rmse_std": 2.0,
     "cv_r2_mean": 0.3, "status": "ok", "error": None, "rank": 3, "best": False},
    {"run_id": "c3", "max_depth": 5, "n_estimators": 20, "cv_rmse_mean": None, "cv_rmse_std": None,
     "cv_r2_mean": None, "status": "failed", "error": "ValueError: boom", "rank": None, "best": False},
]


def text(renderable, color: bool = False) -> str:
    buf = io.StringIO()
    Console(file=buf, width=120, no_color=not color, force_terminal=color, color_system="truecolor" if color else None
            ).print(renderable)
    return buf.getvalue()


def test_leaderboard_has_one_row_per_point_ranked_with_best_and_failed() -> None:
    out = text(leaderboard(POINTS))
    rows = [line for line in out.splitlines() if "│" in line and any(ch.isdigit() for ch in line)]
    assert len(rows) == 4
    assert "55.0000 ± 1.2000" in rows[0] and "best" in rows[0] and rows[0].split("│")[1].strip() == "1"
    assert "failed: ValueError: boom" in rows[3] and rows[3].split("│")[1].strip() == "-"


def test_heatmap_is_depth_by_trees_with_numbers_and_degrades_without_colour() -> None:
    plain = text(heatmap(POINTS))
    lines = plain.splitlines()
    header = next(line for line in lines if "depth" in line and "trees" in line)
    assert header.index("10") < header.index("20")
    row3 = next(line for line in lines if line.split("│")[1:2] and line.split("│")[1].strip() == "3")
    row5 = next(line for line in lines if line.split("│")[1:2] and line.split("│")[1].strip() == "5")
    assert "57.000" in row3 and "55.000 ★" in row3
    assert "60.000" in row5 and "fail" in row5
    assert "\x1b[" not in plain  # NO_COLOR: no escape codes, still readable
    coloured = text(heatmap(POINTS), color=True)
    assert "\x1b[" in coloured


def test_run_summary_shows_metrics_registered_model_and_links() -> None:
    doc = {
        "pipeline": "build-model", "dag_run_id": "r1", "state": "success", "duration_s": 12.5,
        "mlflow": {"run": {"run_id": "ef61", "run_name": "build_model-r1", "params": {"max_depth": "80"},
                           "metrics": {"rmse": 53.1, "mae": 43.2, "r2": 0.45},
                           "registered_model": {"name": "rf", "version": "3"}}},
        "links": {"airflow": "http://a/dags/build_model/runs/r1", "mlflow": "http://m/#/experiments/1/runs/ef61"},
    }
    out = text(run_summary(doc))
    for needle in ("build-model", "r1", "success", "12.5s", "ef61", "53.1000", "43.2000", "0.4500", "rf version 3"):
        assert needle in out, needle
    assert link_lines(doc) == ["Airflow: http://a/dags/build_model/runs/r1", "MLflow: http://m/#/experiments/1/runs/ef61"]


def test_runs_table_and_durations() -> None:
    out = text(runs_table([{"pipeline": "grid-search", "dag_run_id": "g1", "state": "failed",
                            "start_date": "2026-11-24T03:00:00+00:00", "duration_s": 75, "metric": "best_cv_rmse",
                            "metric_value": 55.0}]))
    assert "grid-search" in out and "g1" in out and "failed" in out and "1m15s" in out and "best_cv_rmse 55.000" in out
    assert "11-24 03:00:00" in out
    assert "(no runs yet)" in text(runs_table([]))
    assert fmt_duration(None) == "-" and fmt_duration(3.21) == "3.2s" and fmt_duration(3700) == "1h01m"


def test_dags_table_marks_unloaded_pipelines() -> None:
    out = text(dags_table([
        {"pipeline": "build-model", "dag_id": "build_model", "loaded": True, "is_paused": False,
         "params": {"max_depth": 80}, "last_run": {"state": "success", "start_date": None}},
        {"pipeline": "grid-search", "dag_id": "grid_search", "loaded": False, "params": {}},
    ]))
    assert "max_depth=80" in out and "not loaded" in out and "success" in out
