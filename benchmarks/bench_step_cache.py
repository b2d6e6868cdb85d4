"""Benchmark: rerunning a finished day of the main job against its first run (the step cache).

Run from the repo root: `.venv/bin/python benchmarks/bench_step_cache.py`. Target: the rerun costs at most 10% of
the first run. Figures only, no asserts.

In a temp folder: an Airflow home (SQLite), a lake with 20 days of synthetic features, a real `mlflow server`, a
model trained on them and made champion (core steps), and the real landing files of two days. Then, in one
process with dag.test() (no scheduler: each DAG run is started here, as its asset event would start it):

* first run: what one day of the main job runs: `<p>__ingest` of the day, then `<p>__score` of its partition
  and `<p>__monitor` of the window ending on it (each triggered by the previous one's asset event);
* rerun: `<p>__ingest` of the same day again (a cleared or re-triggered day). Its `step_cache` task finds every
  step's record and skips the rest of the run; no asset event is emitted, so score and monitor do not run;
* rerun by hand of all three DAGs: each task that runs skips its work from its record (what a rerun cost
  before `step_cache`: every task is started);
* force_rerun: the three DAGs with the form's Force rerun (every step works again);
* Airflow's floor: dag.test() of the ingest run with every task marked success (none runs), and `check_day`
  (step_cache's check) in process.

A warm-up day goes first (imports, first MLflow calls). Each figure is a wall time in this process.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WARM, DAY = "2013-03-21", "2013-03-22"


def prepare(tmp: Path) -> None:
    import yaml

    from airflow_mlops import settings
    from airflow_mlops.config import pipeline_by_name
    from airflow_mlops.core.demo import feed_day
    from airflow_mlops.core.lake.storage import open_lake
    from airflow_mlops.core.registry.tracking import CHAMPION, RunTags, Tracking
    from airflow_mlops.core.train.steps import evaluate_step, register_step, train_step
    from tests.fixtures.training_data import day_range, synthetic_features, write_partitions

    data = yaml.safe_load((settings.include_dir() / "pipelines" / "flight_delays.yaml").read_text())
    data["train"].update(window_days=20, validation_days=3, holdout_days=4, min_rows=100, search=None)
    data["train"]["gates"].update(min_slice_rows=40)
    (tmp / "pipelines").mkdir()
    (tmp / "pipelines" / "flight_delays.yaml").write_text(yaml.safe_dump(data))
    cfg = pipeline_by_name("flight_delays")
    lake = open_lake(str(tmp / "lake"))
    write_partitions(lake, cfg, synthetic_features(cfg, day_range("2013-03-01", 20), rows_per_day=200, seed=7))
    for day in (WARM, DAY):
        feed_day(lake, cfg, day)
    tracking = Tracking(os.environ["MLOPS_BENCH_MLFLOW"])
    tags = RunTags("bench", "bench", "2013-03-20", "train")
    trained = train_step(lake, cfg, tracking, tags, "2013-03-20", 20, "benchmark")
    registered = register_step(
        cfg, tracking, tags, trained, evaluate_step(lake, cfg, tracking, tags, trained, None), None
    )
    tracking.client.set_registered_model_alias(cfg.train.model_name(cfg.name), CHAMPION, registered["version"])


_DAGS: dict[str, Any] = {}


def dags() -> dict[str, Any]:
    """The three DAGs, built once (a rebuilt DAG object would need serializing again)."""
    if not _DAGS:
        from airflow_mlops.config import pipeline_by_name
        from airflow_mlops.factory import build_ingest_dag, build_monitor_dag, build_score_dag

        cfg = pipeline_by_name("flight_delays")
        _DAGS.update(ingest=build_ingest_dag(cfg), score=build_score_dag(cfg), monitor=build_monitor_dag(cfg))
    return _DAGS


def forget_train_runs() -> None:
    """dag.test() runs no scheduler, so a retrain the monitor triggered stays queued; an active training run is
    part of the monitor's fingerprint (under a scheduler it would have run and ended)."""
    from airflow.models import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        session.query(DagRun).filter(DagRun.dag_id == "flight_delays__train").delete()


