"""Model quality on matured labels against the champion's own holdout figures."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_mlops.config.train import LOWER_IS_BETTER
from airflow_mlops.core.monitor.current import LABEL
from airflow_mlops.core.monitor.drift import InsufficientData
from airflow_mlops.core.train import training as tr
from airflow_mlops.core.train.tasks import frame_scores
from airflow_mlops.core.train.tasks import positives as count_positives

if TYPE_CHECKING:
    import pandas as pd

    from airflow_mlops.config import PipelineConfig


@dataclass(frozen=True)
class QualityResult:
    """The primary metric on matured labels against the champion's own holdout figure."""

    metric: str
    value: float
    baseline: float
    drop: float
    """How much worse than the baseline, in the metric's better direction (negative: better)."""
    max_drop: float
    degraded: bool
    rows: int
    positives: int
    champion_version: str
    days: list[str]
    metrics: dict[str, float]
    baselines: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        def clean(values: Mapping[str, float]) -> dict[str, float | None]:
            return {k: None if math.isnan(v) else v for k, v in values.items()}

        return {
            "metric": self.metric,
            "value": self.value,
            "baseline": self.baseline,
            "drop": self.drop,
            "max_drop": self.max_drop,
            "degraded": self.degraded,
            "lower_is_better": self.metric in LOWER_IS_BETTER,
            "rows": self.rows,
            "positives": self.positives,
            "champion_version": self.champion_version,
            "days": list(self.days),
            "metrics": clean(self.metrics),
            "baselines": clean(self.baselines),
        }


def assess_quality(
    sample: pd.DataFrame,
    cfg: PipelineConfig,
    baselines: Mapping[str, float],
    champion_version: str,
    days: Sequence[str],
) -> QualityResult:
    """The metrics of the champion's matured predictions; degraded when the primary metric is worse than
    the champion's holdout figure (`baselines`) by more than `quality.max_drop`.

    Raises InsufficientData for fewer than `quality.min_rows` rows, a missing baseline, or a primary metric
    that is undefined on these rows (one class only).
    """
    q = cfg.monitor.quality
    primary = cfg.train.metric.primary
    span = f"{days[0]}..{days[-1]}" if days else "none"
    if not days:
        raise InsufficientData(
            f"no day of the window has matured labels (quality.label_delay_days {q.label_delay_days} "
            f">= window_days {cfg.monitor.window_days})"
        )
    if len(sample) < q.min_rows:
        raise InsufficientData(
            f"{len(sample)} matured labelled row(s) predicted by champion v{champion_version} on days {span}; "
            f"quality.min_rows is {q.min_rows}"
        )
    baseline = baselines.get(primary, math.nan)
    if math.isnan(baseline):
        raise InsufficientData(
            f"champion v{champion_version} has no holdout {primary} in its training run to compare with"
        )
    task = cfg.train.task
    y_score, classes = frame_scores(sample, task)
    y_true = sample[LABEL].to_numpy(dtype={"binary": "int8", "regression": "float64"}.get(task, "object"))
    metrics = tr.compute_metrics(y_true, y_score, cfg.train.metric.threshold, task, classes)
    value = metrics[primary]
    if math.isnan(value):
        raise InsufficientData(
            f"{primary} is undefined on the {len(sample)} matured rows of days {span}: every label is "
            f"{y_true[0] if len(y_true) else '-'}"
        )
    drop = value - baseline if primary in LOWER_IS_BETTER else baseline - value
    return QualityResult(
        metric=primary,
        value=value,
        baseline=baseline,
        drop=drop,
        max_drop=q.max_drop,
        degraded=drop > q.max_drop,
        rows=len(sample),
        positives=count_positives(y_true, task),
        champion_version=champion_version,
        days=list(days),
        metrics=metrics,
        baselines=dict(baselines),
    )
