"""Promotion: gate expressions, judging an evaluation run, and moving an alias with its record on the version.

`mlopsctl promote` triggers the `evaluate_model` pipeline (spark_jobs/evaluate_model.py), which logs one MLflow
run of role ``evaluation`` holding ``candidate_<metric>`` and ``champion_<metric>``; this module reads that run
(`Evaluation`), judges the gates on it (`judge`), and moves the alias (`Promoter`). Aliases have no
compare-and-swap, so the holder is re-read just before the move, and a change since the evaluation is refused.
The record on the promoted version is a set of tags whose keys Unity Catalog accepts (`record_keys`).

Parsing is pure and raises InputError (exit USAGE) before any request; registry calls go through
`mlopsctl.tracking.Tracking`. Nothing here prints.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mlopsctl.errors import ConflictError, InputError, NotFoundError, RejectedError

if TYPE_CHECKING:
    from mlopsctl.tracking import ModelVersion, Tracking

#: the metrics a gate may name -> whether larger is better (the evaluation logs each for both versions)
GATE_METRICS: dict[str, bool] = {"rmse": False, "mae": False, "r2": True}
#: the evaluation run's tags naming what it evaluated; copies of spark_jobs/mlopsctl_jobs/evaluate.py's
#: (tests/unit/test_promote.py pins them)
CANDIDATE_TAG = "mlopsctl.candidate_version"
CHAMPION_TAG = "mlopsctl.champion_version"
#: what Unity Catalog refuses in a tag key (a copy of spark_jobs/mlopsctl_jobs/tracking.py's `uc_tag_key` rule)
_UC_TAG_KEY_FORBIDDEN = re.compile(r"[.,\-=/:]")
UC_TAG_KEY_MAX = 255
#: the longest tag value Unity Catalog takes (the gate summary is cut to it; the evaluation run holds the
#: full numbers)
TAG_VALUE_MAX = 1000
#: the most tags Unity Catalog keeps on one model version
UC_TAGS_PER_VERSION = 50

_GATE_RE = re.compile(r"^\s*([A-Za-z0-9_]+)\s*(<=|>=)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")
_BEAT_RE = re.compile(r"^\s*([A-Za-z0-9_]+)\s*:\s*(\d+\.?\d*|\.\d+)\s*%\s*$")
#: alias names MLflow accepts (letters, digits, _ and -, at most 255), and the ones it keeps for itself
_ALIAS_RE = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
_RESERVED_ALIAS = re.compile(r"^(latest|v\d+)$", re.IGNORECASE)


def uc_tag_key(key: str) -> str:
    """`key` as a tag key Unity Catalog accepts: each of ``. , - = / :`` becomes ``_``, blanks at either end go,
    and it is cut to 255 characters."""
    return _UC_TAG_KEY_FORBIDDEN.sub("_", key.strip())[:UC_TAG_KEY_MAX]


def record_keys(alias: str) -> dict[str, str]:
    """The version tags that record a promotion to `alias`: the previous holder (``mlopsctl_prev_<alias>``), the
    gate results, when, and the evaluation run."""
    return {what: uc_tag_key(f"mlopsctl_{what}_{alias}") for what in ("prev", "gates", "promoted_at", "eval_run")}


#: the value of `record_keys()["prev"]` when the alias had no holder before
NO_HOLDER = "none"


# --- parsing (before any request) --------------------------------------------------------------------


def _metric(name: str, flag: str, text: str) -> str:
    metric = name.lower()
    if metric not in GATE_METRICS:
        raise InputError(f"{flag} {text!r}: {name!r} is not an evaluated metric.",
                         hint=f"The evaluation logs {', '.join(GATE_METRICS)}.")
    return metric


@dataclass(frozen=True)
class Gate:
    """`rmse<=55`: the candidate's metric against a fixed bound (inclusive, as MLflow's thresholds are)."""

    metric: str
    op: str
    bound: float

    @property
    def text(self) -> str:
        return f"{self.metric}{self.op}{self.bound:g}"


@dataclass(frozen=True)
class BeatChampion:
    """`rmse:2%`: the candidate must be better than the alias's holder by at least `percent` of its value."""

    metric: str
    percent: float

    @property
    def text(self) -> str:
        return f"beat-champion {self.metric}:{self.percent:g}%"

    def bound(self, champion: float) -> tuple[str, float]:
        """(op, bound) the candidate must meet: a lower-is-better metric at most the holder's minus the margin,
        a higher-is-better one at least the holder's plus it (the margin is a share of |holder|)."""
        margin = abs(champion) * self.percent / 100
        if GATE_METRICS[self.metric]:
            return ">=", champion + margin
        return "<=", champion - margin


def parse_gate(text: str) -> Gate:
    """'rmse<=55' -> Gate; only <= and >= (inclusive); InputError otherwise."""
    m = _GATE_RE.match(text or "")
    if not m:
        raise InputError(f"--gate {text!r} is not METRIC<=NUMBER or METRIC>=NUMBER.",
                         hint="e.g. --gate 'rmse<=55' --gate 'r2>=0.4' (only <= and >=: the bounds are inclusive).")
    bound = float(m.group(3))
    if not math.isfinite(bound):
        raise InputError(f"--gate {text!r}: the bound must be a finite number.")
    return Gate(_metric(m.group(1), "--gate", text), m.group(2), bound)


