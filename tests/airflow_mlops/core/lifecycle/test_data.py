"""The lifecycle page's data, read from a real MLflow server and a small lake the way the DAGs wrote them."""

from __future__ import annotations

import uuid

import pytest

from airflow_mlops.config import pipeline_by_name
from airflow_mlops.core.lake.storage import open_lake
from airflow_mlops.core.lifecycle.data import TtlCache, read_pipeline
from airflow_mlops.core.registry.tracking import Tracking
from tests.fixtures.lifecycle_history import write_history


@pytest.fixture(scope="module")
def history(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory):
    """flight_delays under a model name of its own on the session's server, its history and lake."""
    cfg = pipeline_by_name("flight_delays")
    unique = f"fd_{uuid.uuid4().hex[:8]}"
    cfg = cfg.model_copy(update={"name": unique, "train": cfg.train.model_copy(update={"registered_model_name": None})})
    tracking = Tracking(mlflow_server)
    lake = open_lake(str(tmp_path_factory.mktemp("lake")))
    written = write_history(tracking, lake, cfg, versions=4, monitor_days=10, every=4)
    return cfg, tracking, lake, written


def test_versions_timeline_and_monitoring_match_what_was_written(history) -> None:
    cfg, tracking, lake, written = history
    data = read_pipeline(tracking, lake, cfg)
    assert data.errors == ()
    assert [v.version for v in data.versions] == ["4", "3", "2", "1"]
    assert data.champion == written.champion == "2" and data.previous is None
    v = {v.version: v for v in data.versions}
    assert v["1"].trigger == "manual" and v["1"].gate_outcome == "passed" and v["1"].metric == pytest.approx(0.701)
    assert v["2"].trigger == "forced" and v["2"].forced_by == "alice" and v["2"].approved_by == "bob"
    assert v["3"].trigger == "monitor" and v["3"].monitor_report == (
        f"reports/{cfg.name}/monitor/date=2013-02-15/report.html"
    )
    assert v["3"].rolled_back == "smoke test failed"
    assert v["4"].gate_outcome == "failed" and [g.name for g in v["4"].gates if not g.passed] == ["min_primary"]
    assert v["1"].window == "2012-12-19..2013-02-01" and v["1"].content_hash == f"sha256:{1:064x}"
    assert v["1"].run is not None and v["1"].run.dag_id == f"{cfg.name}__train"
    assert "champion" in v["2"].aliases

    actions = [(r.action, r.champion) for r in data.audit]
    assert ("approve", "2") in actions and actions[-1] == ("rollback", "2")
    assert [a for a, _ in actions].count("promote") == 3
    assert data.champion_since() == data.audit[-1].when

    assert [p.ds for p in data.monitoring] == written.monitor_days
    assert [p.ds for p in data.monitoring if p.retrain] == written.alarm_days
    first = data.monitoring[0]
    assert first.drift_share == pytest.approx(0.1) and first.baseline == pytest.approx(0.71)
    assert set(first.column_scores) >= {"dep_delay", "carrier"} and first.run.dag_id == f"{cfg.name}__monitor"

    by_source = {val.source: val for val in data.validation}
    assert set(by_source) == set(cfg.partitioned_sources)
    ((source, days),) = written.quarantined.items()
    assert by_source[source].latest_ds == days[0] and by_source[source].latest_passed is False
    assert [q.ds for q in by_source[source].quarantined] == days and by_source[source].quarantined[0].open
    assert [(s, q.ds) for s, q in data.open_quarantines()] == [(source, days[0])]
    other = next(val for name, val in by_source.items() if name != source)
    assert other.latest_passed is True and other.quarantined == ()


def test_an_unknown_pipeline_and_an_unreadable_lake_leave_empty_sections(history) -> None:
    cfg, tracking, _, _ = history
    fresh = cfg.model_copy(update={"name": f"none_{uuid.uuid4().hex[:8]}"})
    data = read_pipeline(tracking, None, fresh)
    assert data.versions == () and data.champion is None and data.monitoring == () and data.errors == ()

    class Broken:
        def partitions(self, *args: object) -> list[str]:
            raise OSError("lake down")

    data = read_pipeline(tracking, Broken(), cfg)  # type: ignore[arg-type]
    assert data.validation == () and data.errors and "lake down" in data.errors[0]
    assert data.champion == "2"  # the registry part still shows


def test_cache_reuses_a_value_until_it_expires() -> None:
    now = [0.0]
    cache: TtlCache[str, int] = TtlCache(10, clock=lambda: now[0])
    calls: list[int] = []

    def compute() -> int:
        calls.append(1)
        return len(calls)

    assert cache.get("a", compute) == 1 and cache.get("a", compute) == 1
    now[0] = 10.5
    assert cache.get("a", compute) == 2
    cache.clear()
    assert cache.get("a", compute) == 3


def test_prediction_drift_and_a_regression_metric_are_read_where_the_monitor_logged_them(
    mlflow_server: str,
) -> None:
    """nyc_weather (regression, rmse): runs before prediction drift existed read as None, the later ones
    with their score and verdict; the champion's holdout and the quality figures are rmse."""
    cfg = pipeline_by_name("nyc_weather")
    assert cfg.train.task == "regression" and cfg.train.metric.primary == "rmse"
    cfg = cfg.model_copy(
        update={
            "name": f"nw_{uuid.uuid4().hex[:8]}",
            "train": cfg.train.model_copy(update={"registered_model_name": None}),
        }
    )
    tracking = Tracking(mlflow_server)
    written = write_history(tracking, None, cfg, versions=3, monitor_days=9, prediction_from=3)
    data = read_pipeline(tracking, None, cfg)
    assert data.errors == () and data.primary_metric == "rmse"
    champion = data.version(data.champion)
    assert champion is not None and champion.metric == pytest.approx(0.70 + int(champion.version) / 1000)

    scores = {p.ds: p.prediction_drift for p in data.monitoring}
    assert [ds for ds, s in scores.items() if s is None] == written.monitor_days[:3]
    assert {ds: s for ds, s in scores.items() if s is not None} == pytest.approx(written.prediction_scores)
    assert [p.ds for p in data.monitoring if p.prediction_drifted] == written.prediction_drifted != []
    assert [p.prediction_drifted for p in data.monitoring[:3]] == [None, None, None]
    assert data.monitoring[0].quality == pytest.approx(0.68) and data.monitoring[0].baseline == pytest.approx(0.71)
    first, last = data.monitoring[0], data.monitoring[-1]
    assert first.weighted_share is None and first.alarm_retrains is None  # older runs predate them
    assert last.weighted_share == pytest.approx(last.drift_share / 2)
    assert (last.alarm_retrains, last.alarm_promoted) == (8.0, 4.0)
    assert last.estimated is None  # a regression has no probabilities to estimate from
