"""Benchmark of the ingest path (landing -> raw -> validation -> features) and of DAG parsing.

Run: .venv/bin/python benchmarks/bench_ingest.py [--month 2013-01]

Measurements, each in a fresh subprocess so peak memory (ru_maxrss) is its own:
- `day`: the three sources of one real day ingested, validated and turned into features;
- `month`: the same for every day of a month, one process (as a worker running many tasks would);
- `parse`: each DAG file parsed with airflow.sdk already imported (as the DAG processor has it), 20 times.
Prints figures; asserts nothing. Targets: every DAG file parses in <= 50 ms.
"""

from __future__ import annotations

import argparse
import calendar
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _days(month: str) -> list[str]:
    year, mon = (int(x) for x in month.split("-"))
    return [f"{year}-{mon:02d}-{d:02d}" for d in range(1, calendar.monthrange(year, mon)[1] + 1)]


def _ingest(days: list[str]) -> dict[str, Any]:
    from airflow_mlops import config, settings
    from airflow_mlops.core.demo import feed_day
    from airflow_mlops.core.ingest.landing import steps as steps
    from airflow_mlops.core.lake.storage import open_lake

    cfg = config.load_pipeline(settings.pipelines_dir() / "flight_delays.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        lake = open_lake(tmp)
        for ds in days:
            feed_day(lake, cfg, ds)
        t = {"ingest": 0.0, "validate": 0.0, "features": 0.0}
        rows = 0
        for ds in days:
            for source in cfg.sources:
                start = time.perf_counter()
                steps.ingest_source(lake, cfg, source, ds)
                t["ingest"] += time.perf_counter() - start
                start = time.perf_counter()
                steps.validate_source(lake, cfg, source, ds)
                t["validate"] += time.perf_counter() - start
            start = time.perf_counter()
            rows += steps.build_feature_partition(lake, cfg, ds).rows
            t["features"] += time.perf_counter() - start
    return {"days": len(days), "feature_rows": rows, **{f"{k}_s": round(v, 2) for k, v in t.items()}}


def _parse() -> dict[str, Any]:
    import runpy

    import airflow.sdk
    import airflow.sdk.definitions.timetables.interval  # noqa: F401  (loaded by the processor's first DAG)

    out: dict[str, Any] = {}
    for path in sorted((ROOT / "dags").glob("*.py")):
        times = []
        for _ in range(20):
            for name in [m for m in sys.modules if m.startswith("airflow_mlops")]:
                del sys.modules[name]  # each parse imports the package afresh, like a new parsing process
            start = time.perf_counter()
            runpy.run_path(str(path))
            times.append(time.perf_counter() - start)
        out[path.name] = {"first_ms": round(times[0] * 1000, 1), "median_ms": round(sorted(times)[10] * 1000, 1)}
    return out


def measure(name: str, month: str) -> dict[str, Any]:
    start = time.perf_counter()
    if name == "day":
        result = _ingest(_days(month)[:1])
    elif name == "month":
        result = _ingest(_days(month))
    else:
        result = _parse()
    return {"name": name, "wall_s": round(time.perf_counter() - start, 2), "peak_mib": round(_peak_mib()), **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--month", default="2013-01")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.month)))
        return
    for name in ("day", "month", "parse"):
        proc = subprocess.run(
            [sys.executable, __file__, "--child", name, "--month", args.month],
            capture_output=True,
            text=True,
            check=True,
        )
        print(json.dumps(json.loads(proc.stdout.strip().splitlines()[-1])))


if __name__ == "__main__":
    main()
