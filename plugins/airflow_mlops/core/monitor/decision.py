"""The monitor's decision: outcome, alarms, the retrain and its cool-down, and the reasons in words."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import date
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from airflow_mlops.config import PipelineConfig
    from airflow_mlops.core.monitor.drift import ColumnDrift, DriftResult
    from airflow_mlops.core.monitor.estimate import EstimatedQuality
    from airflow_mlops.core.monitor.prediction import PredictionDrift
    from airflow_mlops.core.monitor.quality import QualityResult

Outcome = Literal["ok", "drift", "quality_drop", "estimated_drop", "stale", "insufficient_data", "no_champion"]


@dataclass(frozen=True)
class ChampionAge:
    """How old the champion's data is on the monitored day, against monitor.retrain.max_age_days."""

    version: str
    trained_through: str
    """Last day of its training window."""
    days: int
    """Days from that day to the monitored day."""
    max_days: int

    @property
    def stale(self) -> bool:
        return self.days >= self.max_days

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "stale": self.stale}


@dataclass(frozen=True)
class Decision:
    """The monitor's verdict: outcome, alarms, whether to retrain, and why (human-readable)."""

    outcome: Outcome
    alarms: list[str]
    retrain: bool
    reasons: list[str]
    retrain_reason: str = ""


def cooldown_blocker(ds: str, previous: Sequence[tuple[str, str]], cooldown_days: int) -> tuple[str, str] | None:
    """The latest earlier retrain (logical date, MLflow run id) within `cooldown_days` days up to `ds`, if any."""
    if cooldown_days <= 0:
        return None
    day = date.fromisoformat(ds)
    hits = []
    for prev_ds, run_id in previous:
        try:
            delta = (day - date.fromisoformat(prev_ds)).days
        except ValueError:
            continue  # a hand-edited tag is not a date: it cannot hold back a retrain
        if 0 <= delta <= cooldown_days:
            hits.append((prev_ds, run_id))
    return max(hits) if hits else None


def fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def column_line(name: str, col: ColumnDrift) -> str:
    return f"{name} {col.method} {fmt(col.score)} (threshold {fmt(col.threshold)})"


def drift_reason(result: DriftResult) -> str:
    """One line on a drift result: which columns drifted, by how much, against which rule."""
    drifted = result.drifted_columns
    detail = "; ".join(column_line(c, col) for c, col in result.columns.items() if col.drifted)
    share = f"{len(drifted)} of {len(result.columns)} columns drifted ({result.share:.0%}"
    if result.weighted_share is not None:
        share += f"; weighted by the champion's importance {result.weighted_share:.0%}"
    share += f", share_threshold {result.share_threshold:.0%})"
    if result.drifted:
        why = f"critical column(s) {', '.join(result.critical_drifted)} drifted; " if result.critical_drifted else ""
        return f"drift: {why}{share}: {detail}"
    return f"no drift: {share}{': ' + detail if detail else ''}; no critical column drifted"


def quality_reason(result: QualityResult) -> str:
    """One line on a quality result, naming the metric, the figures and the rule."""
    direction = "worse" if result.drop > 0 else "better"
    verdict = "quality drop" if result.degraded else "quality ok"
    return (
        f"{verdict}: {result.metric} {result.value:.3f} on {result.rows} matured rows of days "
        f"{result.days[0]}..{result.days[-1]} vs {result.baseline:.3f} on champion v{result.champion_version}'s "
        f"holdout: {direction} by {abs(result.drop):.3f} (max_drop {result.max_drop:g})"
    )


def estimated_reason(result: EstimatedQuality) -> str:
    """One line on the estimated quality: the estimate, its holdout estimate, and the rule."""
    direction = "worse" if result.drop > 0 else "better"
    verdict = "estimated quality drop" if result.degraded else "estimated quality ok"
    return (
        f"{verdict}: {result.metric} estimated {result.value:.3f} from champion v{result.champion_version}'s "
        f"probabilities on {result.rows} unlabelled rows vs {result.baseline:.3f} estimated on its holdout: "
        f"{direction} by {abs(result.drop):.3f} (max_drop {result.max_drop:g})"
    )


def age_reason(age: ChampionAge) -> str:
    """One line on the champion's age: the last day of its data, how long ago, and the rule."""
    head = f"champion v{age.version} trained on data through {age.trained_through}, {age.days} day(s) ago"
    if age.stale:
        return f"stale champion: {head} (max_age_days {age.max_days}): a challenger on fresh data is due"
    return f"champion fresh: {head} (max_age_days {age.max_days})"


