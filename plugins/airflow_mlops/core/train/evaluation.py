"""Evaluation of a model on the holdout (metrics, slices, disparity), the quality gates, feature importance."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from airflow_mlops.config.train import LOWER_IS_BETTER, GatesConfig, TrainConfig
from airflow_mlops.core.train.tasks import compute_metrics, importance_scorer, model_classes, model_scores
from airflow_mlops.core.train.tasks import positives as count_positives
from airflow_mlops.core.train.training import MISSING_SLICE, SCORERS, FeatureSpec, thread_limit
from airflow_mlops.core.train.window import TrainingDataError

# Evaluation ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SliceMetric:
    """The primary metric on the holdout rows of one value of a slice column."""

    column: str
    value: str
    rows: int
    positives: int
    primary: float | None
    gated: bool


@dataclass
class Evaluation:
    """A model scored on the holdout: metrics, slices and disparity. Scores are kept for plots, not serialised."""

    name: str
    primary_metric: str
    metrics: dict[str, float]
    rows: int
    positives: int
    slices: list[SliceMetric]
    disparity: dict[str, float | None]
    max_disparity: float | None
    task: str = "binary"
    classes: list[Any] = field(default_factory=list)
    """multiclass: the model's classes, in the order of the columns of `y_score`."""
    y_true: np.ndarray | None = field(default=None, repr=False, compare=False)
    y_score: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def primary(self) -> float:
        return self.metrics[self.primary_metric]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (NaN becomes None; the score arrays are left out)."""
        return {
            "name": self.name,
            "primary_metric": self.primary_metric,
            "metrics": {k: _none_if_nan(v) for k, v in self.metrics.items()},
            "rows": self.rows,
            "positives": self.positives,
            "slices": [asdict(s) for s in self.slices],
            "disparity": self.disparity,
            "max_disparity": self.max_disparity,
            "task": self.task,
            "classes": list(self.classes),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Evaluation:
        return cls(
            name=data["name"],
            primary_metric=data["primary_metric"],
            metrics={k: math.nan if v is None else float(v) for k, v in data["metrics"].items()},
            rows=int(data["rows"]),
            positives=int(data["positives"]),
            slices=[SliceMetric(**s) for s in data["slices"]],
            disparity=dict(data["disparity"]),
            max_disparity=data["max_disparity"],
            task=str(data.get("task", "binary")),
            classes=list(data.get("classes") or []),
        )


def _none_if_nan(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


def evaluate(
    model: Any, holdout: pd.DataFrame, train_cfg: TrainConfig, spec: FeatureSpec, name: str = "challenger"
) -> Evaluation:
    """Score a model on the holdout: all metrics, the primary per slice, and the disparity per slice column."""
    if holdout.empty:
        raise TrainingDataError("the holdout has no rows: nothing to evaluate on")
    primary = train_cfg.metric.primary
    gates = train_cfg.gates
    task = train_cfg.task
    y_true = holdout[spec.label].to_numpy()
    if task == "binary":
        y_true = y_true.astype("int8")
    classes = model_classes(model) if task == "multiclass" else []
    with thread_limit(train_cfg.model.threads):
        y_score = model_scores(model, holdout[spec.columns], task)

    def metrics_of(mask: np.ndarray | None = None) -> dict[str, float]:
        if mask is None:
            return compute_metrics(y_true, y_score, train_cfg.metric.threshold, task, classes)
        return compute_metrics(y_true[mask], y_score[mask], train_cfg.metric.threshold, task, classes)

    metrics = metrics_of()
    slices: list[SliceMetric] = []
    disparity: dict[str, float | None] = {}
    for col in gates.slice_columns:
        if col not in holdout.columns:
            raise TrainingDataError(f"slice column {col!r} is not in the holdout rows (train.gates.slice_columns)")
        keys = holdout[col].astype("string").fillna(MISSING_SLICE).to_numpy()
        gated_values: list[float] = []
        for value in sorted(set(keys.tolist())):
            mask = keys == value
            rows = int(mask.sum())
            value_primary = _none_if_nan(metrics_of(mask)[primary])
            gated = rows >= gates.min_slice_rows and value_primary is not None
            if gated and value_primary is not None:
                gated_values.append(value_primary)
            slices.append(SliceMetric(col, str(value), rows, count_positives(y_true[mask], task), value_primary, gated))
        disparity[col] = max(gated_values) - min(gated_values) if len(gated_values) >= 2 else None
    found = [d for d in disparity.values() if d is not None]
    return Evaluation(
        name=name,
        primary_metric=primary,
        metrics=metrics,
        rows=len(holdout),
        positives=count_positives(y_true, task),
        slices=slices,
        disparity=disparity,
        max_disparity=max(found) if found else None,
        task=task,
        classes=classes,
        y_true=y_true,
        y_score=y_score,
    )


# Gates -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ForceRequest:
    """A person registering a challenger whatever the gates say, and why."""

    by: str
    reason: str

    def __post_init__(self) -> None:
        if not self.by.strip() or not self.reason.strip():
            raise ValueError("force needs both who (by) and why (reason)")


@dataclass(frozen=True)
class GateResult:
    """One gate: its threshold, what was observed, and the outcome."""

    name: str
    threshold: float | None
    observed: float | None
    passed: bool
    detail: str


@dataclass(frozen=True)
class GateDecision:
    """Whether the challenger gets the `challenger` alias, and why."""

    outcome: Literal["passed", "failed", "forced"]
    first_run: bool
    reason: str
    gates: list[GateResult]
    force: ForceRequest | None = None

    @property
    def passed(self) -> bool:
        """All gates passed (force aside)."""
        return all(g.passed for g in self.gates)

    @property
    def promote(self) -> bool:
        """The version gets the `challenger` alias (gates passed, or forced)."""
        return self.outcome in ("passed", "forced")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GateDecision:
        force = data.get("force")
        return cls(
            outcome=data["outcome"],
            first_run=bool(data["first_run"]),
            reason=data["reason"],
            gates=[GateResult(**g) for g in data["gates"]],
            force=ForceRequest(**force) if force else None,
        )


def decide(
    challenger: Evaluation, champion: Evaluation | None, gates: GatesConfig, force: ForceRequest | None = None
) -> GateDecision:
    """Apply the gates to the challenger (against the champion on the same holdout, when there is one)."""
    metric = challenger.primary_metric
    lower = metric in LOWER_IS_BETTER
    observed = _none_if_nan(challenger.primary)
    results: list[GateResult] = []

    if gates.min_primary is None:
        results.append(GateResult("min_primary", None, observed, True, "disabled"))
    else:
        ok = observed is not None and (observed <= gates.min_primary if lower else observed >= gates.min_primary)
        sign = "<=" if lower else ">="
        results.append(
            GateResult("min_primary", gates.min_primary, observed, ok, f"holdout {metric} {sign} {gates.min_primary}")
        )

    if gates.min_improvement is None:
        results.append(GateResult("min_improvement", None, None, True, "disabled"))
    elif champion is None:
        results.append(
            GateResult(
                "min_improvement", gates.min_improvement, None, True, "no champion: first run, nothing to compare"
            )
        )
    else:
        champ = _none_if_nan(champion.primary)
        if champ is None:
            results.append(
                GateResult(
                    "min_improvement",
                    gates.min_improvement,
                    None,
                    observed is not None,
                    f"champion {metric} undefined on this holdout",
                )
            )
        elif observed is None:
            results.append(
                GateResult(
                    "min_improvement",
                    gates.min_improvement,
                    None,
                    False,
                    f"challenger {metric} undefined on this holdout",
                )
            )
        else:
            gain = champ - observed if lower else observed - champ
            results.append(
                GateResult(
                    "min_improvement",
                    gates.min_improvement,
                    gain,
                    gain >= gates.min_improvement,
                    f"challenger {observed:.4f} vs champion {champ:.4f} ({metric}, better direction)",
                )
            )

    if gates.max_slice_disparity is None:
        results.append(GateResult("max_slice_disparity", None, challenger.max_disparity, True, "disabled"))
    elif challenger.max_disparity is None:
        results.append(
            GateResult(
                "max_slice_disparity",
                gates.max_slice_disparity,
                None,
                True,
                f"no slice column had two slices with >= {gates.min_slice_rows} rows",
            )
        )
    else:
        worst = max(challenger.disparity, key=lambda c: challenger.disparity[c] or -1.0)
        results.append(
            GateResult(
                "max_slice_disparity",
                gates.max_slice_disparity,
                challenger.max_disparity,
                challenger.max_disparity <= gates.max_slice_disparity,
                f"largest gap of {metric} between slices of {worst!r} (slices with >= {gates.min_slice_rows} rows)",
            )
        )

    failed = [g for g in results if not g.passed]
    failed_text = "; ".join(f"{g.name}: observed {fmt(g.observed)}, threshold {fmt(g.threshold)}" for g in failed)
    first_run = champion is None
    prefix = "first run: no champion to compare; " if first_run else ""
    if not failed:
        outcome: Literal["passed", "failed", "forced"] = "passed"
        reason = prefix + "all gates passed"
        if force is not None:
            reason += f"; force requested by {force.by} ({force.reason}) was not needed"
    elif force is not None:
        outcome = "forced"
        reason = prefix + f"forced by {force.by}: {force.reason}; failed gates: {failed_text}"
    else:
        outcome = "failed"
        reason = prefix + f"failed gates: {failed_text}"
    return GateDecision(outcome=outcome, first_run=first_run, reason=reason, gates=results, force=force)


def fmt(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


# Importance ------------------------------------------------------------------------------------------------


IMPORTANCE_PREFIX = "importance."
"""Training-run metrics holding the permutation importance of each feature column: `importance.<column>`."""


def feature_importance(
    model: Any,
    holdout: pd.DataFrame,
    spec: FeatureSpec,
    metric: str,
    seed: int,
    sample_rows: int = 5000,
    n_repeats: int = 3,
    threads: int | None = 1,
    task: str = "binary",
) -> dict[str, float]:
    """Permutation importance (drop of `metric`) of each raw feature column on a holdout sample."""
    from sklearn.inspection import permutation_importance

    sample = (
        holdout.sample(n=min(sample_rows, len(holdout)), random_state=seed) if len(holdout) > sample_rows else holdout
    )
    scoring: Any
    if task == "binary":
        if sample[spec.label].nunique() < 2 and metric in ("roc_auc", "average_precision"):
            metric = "neg_log_loss"  # ranking metrics need both classes in the sample
        scoring = SCORERS.get(metric, metric)
    else:
        if task == "multiclass" and metric == "roc_auc_ovr" and sample[spec.label].nunique() < 2:
            metric = "log_loss"  # ranking metrics need two classes in the sample
        scoring = importance_scorer(task, metric, model_classes(model))
    with thread_limit(threads):
        result = permutation_importance(
            model,
            sample[spec.columns],
            sample[spec.label].to_numpy(),
            scoring=scoring,
            n_repeats=n_repeats,
            random_state=seed,
            n_jobs=1,
        )
    return {col: float(v) for col, v in zip(spec.columns, result.importances_mean, strict=True)}
