"""Benchmark: the lifecycle page of a pipeline with 100 versions and a year of monitor runs.

Run from the repo root: `.venv/bin/python benchmarks/bench_lifecycle.py [--versions 100] [--days 365] [--repeat 5]`.

Starts a real `mlflow server` (SQLite) and a local lake in a temp folder, writes the history the DAGs would
(tests/fixtures/lifecycle_history.py: versions through the package's registry code, one monitor run per day,
validation reports per source and day), then times what a page request does: reading the registry, runs and
lake (cold: what the first request after the cache expires pays), rendering the HTML with its SVG charts, and a
request served from the cache (cache hit + render). Figures only, no asserts.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]  # tests.fixtures: the MLflow server process and the history


def _timed(fn, repeat: int) -> tuple[float, float, object]:  # type: ignore[no-untyped-def]
    times, value = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), max(times), value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--versions", type=int, default=100)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from airflow_mlops.config import pipeline_by_name
    from airflow_mlops.core.lake.storage import open_lake
    from airflow_mlops.core.lifecycle.data import TtlCache, read_pipeline
    from airflow_mlops.core.lifecycle.page import AirflowState, Urls, render_pipeline
    from airflow_mlops.core.registry.tracking import Tracking
    from tests.fixtures.lifecycle_history import write_history
    from tests.fixtures.mlflow_server import MlflowServer

    cfg = pipeline_by_name("flight_delays")
    with tempfile.TemporaryDirectory(prefix="bench-lifecycle-") as tmp:
        server = MlflowServer(Path(tmp) / "mlflow")
        server.start()
        try:
            tracking = Tracking(server.uri)
            lake = open_lake(str(Path(tmp) / "lake"))
            start = time.perf_counter()
            history = write_history(  # the second half of the year with prediction drift, as after an upgrade
                tracking,
                lake,
                cfg,
                versions=args.versions,
                monitor_days=args.days,
                every=30,
                prediction_from=args.days // 2,
            )
            print(
                f"history: {len(history.versions)} versions, {len(history.monitor_days)} monitor runs, "
                f"{len(cfg.partitioned_sources)} sources x {args.days} validation reports "
                f"(written in {time.perf_counter() - start:.0f} s)"
            )
            urls = Urls(mlflow=server.uri)
            state = AirflowState()
            cold, cold_max, data = _timed(lambda: read_pipeline(tracking, lake, cfg), args.repeat)
            render, render_max, page = _timed(lambda: render_pipeline(data, state, urls), args.repeat)  # type: ignore[arg-type]
            cache: TtlCache[str, object] = TtlCache(60)
            cache.get(cfg.name, lambda: data)
            hit, hit_max, _ = _timed(
                lambda: render_pipeline(cache.get(cfg.name, lambda: data), state, urls),  # type: ignore[arg-type]
                args.repeat,
            )
            print(f"read registry, runs and lake (cold): median {cold * 1000:.0f} ms, max {cold_max * 1000:.0f} ms")
            print(f"render page (HTML + 4 SVG charts):   median {render * 1000:.0f} ms, max {render_max * 1000:.0f} ms")
            print(f"cached request (hit + render):       median {hit * 1000:.0f} ms, max {hit_max * 1000:.0f} ms")
            print(f"page size: {len(str(page)) / 1024:.0f} KiB")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