def prediction_reason(result: PredictionDrift, alarm: bool) -> str:
    """One line on prediction drift: the outputs that moved, by how much, and whether it counts as an alarm."""
    cols = result.drift.columns
    detail = "; ".join(column_line(c, col) for c, col in cols.items())
    if not result.drifted:
        return f"no prediction drift: {detail}"
    note = "" if alarm else " (reported only: monitor.prediction_drift.alarm is false)"
    return f"prediction drift: the champion's prediction moved: {detail}{note}"


def decide(
    cfg: PipelineConfig,
    drift: DriftResult | None,
    quality: QualityResult | None,
    insufficient: Mapping[str, str],
    *,
    blocker: tuple[str, str] | None,
    train_active: bool,
    notes: Sequence[str] = (),
    prediction: PredictionDrift | None = None,
    estimated: EstimatedQuality | None = None,
    age: ChampionAge | None = None,
) -> Decision:
    """Outcome and retrain from the checks.

    Outcome: quality_drop or drift when that alarm fired (quality first: it is the harm itself), else
    insufficient_data when a check could not be made (`insufficient`: check -> why), else ok. Prediction drift
    is an alarm (outcome drift) only with monitor.prediction_drift.alarm, input drift only with
    monitor.drift.alarm; an estimated drop is the alarm estimated_quality (outcome estimated_drop); a champion
    whose data ends monitor.retrain.max_age_days or more before the day is the alarm age (outcome stale, when
    no other alarm fired: a scheduled challenger, which the gates promote only if it beats the champion). A retrain
    is wanted when an alarm is among retrain.triggers and retrain is enabled, unless a <p>__train run is
    active or an earlier monitor run triggered one within the cool-down (`blocker`: its date and run id).
    """
    reasons: list[str] = []
    alarms: list[str] = []
    why: dict[str, str] = {}  # alarm -> its reason line
    if drift is not None:
        reasons.append(drift_reason(drift))
        if drift.drifted and not cfg.monitor.drift.alarm:
            reasons[-1] += " (reported only: monitor.drift.alarm is false)"
        elif drift.drifted:
            alarms.append("drift")
            why["drift"] = reasons[-1]
        if drift.skipped:
            reasons.append(
                "drift not judged for column(s) " + "; ".join(f"{c}: {why}" for c, why in drift.skipped.items())
            )
    if quality is not None:
        reasons.append(quality_reason(quality))
        if quality.degraded:
            alarms.append("quality")
            why["quality"] = reasons[-1]
    if estimated is not None:
        reasons.append(estimated_reason(estimated))
        if estimated.degraded:
            alarms.append("estimated_quality")
            why["estimated_quality"] = reasons[-1]
    if prediction is not None:
        alarm = cfg.monitor.prediction_drift.alarm
        reasons.append(prediction_reason(prediction, alarm))
        if prediction.drifted and alarm:
            alarms.append("prediction_drift")
            why["prediction_drift"] = reasons[-1]
    if age is not None:
        reasons.append(age_reason(age))
        if age.stale:
            alarms.append("age")
            why["age"] = reasons[-1]
    reasons.extend(f"insufficient data for {check}: {why}" for check, why in insufficient.items())
    reasons.extend(notes)
    if "quality" in alarms:
        outcome: Outcome = "quality_drop"
    elif "estimated_quality" in alarms:
        outcome = "estimated_drop"
    elif any(a != "age" for a in alarms):
        outcome = "drift"
    elif alarms:
        outcome = "stale"
    else:
        outcome = "insufficient_data" if insufficient else "ok"
    retrain_cfg = cfg.monitor.retrain
    wanted = [a for a in alarms if a in retrain_cfg.triggers]
    retrain = False
    if alarms:
        train_dag = cfg.dag_id("train")
        if not retrain_cfg.enabled:
            reasons.append("no retrain: monitor.retrain.enabled is false")
        elif not wanted:
            reasons.append(
                f"no retrain: alarm(s) {', '.join(alarms)} not in monitor.retrain.triggers "
                f"({', '.join(retrain_cfg.triggers) or 'none'})"
            )
        elif train_active:
            reasons.append(f"no retrain: a {train_dag} run is already active")
        elif blocker is not None:
            reasons.append(
                f"no retrain: cool-down: the monitor run of {blocker[0]} (MLflow run {blocker[1]}) triggered "
                f"{train_dag}, within monitor.retrain.cooldown_days ({retrain_cfg.cooldown_days})"
            )
        else:
            retrain = True
            reasons.append(f"retrain: triggering {train_dag} (alarm: {', '.join(wanted)})")
    retrain_reason = "monitor: " + "; ".join(why[a] for a in wanted) if retrain else ""
    return Decision(outcome, alarms, retrain, reasons, retrain_reason)
