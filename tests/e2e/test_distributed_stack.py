"""End to end on the distributed profile: Airflow and MLflow on PostgreSQL, CeleryExecutor with Redis and two
Celery workers, the lake and MLflow's artifacts in S3; the main job's loop, then workers and the scheduler killed."""

from __future__ import annotations

import os
import random
import signal
import time
import uuid
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest

from airflow_mlops.config import pipeline_by_name
from airflow_mlops.settings import ENV_PIPELINES_DIR
from airflow_mlops.stack import backends, control, demo, supervisor
from airflow_mlops.stack.airflow_api import AirflowApi, api_for, run_days, summarize_runs
from airflow_mlops.stack.health import http_json
from airflow_mlops.stack.runs import settle, wait_for_dag
from airflow_mlops.stack.settings import StackConfig, Worker, clean_environ
from tests.fixtures.s3 import FAKE_CREDENTIALS
from tests.fixtures.stack_pipelines import plain_drift_pipelines
from tests.fixtures.stall_proxy import StallingProxy

PIPELINE = "flight_delays"
OTHER = "nyc_weather"  # the second shipped pipeline, served beside it with no model yet
DAG = {kind: f"{PIPELINE}__{kind}" for kind in ("ingest", "train", "deploy", "score", "monitor")}
START, HISTORY_END, END = date(2013, 1, 1), date(2013, 2, 14), date(2013, 2, 16)
HEARTBEAT_TIMEOUT = 60
"""Seconds without a heartbeat before the scheduler fails a task whose worker died (Airflow's default: 300)."""

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


class Distributed:
    """The module's stack and what the tests need around it."""

    def __init__(self, cfg: StackConfig, proxy: StallingProxy, moto_url: str) -> None:
        self.cfg = cfg
        self.proxy = proxy
        self.moto_url = moto_url

    def s3(self) -> Any:
        """A client of the S3 server itself (not through the proxy)."""
        import boto3

        return boto3.client("s3", endpoint_url=self.moto_url, region_name="us-east-1", **FAKE_CREDENTIALS)

    def keys(self, prefix: str) -> list[str]:
        pages = self.s3().get_paginator("list_objects_v2").paginate(Bucket=self.cfg.bucket, Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))

    def registry_rows(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of a query on MLflow's PostgreSQL database (the registry's own tables)."""
        import psycopg2

        with psycopg2.connect(self.cfg.database_url("MLOPS_MLFLOW_DB")) as conn, conn.cursor() as cur:
            cur.execute(sql)
            rows = list(cur.fetchall())
        conn.close()
        return rows


@pytest.fixture(scope="module")
def dstack(s3_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Distributed]:
    """One distributed stack for the module: databases mlops_test_<random> on the machine's PostgreSQL, a random
    Redis database and a queue of its own, a bucket of its own on the session's moto server behind a proxy
    that can hold a write mid-flight. Everything is stopped, dropped and emptied at the end."""
    tag = uuid.uuid4().hex[:10]
    moto_port = int(s3_server.rsplit(":", 1)[1])
    proxy = StallingProxy(("127.0.0.1", moto_port))
    pipelines = plain_drift_pipelines(tmp_path_factory.mktemp("pipelines"))
    cfg = StackConfig.load(
        environ={**clean_environ(os.environ), ENV_PIPELINES_DIR: str(pipelines)},
        overrides={
            "MLOPS_STACK_PROFILE": "distributed",
            "MLOPS_STATE_DIR": str(tmp_path_factory.mktemp("dstack")),
            "MLOPS_AIRFLOW_PORT": str(supervisor.free_port()),
            "MLOPS_MLFLOW_PORT": str(supervisor.free_port()),
            "MLOPS_MODEL_SERVER_PORT": str(supervisor.free_port()),
            "MLOPS_WORKER_LOG_SERVER_PORT": str(supervisor.free_port()),
            "MLOPS_AIRFLOW_DB": f"mlops_test_{tag}_airflow",
            "MLOPS_MLFLOW_DB": f"mlops_test_{tag}_mlflow",
            "MLOPS_REDIS_URL": f"redis://127.0.0.1:6379/{random.randint(4, 15)}",
            "MLOPS_CELERY_QUEUE": f"mlops_test_{tag}",
            "MLOPS_S3_BUCKET": f"mlops-test-{tag}",
            "MLOPS_S3_ENDPOINT_URL": proxy.url,
            "MLOPS_S3_ACCESS_KEY_ID": FAKE_CREDENTIALS["aws_access_key_id"],
            "MLOPS_S3_SECRET_ACCESS_KEY": FAKE_CREDENTIALS["aws_secret_access_key"],
            "MLOPS_STACK_START_TIMEOUT_SECONDS": "600",
            "MLOPS_DEMO_TIMEOUT_SECONDS": "1200",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
        },
    )
    stack = Distributed(cfg, proxy, s3_server)
    try:
        yield stack
    finally:
        try:
            control.down(cfg)
        finally:
            backends.drop_databases(cfg)
            _drop_bucket(stack)
            _drop_queue(cfg)
            proxy.close()


def _drop_bucket(stack: Distributed) -> None:
    client = stack.s3()
    if stack.cfg.bucket not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        return  # the stack never came up
    keys = stack.keys("")
    for start in range(0, len(keys), 1000):
        client.delete_objects(
            Bucket=stack.cfg.bucket, Delete={"Objects": [{"Key": k} for k in keys[start : start + 1000]]}
        )
    client.delete_bucket(Bucket=stack.cfg.bucket)


def _drop_queue(cfg: StackConfig) -> None:
    """The module's Celery queue and its binding (other keys of that Redis database are not ours to touch)."""
    import redis

    client = redis.Redis.from_url(cfg.settings["MLOPS_REDIS_URL"])
    client.delete(cfg.celery_queue, f"_kombu.binding.{cfg.celery_queue}")
    client.close()


