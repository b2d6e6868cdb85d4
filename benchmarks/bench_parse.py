"""Benchmark of DAG parsing against the number of pipelines: 1, 10 and 50 pipeline files.

Run: .venv/bin/python benchmarks/bench_parse.py [--counts 1 10 50] [--repeat 3]

For each count N, N copies of include/pipelines/flight_delays.yaml with distinct names are written to a temp
folder, and the repository's DAG files (dags/) are parsed by Airflow's DagBag with MLOPS_PIPELINES_DIR
pointing there, in a fresh subprocess each time (`--repeat` times; the median is printed). `import_s` is
importing Airflow's DagBag (what a DAG processor pays once), `parse_s` filling the DagBag (what it pays on
every parse of the folder), `per_pipeline_ms` that divided by N, `peak_mib` the process's peak RSS.
Prints a table and one JSON line per count; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "include" / "pipelines" / "flight_delays.yaml"
NAME_LINE = re.compile(r"^name: flight_delays$", re.MULTILINE)


def write_pipelines(folder: Path, count: int) -> list[str]:
    """`count` copies of the shipped pipeline, each under its own name; the names."""
    text = SOURCE.read_text()
    assert len(NAME_LINE.findall(text)) == 1, f"{SOURCE} changed: expected one top-level `name: flight_delays`"
    names = [f"bench_{i:03d}" for i in range(1, count + 1)]
    for name in names:
        (folder / f"{name}.yaml").write_text(NAME_LINE.sub(f"name: {name}", text))
    return names


def child() -> dict[str, Any]:
    """In the subprocess: import DagBag, then fill it from dags/ (the environment names the pipelines folder)."""
    start = time.perf_counter()
    from airflow.dag_processing.dagbag import DagBag

    imported = time.perf_counter()
    bag = DagBag(dag_folder=str(ROOT / "dags"))
    parsed = time.perf_counter()
    return {
        "import_s": imported - start,
        "parse_s": parsed - imported,
        "dags": len(bag.dag_ids),
        "import_errors": len(bag.import_errors),
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def measure(count: int, repeat: int) -> dict[str, Any]:
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        pipelines, home = Path(tmp) / "pipelines", Path(tmp) / "airflow"
        pipelines.mkdir()
        home.mkdir()
        write_pipelines(pipelines, count)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLOPS_"))},
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "MLOPS_PIPELINES_DIR": str(pipelines),
            "MLOPS_EXPECTATIONS_DIR": str(ROOT / "include" / "expectations"),
            "PYTHONPATH": str(ROOT / "plugins"),
        }
        for _ in range(repeat):
            proc = subprocess.run(
                [sys.executable, __file__, "--child"], env=env, capture_output=True, text=True, check=True
            )
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    median = {k: statistics.median(r[k] for r in runs) for k in ("import_s", "parse_s", "peak_mib")}
    return {
        "pipelines": count,
        "dags": runs[0]["dags"],
        "import_errors": runs[0]["import_errors"],
        "import_s": round(median["import_s"], 2),
        "parse_s": round(median["parse_s"], 2),
        "parse_s_min_max": [round(min(r["parse_s"] for r in runs), 2), round(max(r["parse_s"] for r in runs), 2)],
        "per_pipeline_ms": round(median["parse_s"] / count * 1000),
        "peak_mib": round(median["peak_mib"]),
        "runs": len(runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child()))
        return
    results = [measure(n, args.repeat) for n in args.counts]
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print("| pipelines | DAGs | parse (s, median) | per pipeline (ms) | import DagBag (s) | peak RSS (MiB) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['pipelines']} | {r['dags']} | {r['parse_s']} | {r['per_pipeline_ms']} | {r['import_s']} "
            f"| {r['peak_mib']} |"
        )
    for r in results:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
