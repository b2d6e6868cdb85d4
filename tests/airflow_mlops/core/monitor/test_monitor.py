"""The monitor against a real MLflow server and real Evidently: planted drift, quality drop, cool-down, no data."""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.config import PipelineConfig
from airflow_mlops.core.lake import paths
from airflow_mlops.core.lake.storage import Lake, open_lake
from airflow_mlops.core.monitor import monitor as mon
from airflow_mlops.core.registry.tracking import CHAMPION, RunTags, Tracking, raw_rows
from airflow_mlops.core.score import score_partition
from airflow_mlops.core.train import training as tr
from airflow_mlops.core.train.steps import evaluate_step, register_step, train_step
from tests.fixtures.monitoring import monitored_config
from tests.fixtures.training_data import day_range, synthetic_features, write_partitions

TRAIN_END = "2013-03-20"
DS = "2013-03-27"  # the monitored window is 2013-03-21..27: the week after the champion's training window
WINDOW = day_range("2013-03-21", 7)
ROWS_PER_DAY = 400  # predictions of the score DAG
REQUESTS_PER_DAY = 200  # rows sent to the model server


@dataclass
class Champion:
    cfg: PipelineConfig
    tracking: Tracking
    version: str
    model: Any
    spec: tr.FeatureSpec
    reference: pd.DataFrame
    holdout_auc: float


