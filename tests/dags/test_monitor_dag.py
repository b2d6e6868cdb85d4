"""`<p>__monitor` with dag.test(): a drifted window triggers `<p>__train` once, with the reason and the report."""

from __future__ import annotations

from airflow_mlops import settings
from airflow_mlops.core.lake import paths
from airflow_mlops.core.lake.storage import open_lake
from tests.dags.test_train_dag import client, env, run_train, xcom  # noqa: F401  (env is a fixture)
from tests.fixtures.training_data import day_range, synthetic_features, write_partitions

PIPELINE = "flight_delays"
LIVE = day_range("2013-03-21", 4)


def run_monitor(date: str):
    from airflow_mlops.config import pipeline_by_name
    from airflow_mlops.factory import build_monitor_dag

    dr = build_monitor_dag(pipeline_by_name(PIPELINE)).test(logical_date=None, run_conf={"date": date})
    return dr, {ti.task_id: ti for ti in dr.get_task_instances()}


def test_drift_triggers_one_retrain_with_reason_and_report(airflow_db, env) -> None:  # noqa: F811
    from airflow.models import DagRun
    from airflow.utils.session import create_session

    from airflow_mlops.config import pipeline_by_name
    from airflow_mlops.core.registry.tracking import Tracking
    from airflow_mlops.core.score import score_partition

    server, _ = env
    cfg = pipeline_by_name(PIPELINE)
    lake = open_lake(str(settings.lake_root()))
    with create_session() as session:  # runs other tests triggered stay queued in the shared test database
        session.query(DagRun).filter(DagRun.dag_id == cfg.dag_id("train")).delete()

    dr, tis = run_monitor(LIVE[-1])
    assert str(dr.state) == "success" and xcom(tis["monitor"])["outcome"] == "no_champion"
    assert str(tis["trigger_retrain"].state) == "skipped"

    assert str(run_train()[0].state) == "success"
    client(server).set_registered_model_alias(PIPELINE, "champion", "1")
    # Four live days where a carrier the champion leans on took over most flights (the shipped monitor weighs each
    # column's drift by the champion's importance of it), scored by the champion.
    live = synthetic_features(cfg, LIVE, rows_per_day=200, seed=11)
    live.loc[live.index % 5 != 0, "carrier"] = "B6"
    write_partitions(lake, cfg, live)
    tracking = Tracking(server.uri)
    for ds in LIVE:
        score_partition(lake, cfg, tracking, ds)

    dr, tis = run_monitor(LIVE[-1])
    assert str(dr.state) == "success", {k: str(t.state) for k, t in tis.items()}
    result = xcom(tis["monitor"])
    assert "drift" in result["alarms"] and result["retrain"] is True, result["reasons"]
    assert "carrier jensenshannon" in " ".join(result["reasons"])
    assert lake.exists(lake.uri(paths.monitor_report(PIPELINE, LIVE[-1])))
    assert result["report_url"].endswith(paths.monitor_report(PIPELINE, LIVE[-1]))
    assert str(tis["trigger_retrain"].state) == "success"
    with create_session() as session:
        runs = session.query(DagRun).filter(DagRun.dag_id == cfg.dag_id("train")).all()
        (train_run,) = [r for r in runs if r.run_id.startswith("monitor__")]
        conf = dict(train_run.conf)
    assert train_run.run_id == f"monitor__{LIVE[-1]}" and conf["end_date"] == LIVE[-1]
    assert "carrier" in conf["reason"] and paths.monitor_report(PIPELINE, LIVE[-1]) in conf["reason"]

    # The same episode the next day: no second retrain (that train run is still queued, and the cool-down).
    dr, tis = run_monitor(LIVE[-1])
    again = xcom(tis["monitor"])
    assert "drift" in again["alarms"] and again["retrain"] is False
    assert str(tis["trigger_retrain"].state) == "skipped"