def parse_beat(text: str) -> BeatChampion:
    """'rmse:2%' -> BeatChampion; InputError otherwise."""
    m = _BEAT_RE.match(text or "")
    if not m:
        raise InputError(f"--beat-champion {text!r} is not METRIC:PERCENT%.", hint="e.g. --beat-champion rmse:2%")
    return BeatChampion(_metric(m.group(1), "--beat-champion", text), float(m.group(2)))


def check_alias(alias: str) -> str:
    """An alias MLflow and Unity Catalog accept, and not one MLflow reserves (`latest` in any case, `v<N>`)."""
    if _RESERVED_ALIAS.match(alias or ""):
        raise InputError(f"--alias {alias!r} is reserved: MLflow keeps 'latest' (any case) and 'v<N>' for itself.",
                         hint="Choose another name, e.g. --alias champion.")
    if not _ALIAS_RE.match(alias or ""):
        raise InputError(f"--alias {alias!r}: an alias is 1 to 255 letters, digits, '_' or '-'.")
    return alias


def check_version(version: str) -> str:
    if not version.isdigit() or int(version) < 1:
        raise InputError(f"VERSION must be a positive integer, got {version!r}.")
    return str(int(version))


# --- judging ------------------------------------------------------------------------------------------


@dataclass
class Evaluation:
    """What the evaluation run logged: each version's metrics (rmse, mae, r2) and which versions they were."""

    run_id: str
    candidate_version: str
    champion_version: str | None
    candidate: dict[str, float]
    champion: dict[str, float] | None

    @classmethod
    def from_run(cls, run: dict[str, Any]) -> Evaluation:
        """From an evaluation run (`MlflowRun.as_dict()`): metrics ``candidate_rmse``, ``champion_rmse``, ..."""
        metrics, tags = run.get("metrics") or {}, run.get("tags") or {}

        def side(role: str) -> dict[str, float]:
            return {m: float(metrics[f"{role}_{m}"]) for m in GATE_METRICS if f"{role}_{m}" in metrics}

        champion_version = tags.get(CHAMPION_TAG) or None
        return cls(run["run_id"], str(tags.get(CANDIDATE_TAG, "")), champion_version, side("candidate"),
                   side("champion") if champion_version else None)


@dataclass
class GateResult:
    gate: str
    metric: str
    value: float | None
    op: str | None
    bound: float | None
    passed: bool
    note: str = ""


def judge(evaluation: Evaluation, gates: list[Gate], beats: list[BeatChampion]) -> list[GateResult]:
    """Each gate judged on the candidate's metrics; a metric the evaluation did not log fails its gate; a
    --beat-champion passes when the alias has no holder."""
    out: list[GateResult] = []
    for g in gates:
        value = evaluation.candidate.get(g.metric)
        if value is None:
            out.append(GateResult(g.text, g.metric, None, g.op, g.bound, False, "not evaluated"))
            continue
        passed = value <= g.bound if g.op == "<=" else value >= g.bound
        out.append(GateResult(g.text, g.metric, value, g.op, g.bound, passed))
    for b in beats:
        value = evaluation.candidate.get(b.metric)
        if evaluation.champion is None:
            out.append(GateResult(b.text, b.metric, value, None, None, True, "no current holder"))
            continue
        held = evaluation.champion.get(b.metric)
        if value is None or held is None:
            out.append(GateResult(b.text, b.metric, value, None, None, False, "not evaluated"))
            continue
        op, bound = b.bound(held)
        passed = value <= bound if op == "<=" else value >= bound
        out.append(GateResult(b.text, b.metric, value, op, bound, passed, f"holder {held:.4g}"))
    return out


def gates_summary(results: list[GateResult]) -> str:
    """One line for the version tag: 'rmse<=55 pass (51.2); beat-champion rmse:2% pass (no current holder)'."""
    parts = []
    for r in results:
        detail = r.note if r.value is None else (f"{r.value:.4g}" + (f", {r.note}" if r.note else ""))
        parts.append(f"{r.gate} {'pass' if r.passed else 'fail'}" + (f" ({detail})" if detail else ""))
    text = "; ".join(parts) or "no gates"
    return text if len(text) <= TAG_VALUE_MAX else text[: TAG_VALUE_MAX - 3] + "..."


