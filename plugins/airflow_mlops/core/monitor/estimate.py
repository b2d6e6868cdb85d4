"""The champion's primary metric estimated on unlabelled rows from its own class probabilities (CBPE)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from airflow_mlops.config.train import LOWER_IS_BETTER
from airflow_mlops.core.monitor.drift import InsufficientData
from airflow_mlops.core.train.tasks import compute_metrics, frame_scores

if TYPE_CHECKING:
    from airflow_mlops.config import PipelineConfig

ESTIMATED_PREFIX = "estimated.holdout."
"""Training-run metrics holding the estimate on the model's holdout: `estimated.holdout.<metric>`."""

# Drawing label sets is the general form of confidence-based estimation: any metric of the task, for binary
# and multiclass alike, through the same compute_metrics the gates use. Closed forms exist for a few metrics
# (expected accuracy is the mean top probability) but not for ROC AUC on ties or for F1; 20 draws of 20 000
# rows cost well under a second, and the spread of the estimate between draws is about 0.002 in ROC AUC.


def expected_metrics(
    scores: np.ndarray,
    task: str,
    *,
    threshold: float = 0.5,
    classes: Sequence[Any] = (),
    draws: int = 20,
    seed: int = 0,
) -> dict[str, float]:
    """Each metric of the task, as its mean over `draws` label sets drawn from the probabilities `scores` (as
    model_scores gives them: P(1) for binary, rows of class probabilities for multiclass); {} for a regression
    or no rows, NaN for a metric undefined on every draw."""
    if task not in ("binary", "multiclass") or len(scores) == 0:
        return {}
    rng = np.random.default_rng(seed)
    values: dict[str, list[float]] = {}
    proba = np.nan_to_num(scores.astype("float64"), nan=0.0)
    if task == "binary":
        proba = np.clip(proba, 0.0, 1.0)
    else:  # each row's cumulative class probabilities: a uniform draw below the k-th bound picks class k
        cumulative = np.cumsum(proba / np.maximum(proba.sum(axis=1, keepdims=True), 1e-12), axis=1)
        names = np.asarray([str(c) for c in classes], dtype=object)
    for _ in range(draws):
        if task == "binary":
            labels: np.ndarray = (rng.random(len(proba)) < proba).astype("int8")
        else:
            picked = np.minimum((rng.random((len(proba), 1)) > cumulative).sum(axis=1), len(classes) - 1)
            labels = names[picked]
        for name, value in compute_metrics(labels, scores, threshold, task, classes).items():
            values.setdefault(name, []).append(value)
    return {
        name: float(np.mean(finite)) if (finite := [v for v in got if not math.isnan(v)]) else math.nan
        for name, got in values.items()
    }


def holdout_estimates(
    model: Any, holdout: pd.DataFrame, columns: Sequence[str], cfg: PipelineConfig
) -> dict[str, float]:
    """What a training run logs for the monitor's estimated-quality check: `estimated.holdout.<metric>` of the
    model on its holdout (nothing for a regression)."""
    from airflow_mlops.core.train.tasks import model_classes, model_scores
    from airflow_mlops.core.train.training import thread_limit

    train = cfg.train
    if train.task not in ("binary", "multiclass") or holdout.empty:
        return {}
    with thread_limit(train.model.threads):
        scores = model_scores(model, holdout[list(columns)], train.task)
    found = expected_metrics(
        scores, train.task, threshold=train.metric.threshold, classes=[str(c) for c in model_classes(model)],
        draws=cfg.monitor.estimated_quality.draws, seed=train.seed,
    )  # fmt: skip
    return {f"{ESTIMATED_PREFIX}{name}": value for name, value in found.items() if not math.isnan(value)}


@dataclass(frozen=True)
class EstimatedQuality:
    """The estimate on the window against the estimate on the champion's holdout."""

    metric: str
    value: float
    baseline: float
    drop: float
    """How much worse the window's estimate is (positive: worse), in the metric's better direction."""
    max_drop: float
    rows: int
    champion_version: str
    degraded: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def assess_estimated(
    rows: pd.DataFrame, cfg: PipelineConfig, baselines: dict[str, float], champion_version: str
) -> EstimatedQuality:
    """Estimate the primary metric on the window's rows the champion scored (`rows`: the monitor's current rows,
    with prediction and model_version columns) and compare it with its holdout estimate (`baselines`: metric ->
    estimate, as logged at training). Raises InsufficientData when it cannot be judged."""
    conf, train = cfg.monitor.estimated_quality, cfg.train
    metric = train.metric.primary
    if train.task not in ("binary", "multiclass"):
        raise InsufficientData(f"a {train.task} model gives no class probabilities to estimate {metric} from")
    baseline = baselines.get(metric)
    if baseline is None or math.isnan(baseline):
        raise InsufficientData(
            f"champion v{champion_version} has no holdout estimate of {metric} (trained before estimates were "
            "logged, or undefined on its holdout)"
        )
    own = rows[rows["model_version"].astype("string") == str(champion_version)] if len(rows) else rows
    scores, classes = frame_scores(own, train.task) if len(own) else (np.empty(0), [])
    usable = ~np.isnan(scores).any(axis=1) if scores.ndim == 2 else ~np.isnan(scores)
    scores = scores[usable]
    if len(scores) < conf.min_rows:
        raise InsufficientData(
            f"{len(scores)} row(s) of the window scored by champion v{champion_version} (min_rows {conf.min_rows})"
        )
    value = expected_metrics(
        scores, train.task, threshold=train.metric.threshold, classes=classes, draws=conf.draws, seed=train.seed
    ).get(metric, math.nan)
    if math.isnan(value):
        raise InsufficientData(f"{metric} cannot be estimated on these rows")
    drop = value - baseline if metric in LOWER_IS_BETTER else baseline - value
    return EstimatedQuality(
        metric, value, baseline, drop, conf.max_drop, len(scores), str(champion_version), drop > conf.max_drop
    )
