"""Evaluation on the holdout (metrics, slices, disparity) and the quality gates."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from airflow_mlops.config import PipelineConfig
from airflow_mlops.config.train import GatesConfig
from airflow_mlops.core.train import evaluation as evals
from airflow_mlops.core.train import training as tr
from tests.fixtures.training_data import small_train_config as train_cfg

# Evaluation and gates --------------------------------------------------------------------------------------


def test_evaluate_slices_and_disparity(cfg: PipelineConfig, window: tr.TrainingData) -> None:
    split = tr.split_by_time(window.frame, 3, 4)
    spec = tr.feature_spec(cfg, window.frame)
    tc = train_cfg()
    model = tr.fit(split, tc, spec).model
    ev = evals.evaluate(model, split.holdout, tc, spec)
    scores = tr.positive_scores(model, split.holdout)
    assert ev.rows == len(split.holdout) and ev.positives == int(split.holdout["delayed"].sum())
    assert ev.primary == pytest.approx(roc_auc_score(split.holdout["delayed"], scores))
    gated: dict[str, list[float]] = {}
    for s in ev.slices:
        rows = split.holdout[split.holdout[s.column].astype(str) == s.value]
        assert s.rows == len(rows)
        assert s.primary == pytest.approx(roc_auc_score(rows["delayed"], scores[rows.index]))
        assert s.gated == (s.rows >= 50)
        if s.gated and s.primary is not None:
            gated.setdefault(s.column, []).append(s.primary)
    for col, values in gated.items():
        assert ev.disparity[col] == pytest.approx(max(values) - min(values))
    assert ev.max_disparity == pytest.approx(max(v for v in ev.disparity.values() if v is not None))
    again = evals.Evaluation.from_dict(ev.to_dict())
    assert again.metrics == ev.metrics and again.slices == ev.slices


def evaluation(
    primary: float, disparity: float | None = 0.05, metric: str = "roc_auc", name: str = "challenger"
) -> evals.Evaluation:
    metrics = dict.fromkeys(tr.compute_metrics(np.array([0, 1]), np.array([0.1, 0.9]), 0.5), 0.5)
    metrics[metric] = primary
    return evals.Evaluation(name, metric, metrics, 1000, 300, [], {"carrier": disparity}, disparity)


GATES = GatesConfig(min_primary=0.6, min_improvement=0.01, max_slice_disparity=0.2, slice_columns=["carrier"])


def test_first_run_is_explicit() -> None:
    decision = evals.decide(evaluation(0.7), None, GATES)
    assert decision.outcome == "passed" and decision.first_run and decision.promote
    assert decision.reason.startswith("first run: no champion to compare")
    improvement = next(g for g in decision.gates if g.name == "min_improvement")
    assert improvement.passed and improvement.observed is None and "first run" in improvement.detail


def test_gates_pass_and_fail_against_champion() -> None:
    passed = evals.decide(evaluation(0.72), evaluation(0.70, name="champion"), GATES)
    assert passed.outcome == "passed" and not passed.first_run
    gain = next(g for g in passed.gates if g.name == "min_improvement")
    assert gain.observed == pytest.approx(0.02) and gain.threshold == 0.01 and gain.passed

    failed = evals.decide(evaluation(0.55, disparity=0.3), evaluation(0.70, name="champion"), GATES)
    assert failed.outcome == "failed" and not failed.promote
    assert {g.name for g in failed.gates if not g.passed} == {"min_primary", "min_improvement", "max_slice_disparity"}
    assert "min_primary: observed 0.5500, threshold 0.6000" in failed.reason
    assert "max_slice_disparity: observed 0.3000, threshold 0.2000" in failed.reason


def test_lower_is_better_metric_flips_the_gates() -> None:
    gates = GatesConfig(min_primary=0.5, min_improvement=0.0, max_slice_disparity=None)
    ok = evals.decide(evaluation(0.40, metric="log_loss"), evaluation(0.45, metric="log_loss"), gates)
    assert ok.outcome == "passed"
    assert next(g for g in ok.gates if g.name == "min_improvement").observed == pytest.approx(0.05)
    worse = evals.decide(evaluation(0.55, metric="log_loss"), evaluation(0.45, metric="log_loss"), gates)
    assert {g.name for g in worse.gates if not g.passed} == {"min_primary", "min_improvement"}


def test_force_records_who_and_why() -> None:
    force = evals.ForceRequest(by="alice", reason="hotfix for the new carrier")
    forced = evals.decide(evaluation(0.5), evaluation(0.7), GATES, force)
    assert forced.outcome == "forced" and forced.promote and not forced.passed
    assert forced.force == force and "forced by alice: hotfix for the new carrier" in forced.reason
    unneeded = evals.decide(evaluation(0.8), evaluation(0.7), GATES, force)
    assert unneeded.outcome == "passed" and "was not needed" in unneeded.reason
    assert evals.GateDecision.from_dict(forced.to_dict()) == forced
    with pytest.raises(ValueError, match="who"):
        evals.ForceRequest(by=" ", reason="x")


def test_disabled_gates_and_no_gated_slices() -> None:
    decision = evals.decide(
        evaluation(math.nan, disparity=None), None, GatesConfig(min_primary=None, min_improvement=None)
    )
    assert decision.outcome == "passed"
    details = {g.name: g.detail for g in decision.gates}
    assert details["min_primary"] == "disabled" and details["min_improvement"] == "disabled"
    assert "no slice column had two slices" in details["max_slice_disparity"]
    undefined = evals.decide(evaluation(math.nan), None, GATES)
    assert undefined.outcome == "failed" and "observed n/a" in undefined.reason