@pytest.fixture(scope="module")
def champion(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Champion:
    """A champion trained by the train steps on 20 synthetic days up to TRAIN_END (reference sample included)."""
    cfg = monitored_config(f"monitored_{uuid.uuid4().hex[:8]}")
    lake = open_lake(str(tmp_path_factory.mktemp("train-lake")))
    write_partitions(lake, cfg, synthetic_features(cfg, day_range("2013-03-01", 20), rows_per_day=200, seed=7))
    tracking = Tracking(mlflow_server)
    tags = RunTags(f"{cfg.name}__train", f"manual__{uuid.uuid4().hex}", TRAIN_END, "train")
    trained = train_step(lake, cfg, tracking, tags, TRAIN_END, 20, "monitor tests")
    evaluated = evaluate_step(lake, cfg, tracking, tags, trained, None)
    registered = register_step(cfg, tracking, tags, trained, evaluated, None)
    name = cfg.train.model_name(cfg.name)
    tracking.client.set_registered_model_alias(name, CHAMPION, registered["version"])
    loaded = tracking.load_champion(name)
    assert loaded is not None
    reference = tracking.load_reference(trained["mlflow_run_id"])
    assert reference is not None
    return Champion(
        cfg,
        tracking,
        registered["version"],
        loaded.model,
        tr.feature_spec(cfg, reference),
        reference,
        evaluated["challenger"]["metrics"]["roc_auc"],
    )


def with_monitor(champion: Champion, **changes: Any) -> PipelineConfig:
    """The champion's config with a fresh monitor experiment and the given monitor settings."""
    data = champion.cfg.model_dump(mode="json")
    data["monitor"].update(changes, experiment=f"monitor-{uuid.uuid4().hex[:8]}")
    return PipelineConfig.model_validate(data)


def current_rows(
    champion: Champion, days: list[str], rows_per_day: int, seed: int, temp_sds: float = 0.0, b6_share: float = 0.0
) -> pd.DataFrame:
    """Production feature rows of `days`: temp shifted by `temp_sds` reference SDs, a share of flights moved to B6."""
    cfg = champion.cfg
    frame = synthetic_features(cfg, days, rows_per_day=rows_per_day, seed=seed)
    frame["temp"] = frame["temp"] + temp_sds * float(champion.reference["temp"].std())
    if b6_share:
        moved = np.random.default_rng(seed + 1).random(len(frame)) < b6_share
        frame.loc[moved, "carrier"] = "B6"
    return frame


def write_window(
    lake: Lake,
    champion: Champion,
    cfg: PipelineConfig,
    days: list[str] = WINDOW,
    seed: int = 100,
    temp_sds: float = 0.0,
    b6_share: float = 0.0,
    rows_per_day: int = ROWS_PER_DAY,
    requests_per_day: int = REQUESTS_PER_DAY,
) -> None:
    """Features and the champion's batch predictions (score step) and model-server requests (inference log)."""
    features = current_rows(champion, days, rows_per_day, seed, temp_sds, b6_share)
    write_partitions(lake, cfg, features)
    for ds in days:
        score_partition(lake, cfg, champion.tracking, ds)
    if requests_per_day:
        log_requests(lake, champion, cfg, current_rows(champion, days, requests_per_day, seed + 50, temp_sds, b6_share))


def log_requests(lake: Lake, champion: Champion, cfg: PipelineConfig, frame: pd.DataFrame) -> None:
    """Rows sent to the model server as JSON, scored and logged by its own inference log writer."""
    from airflow_mlops.serving.inference_log import InferenceLog
    from airflow_mlops.serving.models import ServedModel

    spec = champion.spec
    served = ServedModel(
        cfg.name,
        cfg.train.model_name(cfg.name),
        champion.version,
        None,
        champion.model,
        tuple(spec.categorical),
        tuple(spec.numeric),
        "",
    )
    writer = InferenceLog(lake, flush_rows=10**9)
    for ds, day in frame.groupby("ds", sort=True):
        records = json.loads(raw_rows(day, spec).to_json(orient="records"))  # as a client sends them
        at = datetime.fromisoformat(f"{ds}T12:00:00").replace(tzinfo=UTC)
        for start in range(0, len(records), 50):
            rows = records[start : start + 50]
            scores = tr.positive_scores(champion.model, pd.DataFrame.from_records(rows, columns=list(served.columns)))
            writer.add(cfg.name, served, uuid.uuid4().hex, at, rows, scores)
        writer.flush()


def run_monitor(
    lake: Lake, champion: Champion, cfg: PipelineConfig, ds: str = DS, run_id: str | None = None, **kwargs: Any
) -> dict[str, Any]:
    tags = RunTags(f"{cfg.name}__monitor", run_id or f"scheduled__{ds}T00:00:00+00:00", ds, "monitor")
    result = mon.monitor_step(lake, cfg, champion.tracking, tags, ds, **kwargs)
    assert json.loads(json.dumps(result)) == result  # JSON-able for XCom
    return result


@pytest.fixture()
def lake(tmp_path: Path) -> Lake:
    return open_lake(str(tmp_path / "lake"))


# Drift ------------------------------------------------------------------------------------------------------


def test_unchanged_production_data_is_ok_and_a_rerun_changes_nothing(lake: Lake, champion: Champion) -> None:
    cfg = with_monitor(champion)
    write_window(lake, champion, cfg)
    links = {"DAG run": "/dags/flight_delays__monitor/runs/r1", "Lifecycle": "/mlops/lifecycle/flight_delays"}
    result = run_monitor(lake, champion, cfg, links=links)
    assert result["outcome"] == "ok" and result["retrain"] is False and result["alarms"] == []
    assert result["champion_version"] == champion.version and result["insufficient"] == {}
    assert result["rows_seen"] == {"inference_log": 7 * REQUESTS_PER_DAY, "predictions": 7 * ROWS_PER_DAY}
    assert result["rows"] == 7 * (REQUESTS_PER_DAY + ROWS_PER_DAY)  # below drift.sample_rows: every row
    drift, quality = result["drift"], result["quality"]
    assert drift["drifted"] is False and "temp" not in drift["drifted_columns"]
    assert quality["metric"] == "roc_auc" and quality["degraded"] is False
    assert quality["baseline"] == pytest.approx(champion.holdout_auc)
    assert quality["days"] == WINDOW[:-1]  # label_delay_days 1: the last day has not matured
    # rows of the 6 matured days whose label is known (the synthetic data leaves about 3% unknown)
    assert 0.9 * 6 * ROWS_PER_DAY < quality["rows"] < 6 * ROWS_PER_DAY
    assert any(r.startswith("no drift:") for r in result["reasons"])
    assert any(r.startswith("quality ok: roc_auc") for r in result["reasons"])
    # the champion's outputs: P(true) of its own rows, from both sources, against its reference sample
    outputs = result["prediction_drift"]
    assert outputs["drifted"] is False and outputs["task"] == "binary" and outputs["method"] == "wasserstein"
    assert outputs["rows_current"] == result["rows"] and outputs["rows_left_out"] == 0
    assert any(r.startswith("no prediction drift: prediction wasserstein") for r in result["reasons"])

    report = lake.read_text(result["report_uri"])
    assert result["report_uri"] == lake.uri(paths.monitor_report(cfg.name, DS))
    assert "Monitor of flight_delays for 2013-03-27" in report and "Evidently data drift report" in report
    assert "Quality on matured labels" in report and result["mlflow_run_url"] in report
    # the report links back to its runs and the lifecycle page
    assert f'<a href="{result["mlflow_run_url"]}">' in report
    assert '<a href="/dags/flight_delays__monitor/runs/r1">' in report
    assert '<a href="/mlops/lifecycle/flight_delays">' in report
    assert "Prediction drift (0 of 1 outputs drifted)" in report

    run = champion.tracking.client.get_run(result["mlflow_run_id"])
    assert run.data.tags[mon.TAG_OUTCOME] == "ok" and run.data.tags[mon.TAG_RETRAIN] == "false"
    assert run.data.tags[mon.TAG_MONITOR_DS] == DS and run.data.tags[mon.TAG_PIPELINE] == cfg.name
    assert run.data.metrics["quality.roc_auc"] == pytest.approx(quality["value"])
    assert run.data.metrics["drift.score.temp"] == pytest.approx(drift["columns"]["temp"]["score"])
    assert run.data.metrics["prediction_drift.score"] == pytest.approx(outputs["score"])
    assert run.data.metrics["prediction_drift.drifted"] == 0 and run.data.metrics["alarm.prediction_drift"] == 0
    history = champion.tracking.client.get_metric_history(result["mlflow_run_id"], "drift.share")
    assert {m.step for m in history} == {mon.metric_step(DS)} == {(pd.Timestamp(DS) - pd.Timestamp(0)).days}
    experiment = champion.tracking.client.get_experiment_by_name(cfg.monitor.experiment)
    assert experiment is not None and run.info.experiment_id == experiment.experiment_id

    again = run_monitor(lake, champion, cfg, links=links)
    assert again == result  # same MLflow run, same figures, same report
    # The same page in the same place; only the ids Evidently draws for its widgets differ.
    assert lake.read_text(result["report_uri"]).split("<iframe")[0] == report.split("<iframe")[0]
    assert lake.list(lake.uri("reports")) == [result["report_uri"]]


def test_a_0_3_sd_shift_of_a_numeric_feature_triggers_a_retrain(lake: Lake, champion: Champion) -> None:
    cfg = with_monitor(champion)
    write_window(lake, champion, cfg, temp_sds=0.3)
    result = run_monitor(lake, champion, cfg)
    assert result["outcome"] == "drift" and result["alarms"] == ["drift"] and result["retrain"] is True
    assert result["drift"]["critical_drifted"] == ["temp"]
    assert result["drift"]["columns"]["temp"]["score"] >= 0.2
    assert result["retrain_reason"].startswith("monitor: drift: critical column(s) temp drifted")
    assert any(r.startswith("retrain: triggering flight_delays__train") for r in result["reasons"])
    assert champion.tracking.client.get_run(result["mlflow_run_id"]).data.tags[mon.TAG_RETRAIN] == "true"


def test_the_numeric_threshold_of_the_config_applies_to_every_numeric_column(lake: Lake, champion: Champion) -> None:
    # The same 0.3 SD shift as above, judged at half a standard deviation: no column has its own threshold.
    drift = {**champion.cfg.monitor.drift.model_dump(mode="json"), "numeric_threshold": 0.5, "thresholds": {}}
    cfg = with_monitor(champion, drift=drift)
    write_window(lake, champion, cfg, temp_sds=0.3)
    result = run_monitor(lake, champion, cfg)
    assert result["drift"]["columns"]["temp"]["threshold"] == 0.5
    assert result["drift"]["columns"]["temp"]["drifted"] is False and result["retrain"] is False


def test_a_changed_category_mix_triggers_a_retrain(lake: Lake, champion: Champion) -> None:
    cfg = with_monitor(champion)
    write_window(lake, champion, cfg, b6_share=0.4)
    result = run_monitor(lake, champion, cfg)
    # The moved flights keep their old outcomes, so quality may suffer too: drift must be among the alarms.
    assert "drift" in result["alarms"] and result["retrain"] is True
    assert result["drift"]["critical_drifted"] == ["carrier"]
    assert "carrier jensenshannon" in result["retrain_reason"]


def test_a_0_05_sd_shift_does_not_trigger(lake: Lake, champion: Champion) -> None:
    cfg = with_monitor(champion)
    write_window(lake, champion, cfg, temp_sds=0.05)
    result = run_monitor(lake, champion, cfg)
    assert result["outcome"] == "ok" and result["retrain"] is False
    assert result["drift"]["columns"]["temp"]["drifted"] is False


def test_one_drift_episode_gives_one_retrain_per_cooldown(lake: Lake, champion: Champion) -> None:
    cfg = with_monitor(champion, window_days=3, drift={"columns": ["temp", "carrier", "hour"], "critical": ["temp"]})
    write_window(lake, champion, cfg, days=day_range("2013-03-21", 10), temp_sds=0.5, requests_per_day=0)
    first = run_monitor(lake, champion, cfg, ds="2013-03-23")
    assert first["outcome"] == "drift" and first["retrain"] is True

    within = run_monitor(lake, champion, cfg, ds="2013-03-26")  # 3 days later: cooldown_days is 3
    assert within["outcome"] == "drift" and within["retrain"] is False
    (why,) = [r for r in within["reasons"] if r.startswith("no retrain")]
    assert f"cool-down: the monitor run of 2013-03-23 (MLflow run {first['mlflow_run_id']})" in why

    rerun = run_monitor(lake, champion, cfg, ds="2013-03-23")  # the same DAG run again: its own trigger holds
    assert rerun["retrain"] is True and rerun["mlflow_run_id"] == first["mlflow_run_id"]

    after = run_monitor(lake, champion, cfg, ds="2013-03-27")  # 4 days after the retrain
    assert after["outcome"] == "drift" and after["retrain"] is True


def test_an_active_train_run_suppresses_the_trigger(lake: Lake, champion: Champion) -> None:
    cfg = with_monitor(champion, drift={"columns": ["temp", "carrier", "hour"], "critical": ["temp"]})
    write_window(lake, champion, cfg, temp_sds=0.5, requests_per_day=0)
    result = run_monitor(lake, champion, cfg, train_active=True)
    assert result["outcome"] == "drift" and result["retrain"] is False and result["retrain_reason"] == ""
    assert "no retrain: a flight_delays__train run is already active" in result["reasons"]
    tags = champion.tracking.client.get_run(result["mlflow_run_id"]).data.tags
    assert tags[mon.TAG_RETRAIN] == "false"  # so it holds back no later trigger


def test_retrain_disabled_or_not_a_trigger(lake: Lake, champion: Champion) -> None:
    cfg = with_monitor(
        champion,
        drift={"columns": ["temp", "carrier", "hour"], "critical": ["temp"]},
        retrain={"triggers": ["quality"]},
    )
    write_window(lake, champion, cfg, temp_sds=0.5, requests_per_day=0)
    result = run_monitor(lake, champion, cfg)
    assert result["outcome"] == "drift" and result["retrain"] is False
    assert "no retrain: alarm(s) drift not in monitor.retrain.triggers (quality)" in result["reasons"]


def test_moved_outputs_are_reported_and_alarm_only_when_configured(lake: Lake, champion: Champion) -> None:
    cfg = with_monitor(champion, drift={"columns": ["temp", "carrier", "hour"], "critical": ["temp"]})
    write_window(lake, champion, cfg, requests_per_day=0)
    # Same inputs, outputs pushed up (order kept, so roc_auc stays): what a broken model version could do.
    for ds in WINDOW:
        uri = lake.uri(paths.predictions(cfg.name, ds))
        part = lake.read_parquet(uri)
        lake.write_parquet(uri, part.assign(prediction=0.4 + 0.6 * part["prediction"]))
    reported = run_monitor(lake, champion, cfg)
    assert reported["outcome"] == "ok" and reported["alarms"] == [] and reported["retrain"] is False
    assert reported["prediction_drift"]["drifted"] is True and reported["drift"]["drifted"] is False
    assert any(r.endswith("(reported only: monitor.prediction_drift.alarm is false)") for r in reported["reasons"])
    assert "Prediction drift (1 of 1 outputs drifted)" in lake.read_text(reported["report_uri"])

    alarmed = with_monitor(
        champion,
        drift={"columns": ["temp", "carrier", "hour"], "critical": ["temp"]},
        prediction_drift={"alarm": True},
        retrain={"triggers": ["drift", "quality", "prediction_drift"], "cooldown_days": 3},
    )
    result = run_monitor(lake, champion, alarmed)
    assert result["outcome"] == "drift" and result["alarms"] == ["prediction_drift"] and result["retrain"] is True
    assert result["retrain_reason"].startswith("monitor: prediction drift: the champion's prediction moved: prediction")
    metrics = champion.tracking.client.get_run(result["mlflow_run_id"]).data.metrics
    assert metrics["alarm.prediction_drift"] == 1 and metrics["prediction_drift.drifted"] == 1
    assert metrics["prediction_drift.score"] > 0.1


# Alarms that matter: importance-weighted drift, estimated quality ----------------------------------------


def test_the_champion_carries_the_importance_and_holdout_estimate_logged_at_training(champion: Champion) -> None:
    found = mon.champion_of(champion.tracking, champion.cfg.train.model_name(champion.cfg.name))
    assert found is not None and found.version == champion.version
    # The synthetic label rises most with a late hour and carrier B6; temp plays no part in it.
    assert set(found.importance) == set(champion.spec.columns)
    assert min(found.importance["hour"], found.importance["carrier"]) > 0.03
    assert abs(found.importance["temp"]) < 0.01
    # The estimate from its own probabilities lands near the holdout's true figure (the model is calibrated).
    assert found.estimated["roc_auc"] == pytest.approx(champion.holdout_auc, abs=0.05)


def test_importance_weighting_ignores_drift_of_a_column_the_champion_does_not_use(
    lake: Lake, champion: Champion
) -> None:
    drift = {"columns": ["temp", "carrier", "hour"], "critical": [], "share_threshold": 0.3}
    write_window(lake, champion, champion.cfg, temp_sds=0.5, requests_per_day=0)
    plain = run_monitor(lake, champion, with_monitor(champion, drift=drift))
    assert plain["alarms"] == ["drift"] and plain["drift"]["drifted_columns"] == ["temp"]  # 1 of 3: 33% >= 30%

    weighted = run_monitor(lake, champion, with_monitor(champion, drift={**drift, "weighting": "importance"}))
    assert weighted["alarms"] == [] and weighted["retrain"] is False and weighted["outcome"] == "ok"
    assert weighted["drift"]["drifted_columns"] == ["temp"] and weighted["drift"]["weighted_share"] < 0.05
    assert any("weighted by the champion's importance" in r for r in weighted["reasons"])
    metrics = champion.tracking.client.get_run(weighted["mlflow_run_id"]).data.metrics
    assert metrics["drift.weighted_share"] == pytest.approx(weighted["drift"]["weighted_share"])
    page = lake.read_text(weighted["report_uri"])
    assert "<th>Weight</th>" in page and "of the champion&#x27;s importance" in page


def test_importance_weighting_alarms_on_a_column_the_champion_leans_on(lake: Lake, champion: Champion) -> None:
    drift = {"columns": ["temp", "carrier", "hour"], "critical": [], "weighting": "importance"}
    cfg = with_monitor(champion, drift=drift)
    write_window(lake, champion, cfg, b6_share=0.4, requests_per_day=0)
    result = run_monitor(lake, champion, cfg)
    assert "drift" in result["alarms"] and result["retrain"] is True
    assert result["drift"]["drifted_columns"] == ["carrier"] and result["drift"]["weighted_share"] > 0.3


def test_plain_drift_can_be_reported_only(lake: Lake, champion: Champion) -> None:
    cfg = with_monitor(champion, drift={"columns": ["temp", "carrier", "hour"], "critical": ["temp"], "alarm": False})
    write_window(lake, champion, cfg, temp_sds=0.5, requests_per_day=0)
    result = run_monitor(lake, champion, cfg)
    assert result["drift"]["drifted"] is True and result["alarms"] == [] and result["retrain"] is False
    assert any(r.endswith("(reported only: monitor.drift.alarm is false)") for r in result["reasons"])


def test_a_champion_whose_data_is_max_age_days_old_is_stale_and_asks_for_a_challenger(
    lake: Lake, champion: Champion
) -> None:
    found = mon.champion_of(champion.tracking, champion.cfg.train.model_name(champion.cfg.name))
    assert found is not None and found.trained_through == TRAIN_END  # from the version's mlops.window tag
    cfg = with_monitor(champion, retrain={"max_age_days": 8})
    write_window(lake, champion, cfg, requests_per_day=0)  # unchanged inputs: no other alarm
    fresh = run_monitor(lake, champion, cfg)  # DS is 7 days after TRAIN_END
    assert fresh["outcome"] == "ok" and fresh["alarms"] == [] and fresh["retrain"] is False
    assert fresh["champion_age"] == {
        "version": champion.version, "trained_through": TRAIN_END, "days": 7, "max_days": 8, "stale": False
    }  # fmt: skip
    assert f"champion fresh: champion v{champion.version} trained on data through {TRAIN_END}, 7 day(s) ago" in (
        " ".join(fresh["reasons"])
    )

    stale = run_monitor(lake, champion, with_monitor(champion, retrain={"max_age_days": 7}))
    assert stale["outcome"] == "stale" and stale["alarms"] == ["age"] and stale["retrain"] is True
    assert stale["retrain_reason"] == (
        f"monitor: stale champion: champion v{champion.version} trained on data through {TRAIN_END}, 7 day(s) ago "
        "(max_age_days 7): a challenger on fresh data is due"
    )
    metrics = champion.tracking.client.get_run(stale["mlflow_run_id"]).data.metrics
    assert metrics["alarm.age"] == 1 and metrics["champion.age_days"] == 7

    # Without the setting there is no age check (and no age figure).
    plain = run_monitor(lake, champion, with_monitor(champion))
    assert plain["champion_age"] is None and plain["outcome"] == "ok"
    assert "champion.age_days" not in champion.tracking.client.get_run(plain["mlflow_run_id"]).data.metrics


def test_outputs_squeezed_towards_uncertainty_are_an_estimated_quality_drop(lake: Lake, champion: Champion) -> None:
    estimated = {"enabled": True, "max_drop": 0.03, "min_rows": 500}
    triggers = {"triggers": ["drift", "quality", "estimated_quality"], "cooldown_days": 3}
    drift = {"columns": ["temp", "carrier", "hour"], "critical": ["temp"]}
    cfg = with_monitor(champion, drift=drift, estimated_quality=estimated, retrain=triggers)
    write_window(lake, champion, cfg, requests_per_day=0)
    calm = run_monitor(lake, champion, cfg)
    assert calm["outcome"] == "ok" and calm["estimated_quality"]["degraded"] is False
    assert abs(calm["estimated_quality"]["drop"]) < 0.03

    # The champion grows unsure of every row (its outputs pulled towards 0.5, order kept): without a single label
    # its expected ROC AUC falls.
    for ds in WINDOW:
        uri = lake.uri(paths.predictions(cfg.name, ds))
        part = lake.read_parquet(uri)
        lake.write_parquet(uri, part.assign(prediction=0.5 + 0.2 * (part["prediction"] - 0.5)))
    for ds in WINDOW:  # and no outcome has landed: the quality check cannot see it
        lake.delete(lake.uri(paths.labels_partition(cfg.name, ds)))
    result = run_monitor(lake, champion, cfg)
    assert result["outcome"] == "estimated_drop" and result["alarms"] == ["estimated_quality"]
    assert result["retrain"] is True and result["retrain_reason"].startswith("monitor: estimated quality drop: roc_auc")
    assert result["estimated_quality"]["drop"] > 0.05 and result["estimated_quality"]["rows"] >= 500
    metrics = champion.tracking.client.get_run(result["mlflow_run_id"]).data.metrics
    assert metrics["alarm.estimated_quality"] == 1 and metrics["estimated_quality.drop"] > 0.05
    assert "Estimated quality (" in lake.read_text(result["report_uri"])


def test_the_alarm_record_counts_the_retrains_the_monitor_triggered_that_passed_the_gates(champion: Champion) -> None:
    cfg, client = champion.cfg, champion.tracking.client
    assert mon.alarm_record(champion.tracking, cfg).retrains == 0  # the fixture's run was asked for by hand
    experiment_id = client.get_experiment_by_name(cfg.name).experiment_id
    for outcome in ("passed", "failed", "forced", None):  # None: still training
        tags = {"mlops.reason": "monitor 2013-03-27: drift: 1 of 3 columns drifted (report file:///r.html)"}
        client.create_run(experiment_id, tags=tags | ({"mlops.gate_outcome": outcome} if outcome else {}))
    record = mon.alarm_record(champion.tracking, cfg)
    assert (record.retrains, record.promoted) == (3, 1) and record.share == pytest.approx(1 / 3)
    assert record.line() == (
        "alarms followed by a promoted model: 1 of the 3 retrain(s) the monitor triggered passed the gates (33%)"
    )


# Quality ----------------------------------------------------------------------------------------------------


def test_degraded_labels_are_a_quality_drop_that_triggers_a_retrain(lake: Lake, champion: Champion) -> None:
    cfg = with_monitor(champion, drift={"columns": ["temp", "carrier", "hour"], "critical": ["temp"]})
    write_window(lake, champion, cfg, requests_per_day=0)
    # The outcomes turn out otherwise than the champion learnt: half the labels are flipped.
    label = cfg.features.label.name
    rng = np.random.default_rng(5)
    for ds in WINDOW:  # flight_delays' labels come from the outcomes feed (landed the same day in these tests)
        uri = lake.uri(paths.labels(cfg.name, ds))
        part = lake.read_parquet(uri)
        flip = pd.Series(rng.random(len(part)) < 0.5)
        part[label] = part[label].mask(flip, ~part[label])
        lake.write_parquet(uri, part)
    result = run_monitor(lake, champion, cfg)
    assert result["outcome"] == "quality_drop" and result["alarms"] == ["quality"] and result["retrain"] is True
    quality = result["quality"]
    assert quality["degraded"] is True and quality["drop"] > 0.1
    assert quality["value"] == pytest.approx(quality["baseline"] - quality["drop"])
    assert result["retrain_reason"].startswith("monitor: quality drop: roc_auc ")
    assert result["drift"]["drifted"] is False


# Insufficient data and no champion ------------------------------------------------------------------------


def test_no_production_data_is_insufficient_data(lake: Lake, champion: Champion) -> None:
    cfg = with_monitor(champion)
    result = run_monitor(lake, champion, cfg)
    assert result["outcome"] == "insufficient_data" and result["retrain"] is False and result["alarms"] == []
    assert result["insufficient"]["drift"] == (
        "no inference log and no predictions in the window 2013-03-21..2013-03-27"
    )
    assert "quality.min_rows is 500" in result["insufficient"]["quality"]
    assert result["drift"] is None and result["quality"] is None and result["rows"] == 0
    assert "INSUFFICIENT DATA" in lake.read_text(result["report_uri"])


def test_too_few_rows_is_insufficient_data(lake: Lake, champion: Champion) -> None:
    cfg = with_monitor(champion)
    write_window(lake, champion, cfg, days=WINDOW[-3:], rows_per_day=20, requests_per_day=10)
    result = run_monitor(lake, champion, cfg)
    assert result["outcome"] == "insufficient_data" and result["retrain"] is False
    assert result["rows_seen"] == {"inference_log": 30, "predictions": 60}
    assert "too few rows to judge drift: reference" in result["insufficient"]["drift"]
    assert "current 90 (need 200 each)" in result["insufficient"]["drift"]


def test_no_matured_labels_is_insufficient_data(lake: Lake, champion: Champion) -> None:
    cfg = with_monitor(champion, drift={"columns": ["temp", "carrier", "hour"], "critical": ["temp"]})
    write_window(lake, champion, cfg, requests_per_day=0)
    for ds in WINDOW:  # the outcomes of the week have not landed yet
        lake.delete(lake.uri(paths.labels_partition(cfg.name, ds)))
    result = run_monitor(lake, champion, cfg)
    assert result["outcome"] == "insufficient_data" and result["retrain"] is False
    assert result["drift"] is not None and result["drift"]["drifted"] is False
    why = result["insufficient"]["quality"]
    assert why.startswith("0 matured labelled row(s) predicted by champion v")
    assert f"{6 * ROWS_PER_DAY} without a known label yet" in why

    late = with_monitor(champion, quality={"label_delay_days": 7})
    result = run_monitor(lake, champion, late)
    assert "no day of the window has matured labels" in result["insufficient"]["quality"]


def test_no_champion_is_its_own_outcome(lake: Lake, champion: Champion) -> None:
    data = champion.cfg.model_dump(mode="json")
    data["train"]["registered_model_name"] = f"never_deployed_{uuid.uuid4().hex[:8]}"
    cfg = PipelineConfig.model_validate(data)
    write_window(lake, champion, champion.cfg, days=WINDOW[-1:], requests_per_day=0)
    result = run_monitor(lake, champion, cfg)
    assert result["outcome"] == "no_champion" and result["retrain"] is False and result["champion_version"] is None
    assert "has no version with alias 'champion'" in result["reasons"][0]
    assert lake.exists(result["report_uri"])
    assert champion.tracking.client.get_run(result["mlflow_run_id"]).data.tags[mon.TAG_OUTCOME] == "no_champion"


# Plain parts ------------------------------------------------------------------------------------------------


def test_metric_step_is_days_since_1970() -> None:
    assert mon.metric_step("1970-01-02") == 1


def test_reference_columns_are_a_sample_of_the_training_days(champion: Champion) -> None:
    ref = champion.reference
    cfg = champion.cfg
    assert {"ds", *cfg.features.key, cfg.features.timestamp, *champion.spec.columns, "delayed", "prediction"} <= set(
        ref.columns
    )
    assert ref["ds"].max() == "2013-03-16"  # train + validation days: the 4 holdout days are left out
    offline = tr.positive_scores(champion.model, ref[champion.spec.columns])
    np.testing.assert_allclose(ref["prediction"].to_numpy(), offline)
    assert not math.isnan(float(ref["prediction"].mean()))
