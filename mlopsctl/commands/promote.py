"""`mlopsctl promote NAME VERSION`: evaluate the version beside the alias's holder (the evaluate_model pipeline),
judge the gates, then move the alias and record the promotion on the version; `--rollback` moves it one step back.

The judging and the registry writes are `mlopsctl.promotion`'s; this module parses flags, follows the run and
renders.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mlopsctl.commands._common import AutoUnpauseOpt, JsonOpt, TimeoutOpt, app_context, check_timeout, escape
from mlopsctl.errors import GateFailedError, InputError

if TYPE_CHECKING:
    from mlopsctl.appcontext import AppContext
    from mlopsctl.pipelines import Pipeline
    from mlopsctl.promotion import Evaluation, GateResult
    from mlopsctl.runs import RunResult

PIPELINE = "evaluate-model"


def promote(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Registered model name (catalog.schema.model on Databricks).")],
    version: Annotated[str | None, typer.Argument(help="The version to promote (not with --rollback).")] = None,
    alias: Annotated[str, typer.Option("--alias", help="The alias to move.")] = "champion",
    gate: Annotated[list[str] | None, typer.Option(
        "--gate", help="METRIC<=N or METRIC>=N on the candidate's rmse, mae or r2 (inclusive); repeatable.",
        metavar="EXPR")] = None,
    beat_champion: Annotated[list[str] | None, typer.Option(
        "--beat-champion", help="METRIC:P%: beat the alias's holder by P% of its value (passes when there is none).",
        metavar="METRIC:P%")] = None,
    eval_data: Annotated[str | None, typer.Option(
        "--eval-data", help="Rows to evaluate on: CSV/Parquet file, URI, /Volumes/... path or table with the input "
        "columns and the target (default: the held-out rows the candidate's training run logged).",
        metavar="PATH|TABLE")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Evaluate and judge, move nothing.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before moving the alias.")] = False,
    rollback: Annotated[bool, typer.Option(
        "--rollback", help="Move the alias back to the holder recorded before its current one.")] = False,
    timeout: TimeoutOpt = None,
    auto_unpause: AutoUnpauseOpt = True,
    json_output: JsonOpt = False,
) -> None:
    """Promote a model version to an alias behind gates: evaluate it beside the alias's holder on the same rows,
    print both sets of metrics and each gate, then move the alias and record the promotion on the version.

    Exit 13 when a gate fails (nothing changed), 7 when the alias moved during the evaluation.

    Example: mlopsctl promote mlopsctl-random-forest 3 --gate 'rmse<=55' --beat-champion rmse:2%

    Roll back: mlopsctl promote mlopsctl-random-forest --alias champion --rollback
    """
    from mlopsctl.promotion import check_alias, check_version, parse_beat, parse_gate

    check_alias(alias)
    if rollback:
        if version is not None or gate or beat_champion or eval_data:
            raise InputError("--rollback takes NAME and --alias only (no VERSION, --gate, --beat-champion or "
                             "--eval-data).")
        _rollback(app_context(ctx, json_output), name, alias, dry_run=dry_run, yes=yes)
        return
    if version is None:
        raise InputError("Missing VERSION.", hint="e.g. mlopsctl promote NAME 3, or NAME --rollback.")
    version = check_version(version)
    gates = [parse_gate(g) for g in gate or []]
    beats = [parse_beat(b) for b in beat_champion or []]
    check_timeout(timeout)
    from mlopsctl.pipelines import build_conf, get_pipeline

    pipeline = get_pipeline(PIPELINE)
    conf = build_conf(pipeline, model_name=name, model_version=int(version), alias=alias, data=eval_data)
    actx = app_context(ctx, json_output)
    console = actx.console
    from mlopsctl.promotion import Promoter, judge, record_tags

    tracking = actx.tracking()
    try:
        promoter = Promoter(tracking)
        plan = promoter.plan(name, version, alias, default_data=eval_data is None)
        if plan.holder == version:
            _done(actx, {"name": name, "version": version, "alias": alias, "promoted": False, "previous": version},
                  f"Version {version} of {name} already holds {alias}; nothing to do.")
            return
        result = _evaluate(actx, pipeline, conf, timeout=timeout, auto_unpause=auto_unpause)
        from mlopsctl.promotion import Evaluation

        evaluation = Evaluation.from_run(result.mlflow["run"])
        results = judge(evaluation, gates, beats)
        failed = [r for r in results if not r.passed]
        doc: dict[str, Any] = {
            "name": name, "version": version, "alias": alias, "previous": evaluation.champion_version,
            "evaluation": {"run_id": evaluation.run_id, "dag_run_id": result.dag_run_id,
                           "candidate": evaluation.candidate, "champion": evaluation.champion,
                           "champion_version": evaluation.champion_version, "link": result.links.mlflow},
            "gates": [r.__dict__ for r in results], "dry_run": dry_run, "promoted": False,
        }
        if not console.json_mode:
            _print_judgement(actx, name, alias, evaluation, results)
        if failed:
            if console.json_mode:
                console.json(doc)
            raise GateFailedError(
                f"{len(failed)} of {len(results)} gate(s) failed ({', '.join(r.gate for r in failed)}): "
                f"{alias} stays {_held(evaluation.champion_version)}. Nothing changed.")
        if dry_run:
            _done(actx, doc, f"Dry run: would move {alias} of {name} to version {version} "
                             f"({_held(evaluation.champion_version)} now). Nothing changed.")
            return
        _confirm(actx, f"Move {alias} of {name} from {_held(evaluation.champion_version)} to version {version}?", yes)
        tags = record_tags(alias, evaluation.champion_version, results, evaluation.run_id)
        promoter.move(name, alias, version, evaluation.champion_version, tags)
        doc.update(promoted=True, tags=tags)
        _done(actx, doc, f"Promoted: {alias} of {name} -> version {version} (was {_held(evaluation.champion_version)}).")
    finally:
        tracking.close()


def _rollback(actx: AppContext, name: str, alias: str, *, dry_run: bool, yes: bool) -> None:
    from mlopsctl.promotion import Promoter

    tracking = actx.tracking()
    try:
        promoter = Promoter(tracking)
        current, previous = promoter.rollback_plan(name, alias)
        doc = {"name": name, "alias": alias, "rollback": True, "from": current, "to": previous, "dry_run": dry_run,
               "promoted": False}
        if dry_run:
            _done(actx, doc, f"Dry run: would move {alias} of {name} back from version {current} to version "
                             f"{previous}. Nothing changed.")
            return
        _confirm(actx, f"Move {alias} of {name} back from version {current} to version {previous}?", yes)
        promoter.move(name, alias, previous, current, {})
        doc["promoted"] = True
        _done(actx, doc, f"Rolled back: {alias} of {name} -> version {previous} (was version {current}).")
    finally:
        tracking.close()


def _evaluate(actx: AppContext, pipeline: Pipeline, conf: dict[str, Any], *, timeout: float | None,
              auto_unpause: bool) -> RunResult:
    """Trigger the evaluation and follow it like `run` does (a failed run prints its log tail and exits); its
    result, which must name the evaluation run the gates are judged on."""
    from mlopsctl.commands._common import trigger_and_follow
    from mlopsctl.tracking import TrackingError

    result = trigger_and_follow(actx, pipeline, conf, timeout=timeout, auto_unpause=auto_unpause,
                                announce="Evaluating in")
    if not (result.mlflow or {}).get("run"):
        raise TrackingError(
            f"Run {result.dag_run_id} of {pipeline.dag_id} succeeded, but its evaluation run could not be read"
            + (f": {'; '.join(result.warnings)}" if result.warnings else "."),
            hint="Nothing changed; run promote again.",
        )
    return result


def _print_judgement(actx: AppContext, name: str, alias: str, evaluation: Evaluation,
                     results: list[GateResult]) -> None:
    from rich.table import Table

    from mlopsctl.promotion import GATE_METRICS
    from mlopsctl.render import fmt_metric

    console = actx.console
    held = evaluation.champion_version
    table = Table(title=f"{escape(name)}: version {evaluation.candidate_version} vs {escape(alias)} "
                        f"({_held(held)})", title_justify="left")
    table.add_column("metric")
    table.add_column(f"candidate v{evaluation.candidate_version}", justify="right")
    table.add_column(f"{alias} v{held}" if held else f"{alias} (none)", justify="right")
    table.add_column("better", justify="left")
    for metric, larger_better in GATE_METRICS.items():
        cand = evaluation.candidate.get(metric)
        champ = (evaluation.champion or {}).get(metric)
        better = "-"
        if cand is not None and champ is not None:
            better = "candidate" if (cand > champ if larger_better else cand < champ) else (
                "same" if cand == champ else escape(alias))
        table.add_row(metric, fmt_metric(cand), fmt_metric(champ), better)
    console.print(table)
    if not results:
        console.print("Gates: none given")
    for r in results:
        verdict = "[green]pass[/green]" if r.passed else "[bold red]FAIL[/bold red]"
        if r.value is None:
            detail = r.note
        elif r.bound is None:
            detail = f"{r.metric} = {r.value:.4f}" + (f" ({r.note})" if r.note else "")
        else:
            detail = f"{r.metric} = {r.value:.4f} {r.op} {r.bound:.4f}" + (f" ({r.note})" if r.note else "")
        console.print(f"  {verdict}  {escape(r.gate)}: {escape(detail)}", soft_wrap=True)


def _confirm(actx: AppContext, question: str, yes: bool) -> None:
    """Ask on a terminal unless --yes; a no aborts (nothing changed)."""
    if yes or not sys.stdin.isatty():
        return
    if not typer.confirm(question, default=False, err=True):
        raise typer.Abort()


def _done(actx: AppContext, doc: dict[str, Any], message: str) -> None:
    if actx.console.json_mode:
        actx.console.json(doc)
    else:
        actx.console.print(message, markup=False, soft_wrap=True)


def _held(version: str | None) -> str:
    return f"version {version}" if version else "unset"
