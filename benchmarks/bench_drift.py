"""Benchmark: detect_drift on 1M current rows against a 100k-row reference, seconds and peak memory.

Run from the repo root: `.venv/bin/python benchmarks/bench_drift.py [--current 1000000] [--reference 100000]`.
The measurement runs in a fresh subprocess, so its peak memory (ru_maxrss) is its own; that peak includes
the input frames, as a monitor task holding them would. Target (issue 5): <= 30 s and <= 1 GiB. No asserts.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]  # tests.fixtures: the realistic synthetic feature frames


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(current_rows: int, reference_rows: int, sample_rows: int) -> dict[str, Any]:
    from airflow_mlops.core.monitor.drift import detect_drift
    from airflow_mlops.core.train.training import feature_spec
    from tests.fixtures.training_data import day_range, flight_config, synthetic_features

    cfg = flight_config()
    days = day_range("2013-01-01", 360)
    started = time.perf_counter()
    reference = synthetic_features(cfg, days, rows_per_day=-(-reference_rows // len(days)), seed=1)
    current = synthetic_features(cfg, days, rows_per_day=-(-current_rows // len(days)), seed=2)
    current["temp"] += 0.3 * float(reference["temp"].std())  # a planted drift, so the report has one to show
    spec = feature_spec(cfg, reference)
    build_s = time.perf_counter() - started
    inputs_mib = (reference.memory_usage(deep=True).sum() + current.memory_usage(deep=True).sum()) / 2**20
    peak_inputs = _peak_mib()
    import evidently  # noqa: F401 - imported before the timer: a monitor task pays it once per process

    started = time.perf_counter()
    result = detect_drift(reference, current, spec.numeric, spec.categorical, sample_rows=sample_rows, seed=0)
    detect_s = time.perf_counter() - started
    return {
        "rows_reference": result.rows_reference,
        "rows_current": result.rows_current,
        "sample_rows": sample_rows,
        "columns": len(result.columns),
        "drifted_columns": result.drifted_columns,
        "html_mib": round(len(result.html) / 2**20, 1),
        "build_inputs_s": round(build_s, 2),
        "detect_drift_s": round(detect_s, 2),
        "input_frames_mib": round(inputs_mib),
        "peak_rss_after_inputs_mib": round(peak_inputs),
        "peak_rss_mib": round(_peak_mib()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--current", type=int, default=1_000_000, help="current rows")
    parser.add_argument("--reference", type=int, default=100_000, help="reference rows")
    parser.add_argument("--sample-rows", type=int, default=20_000, help="detect_drift's sample_rows")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.current, args.reference, args.sample_rows)))
        return
    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            "--current",
            str(args.current),
            "--reference",
            str(args.reference),
            "--sample-rows",
            str(args.sample_rows),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    for key, value in figures.items():
        print(f"  {key:<26} {value}")
    print("  targets                    detect_drift_s <= 30, peak_rss_mib <= 1024")


if __name__ == "__main__":
    main()