def features_events() -> int:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    with create_session() as session:
        query = select(func.count()).select_from(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
        return int(session.scalar(query.where(AssetModel.name == "flight_delays.features")) or 0)


def states_of(dr: Any) -> str:
    counts: dict[str, int] = {}
    for ti in dr.get_task_instances():
        counts[str(ti.state)] = counts.get(str(ti.state), 0) + 1
    return f"{dr.dag_id.split('__')[1]} {dr.state}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))


def timed(runs: list[Any]) -> dict[str, Any]:
    """Run each callable (one dag.test() each); wall time, task states and new features events."""
    events = features_events()
    start = time.perf_counter()
    states = [states_of(run()) for run in runs]
    seconds = round(time.perf_counter() - start, 2)
    forget_train_runs()
    return {"seconds": seconds, "states": states, "features_events": features_events() - events}


def ingest(day: str, force: bool = False) -> Any:
    when = datetime.fromisoformat(day).replace(tzinfo=UTC)
    return lambda: dags()["ingest"].test(logical_date=when, run_conf={"force_rerun": force})


def score_and_monitor(day: str, force: bool = False) -> list[Any]:
    d = dags()
    return [
        lambda: d["score"].test(logical_date=None, run_conf={"partition": day, "force_rerun": force}),
        lambda: d["monitor"].test(logical_date=None, run_conf={"date": day, "force_rerun": force}),
    ]


def airflow_floor(day: str) -> float:
    """dag.test() of the day's ingest run with every task marked success without running: Airflow's own cost of
    a run of this DAG under dag.test() (run creation, scheduling loop, state updates)."""
    when = datetime.fromisoformat(day).replace(tzinfo=UTC)
    start = time.perf_counter()
    dags()["ingest"].test(logical_date=when, mark_success_pattern=r".*")
    return round(time.perf_counter() - start, 2)


def check_in_process(day: str) -> dict[str, Any]:
    """check_day as step_cache calls it, without Airflow: the fingerprints and record look-ups."""
    import functools

    from airflow_mlops.config import pipeline_by_name
    from airflow_mlops.core.day_cache import check_day
    from airflow_mlops.core.lake.storage import open_lake
    from airflow_mlops.core.registry.tracking import CHAMPION, Tracking

    cfg = pipeline_by_name("flight_delays")
    lake = open_lake(os.environ["MLOPS_LAKE_ROOT"])
    tracking = Tracking(os.environ["MLOPS_BENCH_MLFLOW"])
    champion = functools.cache(lambda: tracking.alias_version(cfg.train.model_name(cfg.name), CHAMPION))
    start = time.perf_counter()
    check = check_day(lake, cfg, day, champion, lambda: False)
    return {"seconds": round(time.perf_counter() - start, 2), "all_hit": check.all_hit, "steps": len(check.hits)}


def child(tmp: Path) -> None:
    from airflow.utils.db import initdb

    initdb()
    prepare(tmp)
    timed([ingest(WARM), *score_and_monitor(WARM)])
    result = {
        "first": timed([ingest(DAY), *score_and_monitor(DAY)]),
        "rerun": timed([ingest(DAY)]),
        "rerun_all_three": timed([ingest(DAY), *score_and_monitor(DAY)]),
        "forced": timed([ingest(DAY, True), *score_and_monitor(DAY, True)]),
        "rerun_after_forced": timed([ingest(DAY)]),
        "floor": airflow_floor(DAY),
        "check": check_in_process(DAY),
    }
    print(json.dumps(result))


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from tests.fixtures.mlflow_server import MlflowServer

    with tempfile.TemporaryDirectory(prefix="bench-cache-") as name:
        tmp = Path(name)
        server = MlflowServer(tmp / "mlflow")
        server.start()
        try:
            env = {
                **os.environ,
                "AIRFLOW_HOME": str(tmp / "airflow"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp / 'airflow.db'}",
                "AIRFLOW_CONN_MLOPS_STORAGE": '{"conn_type": "generic"}',
                "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps({"conn_type": "http", "extra": {"tracking_uri": server.uri}}),
                "MLOPS_LAKE_ROOT": str(tmp / "lake"),
                "MLOPS_PIPELINES_DIR": str(tmp / "pipelines"),
                "MLOPS_BENCH_MLFLOW": server.uri,
                "PYTHONPATH": str(ROOT),
            }
            import subprocess

            proc = subprocess.run(
                [sys.executable, __file__, "--child", str(tmp)], env=env, capture_output=True, text=True, check=False
            )
            if proc.returncode != 0:
                sys.exit(f"benchmark failed:\n{proc.stderr[-4000:]}")
            result = json.loads(proc.stdout.strip().splitlines()[-1])
        finally:
            server.stop()
    first = result["first"]["seconds"]
    print(f"day {DAY} of flight_delays with dag.test() (seconds; share of the first run)")
    for key, label in (
        ("first", "first run: ingest, score, monitor"),
        ("rerun", "rerun of the day (ingest; step_cache ends it)"),
        ("rerun_all_three", "rerun by hand of ingest, score, monitor"),
        ("forced", "force_rerun of ingest, score, monitor"),
        ("rerun_after_forced", "rerun of the day after the forced one"),
    ):
        r = result[key]
        print(
            f"  {label:48s} {r['seconds']:7.2f}  {r['seconds'] / first:6.1%}  features events +{r['features_events']}"
        )
        for states in r["states"]:
            print(f"      {states}")
    floor, check = result["floor"], result["check"]
    print(f"  Airflow's floor: the ingest run with every task marked success, none run: {floor:.2f} s")
    hit = f"{check['steps']} steps, all hit: {check['all_hit']}"
    print(f"  step_cache's check in process: {check['seconds']:.2f} s ({hit})")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(Path(sys.argv[2]))
    else:
        main()
