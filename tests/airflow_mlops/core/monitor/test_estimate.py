"""Confidence-based estimation: expected metrics from the model's own probabilities, and the monitor's check."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.core.monitor.decision import decide
from airflow_mlops.core.monitor.drift import ColumnDrift, DriftResult, InsufficientData, weigh
from airflow_mlops.core.monitor.estimate import assess_estimated, expected_metrics
from airflow_mlops.core.train.tasks import compute_metrics
from tests.fixtures.monitoring import monitored_config


def calibrated(n: int, seed: int, a: float = 2.0, b: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """P(true) from Beta(a, b) and labels drawn from them: a perfectly calibrated model's scores and outcomes."""
    rng = np.random.default_rng(seed)
    p = rng.beta(a, b, n)
    return p, (rng.random(n) < p).astype("int8")


def test_the_estimate_of_a_calibrated_model_matches_its_true_metrics() -> None:
    p, y = calibrated(20000, seed=1)
    true = compute_metrics(y, p, 0.5, "binary")
    estimated = expected_metrics(p, "binary", draws=20, seed=3)
    for metric in ("roc_auc", "accuracy", "log_loss", "brier"):
        assert estimated[metric] == pytest.approx(true[metric], abs=0.01), metric
    assert expected_metrics(p, "binary", draws=20, seed=3) == estimated  # seeded: the same figures again


def test_multiclass_estimates_follow_the_class_probabilities() -> None:
    rng = np.random.default_rng(2)
    proba = rng.dirichlet([0.4, 0.4, 0.4], 5000)  # confident rows
    classes = ["a", "b", "c"]
    y = np.array(classes, dtype=object)[[rng.choice(3, p=row) for row in proba]]
    true = compute_metrics(y, proba, 0.5, "multiclass", classes)
    estimated = expected_metrics(proba, "multiclass", classes=classes, draws=10, seed=0)
    assert estimated["accuracy"] == pytest.approx(true["accuracy"], abs=0.02)
    assert estimated["roc_auc_ovr"] == pytest.approx(true["roc_auc_ovr"], abs=0.02)
    unsure = expected_metrics(np.full((5000, 3), 1 / 3), "multiclass", classes=classes, draws=10, seed=0)
    assert unsure["accuracy"] < estimated["accuracy"] - 0.2


def test_a_regression_or_no_rows_gives_no_estimate() -> None:
    assert expected_metrics(np.array([1.0, 2.0]), "regression") == {}
    assert expected_metrics(np.empty(0), "binary") == {}


def window(p: np.ndarray, version: str = "3") -> pd.DataFrame:
    return pd.DataFrame({"prediction": p, "model_version": version})


def test_the_check_compares_the_window_with_the_holdout_estimate() -> None:
    cfg = monitored_config("estimate", {"estimated_quality": {"enabled": True, "max_drop": 0.03, "min_rows": 500}})
    p, _ = calibrated(3000, seed=4)
    baseline = expected_metrics(p, "binary", seed=cfg.train.seed)["roc_auc"]
    same = assess_estimated(window(calibrated(3000, seed=5)[0]), cfg, {"roc_auc": baseline}, "3")
    assert not same.degraded and abs(same.drop) < 0.03 and same.rows == 3000 and same.metric == "roc_auc"
    unsure = assess_estimated(window(0.5 + 0.2 * (p - 0.5)), cfg, {"roc_auc": baseline}, "3")
    assert unsure.degraded and unsure.drop > 0.05
    assert unsure.value == pytest.approx(unsure.baseline - unsure.drop)

    # What keeps it from a verdict is said, never guessed.
    with pytest.raises(InsufficientData, match=r"0 row\(s\) of the window scored by champion v3 \(min_rows 500\)"):
        assess_estimated(window(p, version="2"), cfg, {"roc_auc": baseline}, "3")  # another version's rows
    with pytest.raises(InsufficientData, match="has no holdout estimate of roc_auc"):
        assess_estimated(window(p), cfg, {}, "3")
    regression = cfg.model_copy(update={"train": cfg.train.model_copy(update={"task": "regression"})})
    with pytest.raises(InsufficientData, match="a regression model gives no class probabilities"):
        assess_estimated(window(p), regression, {"roc_auc": baseline}, "3")


def test_an_estimated_drop_is_its_own_outcome_and_triggers_a_retrain() -> None:
    cfg = monitored_config(
        "estimate",
        {
            "estimated_quality": {"enabled": True},
            "retrain": {"triggers": ["drift", "quality", "estimated_quality"], "cooldown_days": 3},
        },
    )
    p, _ = calibrated(3000, seed=4)
    dropped = assess_estimated(window(0.5 + 0.2 * (p - 0.5)), cfg, {"roc_auc": 0.75}, "3")
    decision = decide(cfg, None, None, {}, blocker=None, train_active=False, estimated=dropped)
    assert decision.outcome == "estimated_drop" and decision.alarms == ["estimated_quality"] and decision.retrain
    assert decision.retrain_reason.startswith("monitor: estimated quality drop: roc_auc estimated ")
    assert "vs 0.750 estimated on its holdout" in decision.retrain_reason
    not_a_trigger = monitored_config("estimate", {"estimated_quality": {"enabled": True}})
    held = decide(not_a_trigger, None, None, {}, blocker=None, train_active=False, estimated=dropped)
    assert held.outcome == "estimated_drop" and not held.retrain


def drift_of(drifted: dict[str, bool], critical: list[str] | None = None) -> DriftResult:
    columns = {c: ColumnDrift("wasserstein", 0.5 if d else 0.01, 0.1, d) for c, d in drifted.items()}
    share = sum(drifted.values()) / len(drifted)
    crit = [c for c in critical or [] if drifted[c]]
    return DriftResult(share >= 0.3 or bool(crit), share, 0.3, columns, 1000, 1000, crit)


def test_weighting_counts_each_drifted_column_by_its_importance() -> None:
    importance = {"temp": 0.001, "carrier": 0.04, "hour": 0.02, "precip": -0.002}
    unused = weigh(drift_of({"temp": True, "carrier": False, "hour": False, "precip": True}), importance)
    assert unused.share == 0.5 and not unused.drifted  # half the columns, but almost none of what the model uses
    assert unused.weighted_share == pytest.approx(0.001 / 0.061) and unused.weights["precip"] == 0.0
    used = weigh(drift_of({"temp": False, "carrier": True, "hour": False, "precip": False}), importance)
    assert used.share == 0.25 and used.drifted and used.weighted_share == pytest.approx(0.04 / 0.061)
    critical = weigh(drift_of({"temp": True, "carrier": False, "hour": False, "precip": False}, ["temp"]), importance)
    assert critical.drifted and critical.critical_drifted == ["temp"]  # a critical column alarms on its own
    nothing = drift_of({"temp": True, "carrier": False})
    assert weigh(nothing, {"temp": 0.0, "carrier": -0.1}) is nothing  # no positive importance: nothing to weigh by
    assert weigh(nothing, {}).weighted_share is None
    assert not math.isnan(used.to_dict()["weighted_share"])
