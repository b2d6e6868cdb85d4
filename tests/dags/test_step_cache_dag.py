"""The step cache with dag.test(): a rerun of a finished day starts no task after `step_cache` and emits no asset
event; force_rerun, a changed landing file or a changed config section run the day's tasks again."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import yaml

from airflow_mlops import settings
from airflow_mlops.core.lake.storage import open_lake
from tests.dags.test_ingest_dag import asset_events, task_states
from tests.dags.test_train_dag import client, env, run_train, xcom  # noqa: F401  (env is a fixture)

PIPELINE, DAY = "flight_delays", "2013-03-21"


def cfg() -> Any:
    from airflow_mlops.config import pipeline_by_name

    return pipeline_by_name(PIPELINE)


def run_ingest(force: bool = False) -> tuple[Any, dict[str, Any]]:
    from airflow_mlops.factory import build_ingest_dag

    day = datetime.fromisoformat(DAY).replace(tzinfo=UTC)
    dr = build_ingest_dag(cfg()).test(logical_date=day, run_conf={"force_rerun": force})
    return dr, {ti.task_id: ti for ti in dr.get_task_instances()}


def forget_train_runs() -> None:
    """dag.test() runs no scheduler: a retrain the monitor triggered stays queued, and an active training run
    is part of the monitor's fingerprint (under a scheduler it would have run and ended)."""
    from airflow.models import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        session.query(DagRun).filter(DagRun.dag_id == cfg().dag_id("train")).delete()


def first_run_of_the_day() -> None:
    """The day as the asset events would run it: ingest, then score of its partition, then monitor of it."""
    from airflow_mlops.factory import build_monitor_dag, build_score_dag

    forget_train_runs()  # runs other tests triggered stay queued in the shared test database
    dr, tis = run_ingest()
    assert str(dr.state) == "success", task_states(dr)
    assert xcom(tis["step_cache"])["cached"] is False and xcom(tis["step_cache"])["first_to_run"] == "ingest_flights"
    assert str(build_score_dag(cfg()).test(logical_date=None, run_conf={"partition": DAY}).state) == "success"
    assert str(build_monitor_dag(cfg()).test(logical_date=None, run_conf={"date": DAY}).state) == "success"
    forget_train_runs()


def test_a_finished_day_reruns_nothing_until_forced_or_changed(airflow_db, env) -> None:  # noqa: F811
    from airflow_mlops.core.demo import feed_day
    from airflow_mlops.core.ingest.steps import landing_uri

    server, pipelines = env
    assert str(run_train()[0].state) == "success"
    client(server).set_registered_model_alias(PIPELINE, "champion", "1")
    lake = open_lake(str(settings.lake_root()))
    feed_day(lake, cfg(), DAY)
    first_run_of_the_day()
    events = len(asset_events(cfg().features_asset_name))

    # Nothing changed: every task after step_cache is skipped without running, and no asset event is emitted.
    dr, tis = run_ingest()
    states = task_states(dr)
    assert str(dr.state) == "success" and states.pop("step_cache") == "success", states
    assert set(states.values()) == {"skipped"}, xcom(tis["step_cache"])
    never = {t: (ti.try_number, ti.start_date, ti.hostname, ti.pid, ti.queued_dttm) for t, ti in tis.items()}
    assert all(not ti.hostname and ti.pid is None for t, ti in tis.items() if t != "step_cache"), never
    cached = xcom(tis["step_cache"])
    steps = [s["step"] for s in cached["steps"]]
    sources = list(cfg().sources)
    assert cached["cached"] is True
    assert steps == [f"{k}_{s}" for s in sources for k in ("ingest", "validate")] + ["features", "score", "monitor"]
    assert all(s["outputs"] and s["recorded_at"] for s in cached["steps"] if s["step"] != "monitor")
    assert len(asset_events(cfg().features_asset_name)) == events

    # Forced: every task runs (each step runs its work again) and the features event is emitted.
    dr, tis = run_ingest(force=True)
    assert set(task_states(dr).values()) == {"success"}, task_states(dr)
    assert xcom(tis["step_cache"])["why"] == "force_rerun"
    assert len(asset_events(cfg().features_asset_name)) == events + 1
    forget_train_runs()  # nothing else changed: cached again (the forced run recorded the same fingerprints)
    assert set(task_states(run_ingest()[0]).values()) == {"success", "skipped"}

    # A changed config section of a downstream step: the chain has work, so the tasks run (those upstream of it
    # from their records) and the event triggers what must rerun.
    data = yaml.safe_load((pipelines / f"{PIPELINE}.yaml").read_text())
    data["monitor"]["window_days"] = data["monitor"].get("window_days", 7) + 1
    (pipelines / f"{PIPELINE}.yaml").write_text(yaml.safe_dump(data))
    dr, tis = run_ingest()
    assert set(task_states(dr).values()) == {"success"}, task_states(dr)
    assert xcom(tis["step_cache"])["first_to_run"] == "monitor"
    assert len(asset_events(cfg().features_asset_name)) == events + 2

    # A changed landing file: the first step reruns.
    uri = landing_uri(lake, cfg(), sources[0], DAY)
    lake.write_bytes(uri, lake.read_bytes(uri) + b"\n")
    dr, tis = run_ingest()
    assert set(task_states(dr).values()) == {"success"}, task_states(dr)
    check = xcom(tis["step_cache"])
    assert check["cached"] is False and check["first_to_run"] == f"ingest_{sources[0]}" and check["steps"] == []
