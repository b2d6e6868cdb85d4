"""Quality on matured labels against the champion's holdout figures, in both metric directions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.config import PipelineConfig
from airflow_mlops.core.monitor.current import LABEL, PREDICTION
from airflow_mlops.core.monitor.drift import InsufficientData
from airflow_mlops.core.monitor.quality import assess_quality
from airflow_mlops.core.train import training as tr
from tests.fixtures.monitoring import monitored_config


def frame_of(labels: list[int], scores: list[float]) -> pd.DataFrame:
    return pd.DataFrame({PREDICTION: np.asarray(scores, dtype="float64"), LABEL: np.asarray(labels, "int8")})


def test_assess_quality_in_both_metric_directions() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(2000) < 0.3).astype(int)
    good = np.clip(0.3 + 0.4 * (y - 0.3) + rng.normal(0, 0.2, len(y)), 0.01, 0.99)
    cfg = monitored_config("quality")
    baselines = {"roc_auc": 0.9, "log_loss": 0.3}
    result = assess_quality(frame_of(y.tolist(), good.tolist()), cfg, baselines, "3", ["2013-03-21"])
    auc = tr.compute_metrics(y, good, 0.5)["roc_auc"]
    assert result.value == pytest.approx(auc) and result.drop == pytest.approx(0.9 - auc)
    assert result.degraded == (0.9 - auc > 0.05)

    data = cfg.model_dump(mode="json")
    data["train"]["metric"]["primary"] = "log_loss"
    lower = PipelineConfig.model_validate(data)
    loss = tr.compute_metrics(y, good, 0.5)["log_loss"]
    worse = assess_quality(frame_of(y.tolist(), good.tolist()), lower, {"log_loss": loss - 0.1}, "3", ["d"])
    assert worse.drop == pytest.approx(0.1) and worse.degraded  # a higher loss is worse
    better = assess_quality(frame_of(y.tolist(), good.tolist()), lower, {"log_loss": loss + 0.1}, "3", ["d"])
    assert better.drop == pytest.approx(-0.1) and not better.degraded

    with pytest.raises(InsufficientData, match=r"quality\.min_rows is 500"):
        assess_quality(frame_of(y[:100].tolist(), good[:100].tolist()), cfg, baselines, "3", ["d"])
    with pytest.raises(InsufficientData, match="no holdout roc_auc"):
        assess_quality(frame_of(y.tolist(), good.tolist()), cfg, {}, "3", ["d"])
    with pytest.raises(InsufficientData, match="every label is 0"):
        assess_quality(frame_of([0] * 600, [0.2] * 600), cfg, baselines, "3", ["d"])
