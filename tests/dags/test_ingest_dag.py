"""`<p>__ingest` run for real with dag.test(): real 2013 days, reruns, and bad batches."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from airflow_mlops.core.ingest.steps import landing_uri
from airflow_mlops.core.lake import paths
from airflow_mlops.core.lake.hashing import frame_hash
from airflow_mlops.factory import build_ingest_dag
from tests.fixtures.bad_corpus import BAD_CASES, EXPECTED

DAYS = ["2013-01-01", "2013-01-02"]


def run(dag, ds: str):
    return dag.test(logical_date=datetime.fromisoformat(ds).replace(tzinfo=UTC))


def task_states(dr) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}


def asset_events(name: str) -> list[dict]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id).where(AssetModel.name == name)
        )
        return [dict(e.extra) for e in rows]


def test_real_days_and_idempotent_rerun(airflow_db, fed_lake, flights_cfg) -> None:
    lake = fed_lake(DAYS)
    dag = build_ingest_dag(flights_cfg)
    for ds in DAYS:
        dr = run(dag, ds)
        assert str(dr.state) == "success", task_states(dr)
        assert set(task_states(dr).values()) == {"success"}
    hashes = {ds: frame_hash(lake.read_parquet(lake.uri(paths.features(flights_cfg.name, ds)))) for ds in DAYS}
    listing = lake.list(lake.uri("features")) + lake.list(lake.uri("raw"))

    events = asset_events(flights_cfg.features_asset_name)
    mine = [e for e in events if e.get("uri", "").startswith(str(lake.root))]
    assert {e["partition"] for e in mine} == set(DAYS)
    assert {e["partition"]: e["content_hash"] for e in mine} == hashes
    assert all(e["rows"] > 500 for e in mine)

    dr = run(dag, DAYS[1])
    assert str(dr.state) == "success"
    assert frame_hash(lake.read_parquet(lake.uri(paths.features(flights_cfg.name, DAYS[1])))) == hashes[DAYS[1]]
    assert lake.list(lake.uri("features")) + lake.list(lake.uri("raw")) == listing


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_batch_fails_the_run_and_is_quarantined(case, airflow_db, fed_lake, flights_cfg) -> None:
    lake = fed_lake(DAYS)
    dag = build_ingest_dag(flights_cfg)
    assert str(run(dag, DAYS[0]).state) == "success"
    good_prev = frame_hash(lake.read_parquet(lake.uri(paths.features(flights_cfg.name, DAYS[0]))))
    landing = landing_uri(lake, flights_cfg, "flights", DAYS[1])
    lake.write_bytes(landing, BAD_CASES[case](lake.read_bytes(landing)))

    dr = run(dag, DAYS[1])
    states = task_states(dr)
    stage = EXPECTED[case][0]
    assert str(dr.state) == "failed"
    assert states[f"{stage}_flights"] == "failed", states
    assert states["build_features"] == "upstream_failed"
    # failed fast, without retries: a bad file stays bad
    ti = next(t for t in dr.get_task_instances() if t.task_id == f"{stage}_flights")
    assert ti.try_number == 1
    quarantined = lake.list(lake.uri(paths.quarantine(flights_cfg.name, "flights", DAYS[1])))
    assert {u.rsplit("/", 1)[-1] for u in quarantined} >= {
        "report.html",
        "validation.json" if stage == "validate" else "error.json",
    }
    assert not lake.exists(lake.uri(paths.features(flights_cfg.name, DAYS[1])))
    assert frame_hash(lake.read_parquet(lake.uri(paths.features(flights_cfg.name, DAYS[0])))) == good_prev


def test_a_feature_build_error_fails_the_task_at_once(airflow_db, fed_lake, flights_cfg, tmp_path, monkeypatch) -> None:
    """A join that renames a column onto an existing base column cannot build features on any retry."""
    import yaml

    from airflow_mlops import settings
    from airflow_mlops.config import pipeline_by_name

    data = yaml.safe_load((settings.include_dir() / "pipelines" / "flight_delays.yaml").read_text())
    data["features"]["joins"][1]["columns"]["seats"] = "distance"  # flights already has distance
    data["monitor"]["drift"]["columns"].remove("plane_seats")
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / "flight_delays.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.setenv(settings.ENV_PIPELINES_DIR, str(pipelines))
    fed_lake(DAYS[:1])
    cfg = pipeline_by_name("flight_delays")
    assert cfg.retries == 2

    dr = run(build_ingest_dag(cfg), DAYS[0])
    states = task_states(dr)
    assert str(dr.state) == "failed" and states["build_features"] == "failed", states
    assert all(state == "success" for task, state in states.items() if task != "build_features"), states
    ti = next(t for t in dr.get_task_instances() if t.task_id == "build_features")
    assert ti.try_number == 1  # not retried: a retry cannot fix it
