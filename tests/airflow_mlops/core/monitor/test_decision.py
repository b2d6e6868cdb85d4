"""The retrain decision: outcome precedence, triggers, the cool-down and an active train run."""

from __future__ import annotations

from airflow_mlops.core.monitor.decision import ChampionAge, cooldown_blocker, decide
from airflow_mlops.core.monitor.drift import ColumnDrift, DriftResult
from airflow_mlops.core.monitor.prediction import PredictionDrift
from airflow_mlops.core.monitor.quality import QualityResult
from tests.fixtures.monitoring import monitored_config


def test_cooldown_blocker_window() -> None:
    previous = [("2013-03-10", "a"), ("2013-03-14", "b"), ("not a date", "c"), ("2013-03-20", "later")]
    assert cooldown_blocker("2013-03-17", previous, 3) == ("2013-03-14", "b")
    assert cooldown_blocker("2013-03-18", previous, 3) is None  # 4 days after the last retrain
    assert cooldown_blocker("2013-03-14", previous, 3) == ("2013-03-14", "b")  # another DAG run, same day
    assert cooldown_blocker("2013-03-17", previous, 0) is None


def test_decide_outcome_precedence_and_retrain_rules() -> None:
    cfg = monitored_config("decide")
    drifted = DriftResult(
        drifted=True,
        share=0.5,
        share_threshold=0.3,
        columns={
            "temp": ColumnDrift("wasserstein", 0.4, 0.1, True),
            "hour": ColumnDrift("wasserstein", 0.0, 0.1, False),
        },
        rows_reference=1000,
        rows_current=1000,
    )
    degraded = QualityResult(
        "roc_auc", 0.6, 0.7, 0.1, 0.05, True, 900, 300, "2", ["2013-03-21"], {"roc_auc": 0.6}, {"roc_auc": 0.7}
    )
    both = decide(cfg, drifted, degraded, {}, blocker=None, train_active=False)
    assert both.outcome == "quality_drop" and both.alarms == ["drift", "quality"] and both.retrain
    assert both.retrain_reason.startswith("monitor: drift: 1 of 2 columns drifted (50%, share_threshold 30%)")
    assert "; quality drop: roc_auc 0.600 on 900 matured rows" in both.retrain_reason

    # An alarm outranks missing data for the other check; missing data alone is its own outcome.
    partial = decide(cfg, drifted, None, {"quality": "no labels"}, blocker=None, train_active=False)
    assert partial.outcome == "drift" and "insufficient data for quality: no labels" in partial.reasons
    missing = decide(cfg, None, None, {"drift": "no rows"}, blocker=None, train_active=False)
    assert missing.outcome == "insufficient_data" and not missing.retrain and missing.alarms == []

    disabled = cfg.model_copy(
        update={
            "monitor": cfg.monitor.model_copy(
                update={"retrain": cfg.monitor.retrain.model_copy(update={"enabled": False})}
            )
        }
    )
    off = decide(disabled, drifted, None, {}, blocker=None, train_active=False)
    assert off.outcome == "drift" and not off.retrain and "no retrain: monitor.retrain.enabled is false" in off.reasons
    held = decide(cfg, drifted, None, {}, blocker=("2013-03-20", "abc"), train_active=False)
    assert not held.retrain and held.retrain_reason == ""
    assert any("cool-down: the monitor run of 2013-03-20 (MLflow run abc)" in r for r in held.reasons)


def prediction_drift(drifted: bool) -> PredictionDrift:
    column = ColumnDrift("wasserstein", 0.4 if drifted else 0.02, 0.1, drifted)
    result = DriftResult(drifted, float(drifted), 1.0, {"prediction": column}, 1000, 800, ["prediction"] * drifted)
    return PredictionDrift("binary", result, "2", 50)


def test_prediction_drift_is_reported_only_unless_configured_as_an_alarm() -> None:
    cfg = monitored_config("decide")
    assert cfg.monitor.prediction_drift.enabled and not cfg.monitor.prediction_drift.alarm  # the defaults
    quiet = decide(cfg, None, None, {}, blocker=None, train_active=False, prediction=prediction_drift(True))
    assert quiet.outcome == "ok" and quiet.alarms == [] and not quiet.retrain
    assert quiet.reasons == [
        "prediction drift: the champion's prediction moved: prediction wasserstein 0.4 (threshold 0.1)"
        " (reported only: monitor.prediction_drift.alarm is false)"
    ]

    # retrain.triggers of the shipped config name drift and quality only: an alarm, no retrain
    alarmed = monitored_config("decide", {"prediction_drift": {"alarm": True}})
    alarm = decide(alarmed, None, None, {}, blocker=None, train_active=False, prediction=prediction_drift(True))
    assert alarm.outcome == "drift" and alarm.alarms == ["prediction_drift"] and not alarm.retrain
    assert "no retrain: alarm(s) prediction_drift not in monitor.retrain.triggers (drift, quality)" in alarm.reasons

    triggering = monitored_config(
        "decide", {"prediction_drift": {"alarm": True}, "retrain": {"triggers": ["prediction_drift"]}}
    )
    retrain = decide(triggering, None, None, {}, blocker=None, train_active=False, prediction=prediction_drift(True))
    assert retrain.retrain and retrain.retrain_reason.startswith(
        "monitor: prediction drift: the champion's prediction moved"
    )
    calm = decide(triggering, None, None, {}, blocker=None, train_active=False, prediction=prediction_drift(False))
    assert calm.outcome == "ok" and not calm.retrain
    assert calm.reasons == ["no prediction drift: prediction wasserstein 0.02 (threshold 0.1)"]


def test_a_stale_champion_is_the_age_alarm_and_any_other_alarm_outranks_it() -> None:
    cfg = monitored_config("decide", {"retrain": {"max_age_days": 14}})
    stale = ChampionAge("3", "2013-03-01", 14, 14)
    alone = decide(cfg, None, None, {}, blocker=None, train_active=False, age=stale)
    assert alone.outcome == "stale" and alone.alarms == ["age"] and alone.retrain
    assert alone.retrain_reason == (
        "monitor: stale champion: champion v3 trained on data through 2013-03-01, 14 day(s) ago (max_age_days 14):"
        " a challenger on fresh data is due"
    )
    fresh = decide(cfg, None, None, {}, blocker=None, train_active=False, age=ChampionAge("3", "2013-03-01", 13, 14))
    assert fresh.outcome == "ok" and not fresh.retrain
    assert fresh.reasons == [
        "champion fresh: champion v3 trained on data through 2013-03-01, 13 day(s) ago (max_age_days 14)"
    ]

    with_prediction = monitored_config("decide", {"prediction_drift": {"alarm": True}, "retrain": {"max_age_days": 14}})
    both = decide(
        with_prediction, None, None, {}, blocker=None, train_active=False, prediction=prediction_drift(True), age=stale
    )
    assert both.outcome == "drift" and both.alarms == ["prediction_drift", "age"]
    # A cool-down holds the age alarm back like any other: a challenger that lost is not retried every day.
    held = decide(cfg, None, None, {}, blocker=("2013-03-10", "abc"), train_active=False, age=stale)
    assert held.outcome == "stale" and not held.retrain
    # Not among the triggers: reported, no retrain.
    untriggered = monitored_config("decide", {"retrain": {"max_age_days": 14, "triggers": ["drift", "quality"]}})
    quiet = decide(untriggered, None, None, {}, blocker=None, train_active=False, age=stale)
    assert quiet.alarms == ["age"] and not quiet.retrain