def record_tags(alias: str, previous: str | None, results: list[GateResult], eval_run_id: str,
                now: datetime | None = None) -> dict[str, str]:
    """The tags that record a promotion on the promoted version (`record_keys`)."""
    keys = record_keys(alias)
    when = (now or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds")
    return {keys["prev"]: previous or NO_HOLDER, keys["gates"]: gates_summary(results), keys["promoted_at"]: when,
            keys["eval_run"]: eval_run_id}


# --- the registry side --------------------------------------------------------------------------------


@dataclass
class Plan:
    """What a promotion starts from: the candidate, and the alias's holder read before the evaluation."""

    name: str
    version: str
    alias: str
    holder: str | None
    candidate: ModelVersion | None = None


class Promoter:
    """Registry reads and writes of a promotion, on one `Tracking` (an MLflow server or Unity Catalog)."""

    def __init__(self, tracking: Tracking) -> None:
        self.tracking = tracking

    def holder(self, name: str, alias: str) -> str | None:
        """The version `alias` points at now (None when unset); NotFoundError for an unknown model."""
        return self.tracking.model_aliases(name).get(alias)

    def raw_version(self, name: str, version: str, role: str) -> ModelVersion:
        """A version that takes raw rows; NotFoundError if missing, InputError if it takes cleaned features."""
        return self.tracking.raw_input_version(f"{name}/{version}", action=f"be evaluated (the {role})")

    def plan(self, name: str, version: str, alias: str, *, default_data: bool) -> Plan:
        """Check the candidate and the current holder before any evaluation: both exist and take raw rows, and,
        on the candidate's own held-out rows (`default_data`), the holder needs no column the candidate lacks."""
        candidate = self.raw_version(name, version, "candidate")
        self._check_record_fits(candidate, alias)
        holder = self.holder(name, alias)
        plan = Plan(name, version, alias, holder, candidate)
        if holder is None or holder == version:
            return plan
        self.raw_version(name, holder, alias)
        if default_data:
            missing = self._missing_columns(name, version, holder)
            if missing:
                raise InputError(
                    f"The {alias} (version {holder}) cannot score version {version}'s held-out rows: it needs the "
                    f"column(s) {', '.join(missing)}, which they lack.",
                    hint="Give rows that have both versions' input columns and the target with --eval-data PATH|TABLE.",
                )
        return plan

    def _check_record_fits(self, candidate: ModelVersion, alias: str) -> None:
        """RejectedError when Unity Catalog would refuse the promotion's record: the version's tags and the record
        tags it does not hold yet must stay within UC_TAGS_PER_VERSION. Other registries have no such limit."""
        if not self.tracking.in_unity_catalog:
            return
        new = [key for key in record_keys(alias).values() if key not in candidate.tags]
        if len(candidate.tags) + len(new) <= UC_TAGS_PER_VERSION:
            return
        raise RejectedError(
            f"Version {candidate.version} of {candidate.name} holds {len(candidate.tags)} tags, and recording a "
            f"promotion to {alias!r} adds {len(new)}: Unity Catalog keeps at most {UC_TAGS_PER_VERSION} tags on a "
            "model version. Nothing was evaluated or changed.",
            hint="Delete the record tags of aliases this version no longer needs (mlopsctl_prev_<alias>, "
                 "mlopsctl_gates_<alias>, mlopsctl_promoted_at_<alias>, mlopsctl_eval_run_<alias>), e.g. with "
                 "MlflowClient().delete_model_version_tag(name, version, key), then promote again.",
        )

    def _missing_columns(self, name: str, candidate: str, holder: str) -> list[str]:
        """The holder's input columns the candidate's signature lacks ([] when a signature cannot be read)."""
        have, need = self.tracking.signature(name, candidate), self.tracking.signature(name, holder)
        if not have or not need:
            return []
        names = {c["name"] for c in have["inputs"]}
        return [c["name"] for c in need["inputs"] if c["name"] and c["name"] not in names]

    def move(self, name: str, alias: str, version: str, expected: str | None, tags: dict[str, str]) -> None:
        """Re-read the holder, refuse (ConflictError, exit 7) when it is no longer `expected`, then record `tags`
        on `version` and point the alias at it. The record goes first: a registry that refuses it (a tag limit)
        leaves the alias where it was, and the alias never points at a version without its record."""
        now = self.holder(name, alias)
        if now != expected:
            raise ConflictError(
                f"Alias {alias!r} of {name} moved while version {version} was evaluated: it pointed at "
                f"{_v(expected)}, now at {_v(now)}. Nothing changed.",
                hint="Run promote again to evaluate against the new holder.",
            )
        self.tracking.set_version_tags(name, version, tags)
        self.tracking.set_alias(name, alias, version)

    def rollback_plan(self, name: str, alias: str) -> tuple[str, str]:
        """(current holder, the holder before it, as recorded on the current one); NotFoundError without either."""
        current = self.holder(name, alias)
        if current is None:
            raise NotFoundError(f"Registered model {name!r} has no alias {alias!r}: there is nothing to roll back.")
        key = record_keys(alias)["prev"]
        previous = self.tracking.model_version(name, current).tags.get(key)
        if not previous or previous == NO_HOLDER:
            raise NotFoundError(
                f"Version {current} of {name} ({alias}) has no record of a previous {alias} (version tag {key}).",
                hint=f"Move it by hand with: mlopsctl promote {name} VERSION --alias {alias}",
            )
        self.tracking.model_version(name, previous)  # the recorded version must still exist
        return current, previous


def _v(version: str | None) -> str:
    return f"version {version}" if version else "no version"
