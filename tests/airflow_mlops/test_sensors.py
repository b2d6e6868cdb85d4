"""LandingFileSensor and its trigger: deferral until the file lands, and a timeout when it never does."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime

import pytest

from airflow_mlops.core.lake import paths
from airflow_mlops.triggers import LandingFileTrigger

DS = "2013-03-01"


def run_sensor_only(flights_cfg, timeout: float, deferrable: bool = True):
    """Run the real ingest DAG with every task but the flights sensor marked successful."""
    from airflow_mlops.factory import build_ingest_dag

    dag = build_ingest_dag(flights_cfg)
    sensor = dag.get_task("wait_for_flights")
    sensor.poke_interval, sensor.timeout, sensor.deferrable, sensor.retries = 1, timeout, deferrable, 0
    dr = dag.test(logical_date=datetime(2013, 3, 1, tzinfo=UTC), mark_success_pattern=r"(?!wait_for_flights$).*")
    return {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}["wait_for_flights"]


def landing(lake) -> str:
    return lake.uri(paths.landing("flight_delays", f"flights/{DS}.csv"))


def test_trigger_fires_when_the_file_lands(lake_root) -> None:
    from airflow_mlops.core.lake.storage import open_lake

    lake = open_lake(str(lake_root))
    trigger = LandingFileTrigger(uri=landing(lake), lake_conn_id="mlops_storage", poke_interval=0.2)
    assert trigger.serialize() == (
        "airflow_mlops.triggers.LandingFileTrigger",
        {"uri": landing(lake), "lake_conn_id": "mlops_storage", "poke_interval": 0.2},
    )

    async def first_event():
        gen = trigger.run()
        task = asyncio.ensure_future(gen.__anext__())
        await asyncio.sleep(0.6)
        assert not task.done()  # nothing landed yet: still waiting
        await asyncio.to_thread(lake.write_bytes, landing(lake), b"a,b\n1,2\n")
        return await asyncio.wait_for(task, 10)

    event = asyncio.run(first_event())
    assert event.payload == {"status": "found", "uri": landing(lake)}


def test_sensor_defers_then_succeeds(airflow_db, lake_root, flights_cfg) -> None:
    from airflow_mlops.core.lake.storage import open_lake

    lake = open_lake(str(lake_root))
    timer = threading.Timer(4.0, lambda: lake.write_bytes(landing(lake), b"x\n"))
    timer.start()
    try:
        state = run_sensor_only(flights_cfg, timeout=120)
    finally:
        timer.cancel()
    assert state == "success"
    assert lake.exists(landing(lake))


def test_sensor_times_out_when_nothing_lands(airflow_db, lake_root, flights_cfg) -> None:
    assert run_sensor_only(flights_cfg, timeout=3, deferrable=False) == "failed"


def test_deferral_carries_the_timeout_and_no_credentials(lake_root, flights_cfg) -> None:
    # dag.test() runs triggers inline without their timeout, so check what the triggerer is given.
    from airflow.sdk.exceptions import TaskDeferred

    from airflow_mlops.factory import build_ingest_dag

    sensor = build_ingest_dag(flights_cfg).get_task("wait_for_flights")
    sensor.ds = DS
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(context={})
    assert deferred.value.timeout.total_seconds() == flights_cfg.ingest.sensor.timeout_seconds
    assert deferred.value.method_name == "execute_complete"
    _, kwargs = deferred.value.trigger.serialize()
    assert kwargs["uri"].endswith(f"landing/flight_delays/flights/{DS}.csv")
    assert set(kwargs) == {"uri", "lake_conn_id", "poke_interval"}
