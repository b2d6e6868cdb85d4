"""Benchmark: the step cache under a real scheduler: a finished day of the main job, first run against rerun.

Run from the repo root: `.venv/bin/python benchmarks/bench_step_cache_scheduler.py`. Target: the rerun costs at
most 10% of the first run. Figures only, no asserts. bench_step_cache.py measures the same under dag.test().

It starts a local embedded stack of its own (scheduler with LocalExecutor, API server, DAG processor, triggerer,
MLflow; folder and ports of its own), builds the feature partitions of --start..--end with the core ingest
functions, trains and registers a model on them in a plain process (core steps) and makes it champion, lands
the real files of two more days, and unpauses `<p>__ingest`, `<p>__score` and `<p>__monitor` (`<p>__train`
stays paused: a retrain the monitor asks for would stay queued, and is marked failed before a rerun, as if it
had run and ended). Then, for a warm-up day and the measured day:

* first run: a manual run of `<p>__ingest` for the day through the REST API; the asset events start
  `<p>__score` and then `<p>__monitor`. Measured from the ingest run's queued_at to the end of the monitor run.
* rerun: the finished ingest run cleared through the REST API (what "rerun a finished day" is in the UI).
  Measured from the clear request to the end of the ingest run; then it waits --settle seconds and reports
  whether any new score or monitor run appeared (a rerun with nothing to do emits no asset event).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_orchestration import (  # noqa: E402  (a sibling script, importable once benchmarks/ is on the path)
    TERMINAL,
    BenchStack,
    add_stack_options,
    plain_run,
    prepare_features,
    stack_config,
    wait_unpaused,
)

STACK = BenchStack(
    "/tmp/bench-step-cache-<profile>",
    18180,
    15100,
    18100,
    {"MLOPS_AIRFLOW_DB": "mlops_bench_cache_airflow", "MLOPS_MLFLOW_DB": "mlops_bench_cache_mlflow"},
)


def _ts(value: str | None) -> float:
    assert value, "Airflow gave no timestamp"
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def wait_run(api: Any, dag_id: str, run_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run: dict[str, Any] = api.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        if run["state"] in TERMINAL:
            return run
        if time.monotonic() > deadline:
            raise SystemExit(f"{dag_id}/{run_id} not done after {timeout:.0f}s: {run['state']}")
        time.sleep(0.5)


def runs_after(api: Any, dag_id: str, since: float) -> list[dict[str, Any]]:
    answer = api.request("GET", f"/api/v2/dags/{dag_id}/dagRuns", limit=100, order_by="-run_after")
    return [r for r in answer["dag_runs"] if _ts(r["run_after"]) >= since]


def wait_triggered(api: Any, dag_id: str, since: float, timeout: float) -> dict[str, Any]:
    """The first run of an asset-triggered DAG created after `since`, once it ended."""
    deadline = time.monotonic() + timeout
    while not (found := runs_after(api, dag_id, since)):
        if time.monotonic() > deadline:
            raise SystemExit(f"no run of {dag_id} after the ingest run within {timeout:.0f}s")
        time.sleep(0.5)
    return wait_run(api, dag_id, found[-1]["dag_run_id"], timeout)


def task_states(api: Any, dag_id: str, run_id: str) -> str:
    answer = api.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", limit=100)
    counts: dict[str, int] = {}
    for ti in answer["task_instances"]:
        counts[str(ti["state"])] = counts.get(str(ti["state"]), 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))


def end_queued_retrains(api: Any, pipeline: str) -> None:
    """A retrain the monitor asked for waits in the paused train DAG: end it, as if it had run."""
    dag_id = f"{pipeline}__train"
    for run in api.request("GET", f"/api/v2/dags/{dag_id}/dagRuns", limit=100)["dag_runs"]:
        if run["state"] in ("queued", "running"):
            api.request("PATCH", f"/api/v2/dags/{dag_id}/dagRuns/{run['dag_run_id']}", {"state": "failed"})


def first_run(api: Any, pipeline: str, day: str, timeout: float) -> dict[str, Any]:
    ingest, run_id = f"{pipeline}__ingest", f"bench_{day}_{int(time.time())}"
    body = {"dag_run_id": run_id, "logical_date": f"{day}T00:00:00Z", "conf": {}}
    api.request("POST", f"/api/v2/dags/{ingest}/dagRuns", body)
    run = wait_run(api, ingest, run_id, timeout)
    queued = _ts(run["queued_at"])
    score = wait_triggered(api, f"{pipeline}__score", queued, timeout)
    monitor = wait_triggered(api, f"{pipeline}__monitor", _ts(score["queued_at"]), timeout)
    seconds = _ts(monitor["end_date"]) - queued
    states = {
        "ingest": f"{run['state']}: {task_states(api, ingest, run_id)}",
        "score": f"{score['state']}: {task_states(api, f'{pipeline}__score', score['dag_run_id'])}",
        "monitor": f"{monitor['state']}: {task_states(api, f'{pipeline}__monitor', monitor['dag_run_id'])}",
    }
    parts = {
        "ingest": _ts(run["end_date"]) - queued,
        "score": _ts(score["end_date"]) - _ts(run["end_date"]),
        "monitor": _ts(monitor["end_date"]) - _ts(score["end_date"]),
    }
    return {"run_id": run_id, "seconds": seconds, "parts": parts, "states": states}


def rerun(api: Any, pipeline: str, run_id: str, timeout: float, settle: float) -> dict[str, Any]:
    ingest = f"{pipeline}__ingest"
    end_queued_retrains(api, pipeline)
    start = time.time()
    body = {"dag_run_id": run_id, "dry_run": False, "only_failed": False, "reset_dag_runs": True}
    api.request("POST", f"/api/v2/dags/{ingest}/clearTaskInstances", body)
    time.sleep(0.5)  # the cleared run is queued again; its old end_date is reset
    run = wait_run(api, ingest, run_id, timeout)
    seconds = _ts(run["end_date"]) - start
    time.sleep(settle)
    later = {d: len(runs_after(api, f"{pipeline}__{d}", start)) for d in ("score", "monitor")}
    cache = api.request(
        "GET", f"/api/v2/dags/{ingest}/dagRuns/{run_id}/taskInstances/step_cache/xcomEntries/return_value"
    )
    value = cache.get("value")
    return {
        "seconds": seconds,
        "states": f"{run['state']}: {task_states(api, ingest, run_id)}",
        "new_runs": later,
        "step_cache": value if isinstance(value, dict) else str(value)[:300],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", default="flight_delays")
    parser.add_argument("--start", default="2013-01-01", help="first day of features to build")
    parser.add_argument("--end", default="2013-03-01", help="last day of features, and the training window end")
    parser.add_argument("--days", default="2013-03-02,2013-03-03", help="warm-up day, measured day")
    parser.add_argument("--settle", type=float, default=20.0, help="seconds to watch for runs after a rerun")
    parser.add_argument("--timeout", type=float, default=900.0)
    add_stack_options(parser, STACK)
    args = parser.parse_args()

    from mlflow import MlflowClient

    from airflow_mlops.config import pipeline_by_name
    from airflow_mlops.core.demo import feed_day
    from airflow_mlops.core.lake.storage import open_lake
    from airflow_mlops.stack import control
    from airflow_mlops.stack.airflow_api import api_for
    from airflow_mlops.stack.components import s3_client_env, stack_env
    from airflow_mlops.stack.runs import wait_for_dag

    cfg = stack_config(parser, args, "embedded", STACK)
    started_stack = False
    try:
        keys = control.up(cfg)
        started_stack = True
        env = {**stack_env(cfg, keys), **s3_client_env(cfg)}
        s3 = cfg.s3_settings() if cfg.lake_root.startswith("s3://") else {}
        began = time.perf_counter()
        prepare_features(cfg.lake_root, s3, args.pipeline, args.start, args.end)
        pcfg = pipeline_by_name(args.pipeline)
        lake = open_lake(cfg.lake_root, s3 or None)
        days = args.days.split(",")
        for day in days:
            feed_day(lake, pcfg, day)
        client = MlflowClient(cfg.mlflow_url, registry_uri=cfg.mlflow_url)
        name = pcfg.train.model_name(pcfg.name)
        try:
            version = client.get_model_version_by_alias(name, "champion").version
        except Exception:  # no champion yet (a fresh stack): train one
            spec = {
                "pipeline": args.pipeline,
                "dag_id": "bench",
                "run_id": "bench",
                "lake_root": cfg.lake_root,
                "mlflow_uri": cfg.mlflow_url,
                "end_ds": args.end,
                "ds": args.end,
                "airflow_run_url": None,
            }
            plain_run(env, spec, "train", args.timeout)
            version = max(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
            client.set_registered_model_alias(name, "champion", str(version))
        print(f"prepared in {time.perf_counter() - began:.0f}s (champion {name} v{version})")
        api = api_for(cfg)
        for kind in ("score", "monitor", "ingest"):
            wait_for_dag(cfg, api, f"{args.pipeline}__{kind}", timeout=180)
            wait_unpaused(api, f"{args.pipeline}__{kind}")
        results = {}
        for day in days:
            first = first_run(api, args.pipeline, day, args.timeout)
            again = rerun(api, args.pipeline, first["run_id"], args.timeout, args.settle)
            results[day] = (first, again)
            label = "warm-up" if day == days[0] else "measured"
            print(f"day {day} ({label}):")
            parts = ", ".join(f"{k} {v:.1f}" for k, v in first["parts"].items())
            print(f"  first run  {first['seconds']:7.2f} s  ({parts})")
            for dag, states in first["states"].items():
                print(f"      {dag}: {states}")
            share = again["seconds"] / first["seconds"]
            print(f"  rerun      {again['seconds']:7.2f} s  = {share:.1%} of the first run")
            print(f"      ingest {again['states']}; runs started after it: {again['new_runs']}")
            if isinstance(again["step_cache"], dict):
                print(f"      step_cache: cached {again['step_cache'].get('cached')}, "
                      f"{len(again['step_cache'].get('steps', []))} steps, first to run: "
                      f"{again['step_cache'].get('first_to_run')} ({again['step_cache'].get('why', '')})")  # fmt: skip
        print(json.dumps({d: {"first": f["seconds"], "rerun": r["seconds"]} for d, (f, r) in results.items()}))
    finally:
        if started_stack and not args.keep_stack:
            control.down(cfg)


if __name__ == "__main__":
    main()