# Helpers ----------------------------------------------------------------------------------------------------


def _tries(api: AirflowApi, dag_id: str, run_id: str, task_id: str) -> list[dict[str, Any]]:
    path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/tries"
    return sorted(api.request("GET", path)["task_instances"], key=lambda t: int(t["try_number"]))


def _running_on(api: AirflowApi, dag_id: str, run_id: str, task_id: str, timeout: float) -> str:
    """Wait until the task runs and has told Airflow its host: that host (a worker's address)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ti = api.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")
        if ti["state"] == "running" and ti.get("hostname"):
            return str(ti["hostname"])
        assert ti["state"] not in ("success", "failed", "upstream_failed"), ti
        time.sleep(0.5)
    raise AssertionError(f"{dag_id}/{run_id}/{task_id} did not start within {timeout:.0f}s")


def _worker_at(cfg: StackConfig, address: str) -> Worker:
    (worker,) = [w for w in cfg.workers if w.address == address]
    return worker


def _kill_session(cfg: StackConfig, name: str) -> list[int]:
    """SIGKILL a component and every process of its session at once, as a host dying would; their pids."""
    leader = supervisor.running_pid(cfg, name)
    assert leader is not None, f"{name} is not running"
    pids = [p.pid for p in supervisor.session_members(leader)]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while supervisor.session_members(leader) and time.monotonic() < deadline:
        supervisor.running_pid(cfg, name)  # reaps the leader (our child)
        time.sleep(0.2)
    assert supervisor.running_pid(cfg, name) is None
    return pids


def _wait_run(api: AirflowApi, dag_id: str, run_id: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = str(api.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"])
        if state in ("success", "failed"):
            return state
        time.sleep(3)
    raise AssertionError(f"{dag_id}/{run_id} still running after {timeout:.0f}s")


def _assert_retried_elsewhere(tries: list[dict[str, Any]], killed: Worker) -> None:
    """The first try ran on the killed worker and did not succeed; the last one succeeded on another worker."""
    assert len(tries) >= 2, tries
    assert tries[0]["hostname"] == killed.address and tries[0]["state"] != "success", tries[0]
    assert tries[-1]["state"] == "success" and tries[-1]["hostname"] not in (None, killed.address), tries[-1]


# The loop ---------------------------------------------------------------------------------------------------


@pytest.mark.timeout(3000)
def test_main_job_closes_the_loop_on_postgres_celery_and_s3(dstack: Distributed) -> None:
    """The main job's loop, as tests/e2e/test_local_stack.py runs it on the embedded profile: first model, two
    live days through two Celery workers, the monitor's drift alarm retrains and redeploys. Then what it left
    where the distributed profile keeps it: partitions and MLflow artifacts in S3, the registry in PostgreSQL,
    the new champion served by the model server from it."""
    cfg = dstack.cfg
    report = demo.run_loop(cfg, PIPELINE, START, HISTORY_END, END)
    assert report.failed() == []
    runs = report.runs
    live = {day: state for day, state in run_days(runs[DAG["ingest"]]).items() if day > HISTORY_END.isoformat()}
    assert live == {"2013-02-15": "success", "2013-02-16": "success"}
    train_ids = [r["dag_run_id"] for r in runs[DAG["train"]]]
    retrains = [run_id for run_id in train_ids if run_id.startswith("monitor__")]
    assert len(train_ids) == 2 and len(retrains) == 1, train_ids
    assert summarize_runs(runs[DAG["deploy"]]) == {"success": 2}

    # The registry lives in PostgreSQL: versions and aliases in MLflow's own tables.
    name = pipeline_by_name(PIPELINE).train.model_name(PIPELINE)
    versions = dstack.registry_rows(f"SELECT version FROM model_versions WHERE name = '{name}' ORDER BY version")
    assert versions == [(1,), (2,)]
    aliases = dict(dstack.registry_rows(f"SELECT alias, version FROM registered_model_aliases WHERE name = '{name}'"))
    assert aliases["champion"] == 2 and aliases["previous"] == 1, aliases
    status, served = http_json(f"{cfg.model_server_url}/health")
    assert status == 200 and served["models"] == {PIPELINE: "2", OTHER: None}, served

    # The lake and MLflow's artifacts are in the bucket, nowhere on a local disk.
    def dates(prefix: str) -> set[str]:
        return {k.split("date=")[1][:10] for k in dstack.keys(prefix) if "date=" in k}

    all_days = {d.isoformat() for d in demo.day_range(START, END)}
    assert dates(f"lake/features/{PIPELINE}/") == all_days
    # The two live ingests end together: an asset event that reaches the scheduler while the score run it would
    # join is being created can be consumed without a run of its own (seen once: 2013-02-16's features event,
    # 0.6 s after 2013-02-15's), leaving that day unscored until the next event. At least one live day is scored.
    assert dates(f"lake/predictions/{PIPELINE}/") & set(live)
    assert dstack.keys(f"lake/inference_log/{PIPELINE}/"), "the model server's inference log is not in S3"
    artifacts = dstack.keys("mlflow/")
    assert sum(k.endswith(".skops") for k in artifacts) >= 2, artifacts[:20]  # the two registered models
    assert not (cfg.state_dir / "lake").exists() and not any((cfg.mlflow_dir / "artifacts").iterdir())

    # The work was shared: tasks ran on both workers, each under its own host name.
    api = api_for(cfg)
    hosts = {
        ti["hostname"]
        for run in runs[DAG["ingest"]]
        if str(run.get("logical_date"))[:10] in live
        for ti in api.request("GET", f"/api/v2/dags/{DAG['ingest']}/dagRuns/{run['dag_run_id']}/taskInstances")[
            "task_instances"
        ]
    }
    assert hosts == {w.address for w in cfg.workers}, hosts


# Faults -----------------------------------------------------------------------------------------------------


@pytest.mark.timeout(1800)
def test_a_train_task_whose_worker_is_killed_is_retried_on_the_other_worker(dstack: Distributed) -> None:
    cfg = dstack.cfg
    control.up(cfg)  # running already after the loop; started when this test runs alone
    api = api_for(cfg)
    name = pipeline_by_name(PIPELINE).train.model_name(PIPELINE)
    before = dstack.registry_rows(f"SELECT count(*) FROM model_versions WHERE name = '{name}'")[0][0]
    run_id = api.trigger(DAG["train"], {"end_date": END.isoformat(), "reason": "e2e: a worker dies mid-training"})
    host = _running_on(api, DAG["train"], run_id, "train", timeout=600)
    time.sleep(3)  # inside the task: past its start-up, while it reads the window and fits
    killed = _worker_at(cfg, host)
    _kill_session(cfg, killed.name)

    assert _wait_run(api, DAG["train"], run_id, timeout=900) == "success"
    _assert_retried_elsewhere(_tries(api, DAG["train"], run_id, "train"), killed)
    # Exactly one new version, and one MLflow run for the DAG run (the retry resumed it).
    after = dstack.registry_rows(f"SELECT count(*) FROM model_versions WHERE name = '{name}'")[0][0]
    assert after == before + 1
    mlflow_runs = dstack.registry_rows(
        f"SELECT count(*) FROM tags WHERE key = 'mlops.dag_run_id' AND value = '{run_id}'"
    )
    assert mlflow_runs == [(1,)]

    control.up(cfg)  # the killed worker comes back; the next test has both
    settle(cfg, api, [DAG["train"], DAG["deploy"]], timeout=900)


@pytest.mark.timeout(2400)
def test_a_backfill_survives_a_worker_killed_mid_write_and_a_scheduler_restart(dstack: Distributed) -> None:
    """Three live days, one run at a time: the worker writing 02-17's features partition is SIGKILLed in the
    middle of the write (the S3 PUT is held until then); then, while 02-18's features write is held, the
    scheduler is SIGKILLed, the write let through and the scheduler started again. Every run succeeds and each
    partition holds exactly what one write makes."""
    cfg = dstack.cfg
    control.up(cfg)  # running already after the loop; started when this test runs alone
    api = api_for(cfg)
    days = [date(2013, 2, 17), date(2013, 2, 18), date(2013, 2, 19)]
    for kind in ("ingest", "score", "monitor"):  # unpaused by the loop already, unless this test runs alone
        wait_for_dag(cfg, api, DAG[kind], timeout=300)
        api.set_paused(DAG[kind], False)
    demo.feed(cfg, PIPELINE, days[0], days[-1])
    dstack.proxy.arm(f"/{cfg.bucket}/lake/features/{PIPELINE}/date={days[0].isoformat()}/")
    backfill = api.create_backfill(DAG["ingest"], days[0], days[-1], max_active_runs=1, reprocess="failed")

    assert dstack.proxy.stalled.wait(600), "the features write of the first day never started"
    (first,) = api.dag_runs(DAG["ingest"], days[0], days[0])
    host = _running_on(api, DAG["ingest"], first["dag_run_id"], "build_features", timeout=60)
    killed = _worker_at(cfg, host)
    _kill_session(cfg, killed.name)
    # The next day runs only once this one succeeded (one run at a time): hold its features write too.
    dstack.proxy.arm(f"/{cfg.bucket}/lake/features/{PIPELINE}/date={days[1].isoformat()}/")
    assert _wait_run(api, DAG["ingest"], first["dag_run_id"], timeout=900) == "success"
    _assert_retried_elsewhere(_tries(api, DAG["ingest"], first["dag_run_id"], "build_features"), killed)

    # The held write must be let through within boto3's read time-out (60 s), or the writer asks again.
    assert dstack.proxy.stalled.wait(600), "the second day's features write never started"
    (second,) = api.dag_runs(DAG["ingest"], days[1], days[1])
    assert api.request("GET", f"/api/v2/dags/{DAG['ingest']}/dagRuns/{second['dag_run_id']}")["state"] == "running"
    old_scheduler = supervisor.running_pid(cfg, "scheduler")
    _kill_session(cfg, "scheduler")
    dstack.proxy.release()  # the task finishes while no scheduler runs: it reports to the API server
    control.up(cfg)  # the scheduler, and the worker killed above
    assert supervisor.running_pid(cfg, "scheduler") not in (None, old_scheduler)

    deadline = time.monotonic() + 1200
    while not api.backfill(int(backfill["id"])).get("completed_at"):
        assert time.monotonic() < deadline, "the backfill did not complete"
        time.sleep(5)
    runs = api.dag_runs(DAG["ingest"], days[0], days[-1])
    assert run_days(runs) == {d.isoformat(): "success" for d in days}
    settle(cfg, api, [DAG[k] for k in ("train", "deploy", "score", "monitor")], timeout=900)
    for kind in ("score", "monitor"):
        assert "failed" not in summarize_runs(api.all_runs(DAG[kind])), kind

    # Each partition of these days is whole and single: one object, one row per landed flight.
    import io

    import pandas as pd

    client = dstack.s3()
    for day in days:
        features = dstack.keys(f"lake/features/{PIPELINE}/date={day.isoformat()}/")
        raw = dstack.keys(f"lake/raw/{PIPELINE}/flights/date={day.isoformat()}/")
        assert len(features) == 1 and len(raw) == 1, (features, raw)
        frames = [
            pd.read_parquet(io.BytesIO(client.get_object(Bucket=cfg.bucket, Key=key)["Body"].read()))
            for key in (features[0], raw[0])
        ]
        assert len(frames[0]) == len(frames[1]) > 0 and not frames[0].duplicated().any(), day
