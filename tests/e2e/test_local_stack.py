"""End to end: the local stack lands three days and runs flight_delays__ingest over them through the scheduler."""

from __future__ import annotations

from datetime import date

import pytest

from airflow_mlops.config import pipeline_by_name
from airflow_mlops.stack import control, demo, supervisor
from airflow_mlops.stack.airflow_api import api_for, run_days, summarize_runs
from airflow_mlops.stack.components import COMPONENTS
from airflow_mlops.stack.control import down, up
from airflow_mlops.stack.health import http_json
from airflow_mlops.stack.runs import day_range
from airflow_mlops.stack.settings import StackConfig
from tests.e2e.conftest import HISTORY_END, OTHER, PIPELINE, START

DAG_ID = f"{PIPELINE}__ingest"
END = date(2013, 1, 3)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
]


def _alive(pids: set[int], sessions: set[int]) -> list[supervisor.Proc]:
    """Processes still alive among the given ones (same pid in the same session: not a reused pid)."""
    return [p for p in supervisor.processes() if p.pid in pids and p.session in sessions]


@pytest.mark.timeout(1800)  # a loaded 2-core machine: start-up and the runs' imports can take minutes
def test_stack_runs_ingest_backfill_through_the_scheduler(stack: StackConfig) -> None:
    up(stack)
    rows = {r.name: r for r in control.status(stack)}
    assert all(rows[name].pid for name in COMPONENTS), rows
    leaders = {rows[name].pid for name in COMPONENTS}
    status, health = http_json(f"{stack.model_server_url}/health")
    assert status == 200 and health["models"] == {PIPELINE: None, OTHER: None}  # up, no champion yet

    # `up` again starts nothing new.
    up(stack)
    assert {r.name: r.pid for r in control.status(stack)} == {name: rows[name].pid for name in COMPONENTS}

    # The demo's own code: land the days, backfill through the REST API, wait, summarize (0: all succeeded).
    assert demo.ingest_demo(stack, PIPELINE, START, END) == 0
    runs = api_for(stack).dag_runs(DAG_ID, START, END)

    days = [d.isoformat() for d in day_range(START, END)]
    assert run_days(runs) == dict.fromkeys(days, "success")
    assert {r["run_type"] for r in runs} == {"backfill"}

    raw = demo.lake_partitions(stack, "raw", PIPELINE)
    for source in pipeline_by_name(PIPELINE).partitioned_sources:
        assert raw.get(source) == days, f"raw/{PIPELINE}/{source}: {raw.get(source)}"
    features = demo.lake_partitions(stack, "features", PIPELINE)
    assert sorted({d for dates in features.values() for d in dates}) == days, features
    assert demo.lake_partitions(stack, "quarantine", PIPELINE) == {}

    # Every process of the components' sessions (API and executor workers, parsers...) must be gone.
    pids = {p.pid for p in supervisor.processes() if p.session in leaders}
    assert len(pids) > len(leaders)
    stopped = down(stack)
    assert sorted(stopped) == sorted(COMPONENTS)
    assert _alive(pids, leaders) == []
    assert supervisor.stack_processes(stack) == []
    assert [supervisor.running_pid(stack, name) for name in COMPONENTS] == [None] * len(COMPONENTS)


@pytest.mark.timeout(2400)
def test_main_job_closes_the_loop_through_the_scheduler(stack: StackConfig, main_job: demo.LoopReport) -> None:
    """The main job on a short live range: first model, nightly ingest, score and monitor, then the drift the
    monitor sees (mid-February weather against the January reference) retrains and redeploys through Airflow,
    once: a later check falls in the cool-down. The two days' ingests run at once, so their asset events may
    reach score and monitor in one run (which monitors the newer day): either day may be the one that alarms."""
    from mlflow import MlflowClient

    history_end = HISTORY_END
    report = main_job
    assert report.failed() == []
    runs = report.runs
    live = {day: state for day, state in run_days(runs[DAG_ID]).items() if day > history_end.isoformat()}
    assert live == {"2013-02-15": "success", "2013-02-16": "success"}
    train_ids = [r["dag_run_id"] for r in runs[f"{PIPELINE}__train"]]
    retrains = [run_id for run_id in train_ids if run_id.startswith("monitor__")]
    assert len(train_ids) == 2 and len(retrains) == 1, train_ids
    alarm_day = retrains[0].removeprefix("monitor__")
    assert alarm_day in live, retrains
    assert summarize_runs(runs[f"{PIPELINE}__deploy"]) == {"success": 2}

    client = MlflowClient(stack.mlflow_url, registry_uri=stack.mlflow_url)  # not a registry URI set by other tests
    name = pipeline_by_name(PIPELINE).train.model_name(PIPELINE)
    assert client.get_model_version_by_alias(name, "champion").version == "2"
    assert client.get_model_version_by_alias(name, "previous").version == "1"
    status, served = http_json(f"{stack.model_server_url}/health")
    assert status == 200 and served["models"] == {PIPELINE: "2", OTHER: None}, served

    experiment = client.get_experiment_by_name(f"{PIPELINE}-monitoring")
    monitored = {
        r.data.tags["mlops.monitor_ds"]: r.data.tags
        for r in client.search_runs([experiment.experiment_id], max_results=100)
    }
    assert monitored[alarm_day]["mlops.outcome"] == "drift"
    assert monitored[alarm_day]["mlops.retrain_triggered"] == "true"
    assert all(tags["mlops.retrain_triggered"] == "false" for ds, tags in monitored.items() if ds != alarm_day)
    assert "Champion history" in demo.summary(stack, PIPELINE, report)
