"""Benchmark: rerunning a finished day of `<p>__ingest` + `<p>__score` + `<p>__monitor` against its first run.

Run from the repo root: `.venv/bin/python benchmarks/bench_step_cache.py`. Target: the rerun costs at most 10% of
the first run. Figures only, no asserts.

In a temp folder: an Airflow home (SQLite), a lake with 20 days of synthetic features, a real `mlflow server`, a
model trained on them and made champion (core steps), and the real landing files of two days. Then, in one
process with dag.test(): a warm-up day (imports, first MLflow calls), the measured day's first run (ingest, score,
monitor), its rerun (every step finds its record: same inputs, config and package), and a rerun with the DAG
param force_rerun (every step runs again), each timed from the start of the ingest run to the end of monitor.
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


def day_run(day: str, force: bool = False) -> dict[str, Any]:
    """Ingest, score and monitor of one day with dag.test(); wall time and each run's state."""
    d = dags()
    start = time.perf_counter()
    states = [
        str(d["ingest"].test(
            logical_date=datetime.fromisoformat(day).replace(tzinfo=UTC), run_conf={"force_rerun": force}
        ).state),
        str(d["score"].test(logical_date=None, run_conf={"partition": day, "force_rerun": force}).state),
        str(d["monitor"].test(logical_date=None, run_conf={"date": day, "force_rerun": force}).state),
    ]  # fmt: skip
    return {"seconds": round(time.perf_counter() - start, 2), "states": states}


def child(tmp: Path) -> None:
    from airflow.utils.db import initdb

    initdb()
    prepare(tmp)
    day_run(WARM)
    first = day_run(DAY)
    rerun = day_run(DAY)
    forced = day_run(DAY, force=True)
    print(json.dumps({"first": first, "rerun": rerun, "forced": forced}))


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
    first, rerun, forced = result["first"], result["rerun"], result["forced"]
    print(f"day {DAY}: ingest + score + monitor with dag.test() (states {first['states']})")
    print(f"  first run          {first['seconds']:7.2f} s")
    print(
        f"  rerun (cached)     {rerun['seconds']:7.2f} s  = {rerun['seconds'] / first['seconds']:.1%} of the first run"
    )
    print(f"  rerun force_rerun  {forced['seconds']:7.2f} s  = {forced['seconds'] / first['seconds']:.1%}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(Path(sys.argv[2]))
    else:
        main()
