"""Benchmark: the main job's steps at 1x and 10x rows per day on the distributed topology, seconds and peak memory.

Run from the repo root: `.venv/bin/python benchmarks/bench_scale.py [--scales 1,10] [--history-end ...]`.
Targets: for each step, seconds at 10x at most 10 times the seconds at 1x; peak memory of a step's process
tree at most 4 GiB. Figures only, no asserts.

Topology: a distributed stack of the benchmark's own (bench_orchestration's helpers: its own state folder,
ports and PostgreSQL databases): the lake in S3 on the stack's moto server, MLflow on PostgreSQL with its
artifacts in the same S3. Its Airflow components and Celery workers run but get no work.

Data: a copy of the demo pipeline per scale, `flight_delays_x<N>` (same YAML and suites, except that the
flights suite's row count bounds are multiplied by N), fed N times each real day's flights: the day's rows,
then N-1 copies under flight numbers unused that day by the same carrier at the same origin
(core.demo.replicate_flights), with the day's real weather and planes. Default range, per scale:
  history 2013-01-01..2013-03-01 (60 days, the config's train.window_days; built unmeasured; 46 train,
  7 validation and 7 holdout days), live days 2013-03-02..2013-03-08 (7 days, the config's
  monitor.window_days: ingest, score and monitor each day).
At 10x that is about 540,000 rows in the training window and 9,000 to 10,000 rows a live day.

How each step is measured: as a task runs it, but in a fresh process per step (not through Celery), which
imports the ML stack first (not timed: a Celery worker has it preloaded) and then calls the core step
functions the operators call, in order:
  ingest    ingest_day for each live day (copy to raw, Great Expectations, features), as <p>__ingest's tasks
  train     train_step on the history window (the config's search, capped at train.search.max_seconds)
  evaluate  evaluate_step (no champion yet: the challenger alone, plus permutation importance)
  register  register_step (model card, version)
  score     score_partition for each live day, with the version just registered as champion
  monitor   monitor_step for each live day (drift against the reference sample, quality on matured labels)
Seconds: the calls alone. Peak RSS: of the process and its children, sampled every 50 ms with psutil, or
the process's own high-water mark (VmHWM) when higher; it includes the interpreter and the imports (about
0.5 GiB), as in a task. A step over several days runs them one after the other in its one process.
Each line also shows the load average when the step began: the machine is shared. Summing the RSS of a
process and of a child it forks counts their shared pages twice, so "peak" is an upper bound; the step lines
also show the process's own high-water mark.

Measured on the 2-core shared machine (defaults, one run; 1-minute load average 6.6-10.1 from other work):
  step        1x s   10x s  ratio  1x MiB  10x MiB
  ingest      15.8    17.8   1.13     392      425   (7 days: 6,551 and 65,510 rows)
  train       33.6   135.7   4.04     478     1260   (50,953 and 509,530 labelled rows in the window)
  evaluate    25.1    33.9   1.35     482      851
  register     0.9     0.6   0.68     333      425
  score       12.2    15.1   1.24     620      458   (1x: a short-lived forked child counted; own 432)
  monitor    147.0   148.9   1.01     579      606   (7 days; about 21 s a day at either scale)
Every step meets both targets: per-day fixed costs (MLflow calls, Great Expectations' context, the monitor's
report and run) dominate below about 10,000 rows a day; only train grows with the rows (4x for 10x).

Main job, 1 vs 2 Celery workers (MLOPS_CELERY_WORKERS; 2 task slots each): not this script, the stack's
demo on the distributed profile, own state folder and ports, history 2013-01-01..2013-02-14, live days
2013-02-15..2013-02-21:
  MLOPS_STATE_DIR=/tmp/w1 MLOPS_CELERY_WORKERS=1 .venv/bin/python -m airflow_mlops.stack demo --distributed
    --end 2013-02-21
(one command line) with ports, databases, Redis DB and Celery queue of its own set the same way (MLOPS_*
variables). Seconds from the demo's summary; load: the 1-minute load average when it started, and its mean
(max) sampled every 30 s.
  run  workers  load: start, mean (max)  stack up  land+history  first train+deploy  live days  total (s)
  a       1      5.2, 4.2 (6.5)              83           70                   84        157    394
  a       2      2.3, 4.9 (6.8)              83           71                   89        189    433
  b       2      8.2, 9.1 (11.8)            134          137                  122        247    641
  b       1      9.2, 10.4 (15.6)           137          113                  117        359    726
On two cores a second worker bought nothing measurable: within each pair (a, b) the run under the lower load
was the faster, whatever its number of workers. The live days are a chain (ingest, then score and
monitor on its Asset events, two ingest runs at a time), so one worker's two slots are rarely all busy, and
the CPU, not the slots, is what runs out; the second worker costs about 0.7 GiB PSS (its preloaded ML stack).
Asset events coalesce differently from run to run (score and monitor ran 2 to 5 times for the 7 days).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import bench_orchestration as orch

ROOT = Path(__file__).resolve().parents[1]
BASE_PIPELINE = "flight_delays"
STEPS = ("ingest", "train", "evaluate", "register", "score", "monitor")
TIME_RATIO_TARGET = 10.0
"""Seconds at 10x over seconds at 1x, at most (scaled to the factor for other scales)."""
MEMORY_TARGET_MIB = 4096
STACK = orch.BenchStack(
    "/tmp/bench-scale",
    18180,
    15100,
    18100,
    {
        "MLOPS_AIRFLOW_DB": "mlops_bench_scale_airflow",
        "MLOPS_MLFLOW_DB": "mlops_bench_scale_mlflow",
        "MLOPS_S3_PORT": "19100",
        "MLOPS_WORKER_LOG_SERVER_PORT": "18893",
        "MLOPS_CELERY_WORKERS": "1",  # no task runs through Celery here: one idle worker is enough
    },
)


# The step processes -----------------------------------------------------------------------------------------


def child_main(spec: Mapping[str, Any]) -> None:
    """Body of a step's process: imports (untimed), then the step; one JSON line on stdout."""
    from airflow_mlops.config import pipeline_by_name
    from airflow_mlops.core.ingest import validation  # noqa: F401  (Great Expectations: preloaded in a worker)
    from airflow_mlops.core.ingest.steps import ingest_day
    from airflow_mlops.core.lake.storage import open_lake
    from airflow_mlops.core.monitor.monitor import monitor_step
    from airflow_mlops.core.registry.tracking import RunTags, Tracking
    from airflow_mlops.core.score import score_partition
    from airflow_mlops.core.train.steps import evaluate_step, register_step, train_step

    cfg = pipeline_by_name(spec["pipeline"])
    lake = open_lake(spec["lake_root"])
    tracking = Tracking(spec["mlflow_uri"])
    step, days = spec["step"], spec["days"]

    def tags(dag: str, task: str, ds: str) -> RunTags:
        return RunTags(dag_id=f"{cfg.name}__{dag}", run_id=f"bench_scale_{dag}_{ds}", logical_date=ds, task=task)

    train_tags = tags("train", step, spec["end_ds"])
    steps: dict[str, Callable[[], Any]] = {
        "ingest": lambda: [ingest_day(lake, cfg, ds).rows for ds in days],
        "train": lambda: train_step(lake, cfg, tracking, train_tags, spec["end_ds"], spec["window_days"], "bench"),
        "evaluate": lambda: evaluate_step(lake, cfg, tracking, train_tags, spec["trained"], None),
        "register": lambda: register_step(cfg, tracking, train_tags, spec["trained"], spec["evaluated"], None),
        "score": lambda: [score_partition(lake, cfg, tracking, ds)["rows"] for ds in days],
        "monitor": lambda: [
            monitor_step(lake, cfg, tracking, tags("monitor", "monitor", ds), ds)["outcome"] for ds in days
        ],
    }
    started = time.perf_counter()
    out = steps[step]()
    seconds = time.perf_counter() - started
    hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("BENCH-RESULT " + json.dumps({"seconds": seconds, "hwm_mib": hwm, "out": out}, default=str), flush=True)


@dataclass
class Measured:
    scale: int
    step: str
    seconds: float
    peak_mib: float
    load: float
    out: Any


def tree_rss_mib(proc: Any) -> float:
    """RSS of a process and all its children (psutil.Process), MiB; 0 once it is gone."""
    import psutil

    total = 0
    try:
        for p in [proc, *proc.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):  # a child that just ended
                total += p.memory_info().rss
    except psutil.Error:
        return 0.0
    return total / 2**20


def run_step(env: Mapping[str, str], spec: Mapping[str, Any], scale: int, timeout: float) -> Measured:
    """One step in a fresh process, its process tree's RSS sampled until it exits."""
    import psutil

    load = os.getloadavg()[0]
    with tempfile.NamedTemporaryFile("w", suffix=".json") as spec_file, tempfile.TemporaryFile() as out, \
            tempfile.TemporaryFile() as err:  # fmt: skip
        json.dump(spec, spec_file)  # a file: the step results handed on may outgrow a command-line argument
        spec_file.flush()
        argv = [sys.executable, str(Path(__file__).resolve()), "--child", spec_file.name]
        popen = subprocess.Popen(argv, env=dict(env), cwd=ROOT, stdout=out, stderr=err)
        proc = psutil.Process(popen.pid)
        deadline, peak = time.monotonic() + timeout, 0.0
        while popen.poll() is None:
            peak = max(peak, tree_rss_mib(proc))
            if time.monotonic() > deadline:
                popen.kill()
                popen.wait()
                raise SystemExit(f"step {spec['step']} at {scale}x not done after {timeout:.0f}s")
            time.sleep(0.05)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    lines = [line for line in stdout.splitlines() if line.startswith("BENCH-RESULT ")]
    if popen.returncode != 0 or not lines:
        raise SystemExit(f"step {spec['step']} at {scale}x failed (exit {popen.returncode}):\n{stderr[-5000:]}")
    result = json.loads(lines[-1].removeprefix("BENCH-RESULT "))
    m = Measured(scale, spec["step"], result["seconds"], max(peak, result["hwm_mib"]), load, result["out"])
    own = result["hwm_mib"]
    print(f"  {scale:>3}x {m.step:<9} {m.seconds:8.1f} s  peak RSS {m.peak_mib:6.0f} MiB (own {own:.0f})  "
          f"load {load:4.1f}  {summary_of(m)}", flush=True)  # fmt: skip
    return m


def summary_of(m: Measured) -> str:
    """What the step did, in a few words."""
    out = m.out
    if m.step in ("ingest", "score"):
        return f"{sum(out)} rows over {len(out)} days"
    if m.step == "train":
        return f"{out['data'].get('rows_labelled')} labelled rows in the window"
    if m.step == "evaluate":
        return f"gates {out['decision']['outcome']}"
    if m.step == "register":
        return f"version {out['version']} ({out['outcome']})"
    return "outcomes " + ", ".join(out)


# Data -------------------------------------------------------------------------------------------------------


def scaled_pipeline(folder: Path, scale: int, base: tuple[Path, Path]) -> tuple[str, dict[str, str]]:
    """Write the demo pipeline as `flight_delays_x<scale>` with its suites; its name and the variables to find it.

    Only the name and the flights suite's row count bounds (times `scale`) differ from the demo pipeline.
    :param base: the folders of the demo pipeline and of its suites.
    """
    from airflow_mlops import settings

    name = f"{BASE_PIPELINE}_x{scale}"
    pipelines, suites = folder / f"x{scale}" / "pipelines", folder / f"x{scale}" / "expectations"
    pipelines.mkdir(parents=True, exist_ok=True)
    suites.mkdir(parents=True, exist_ok=True)
    text = (base[0] / f"{BASE_PIPELINE}.yaml").read_text()
    (pipelines / f"{name}.yaml").write_text(text.replace(f"name: {BASE_PIPELINE}\n", f"name: {name}\n", 1))
    for path in base[1].glob("*.json"):
        suite = json.loads(path.read_text())
        for exp in suite.get("expectations", []):
            if exp["type"] == "expect_table_row_count_to_be_between" and path.name == "flights.json":
                exp["kwargs"] = {k: v * scale for k, v in exp["kwargs"].items()}
        (suites / path.name).write_text(json.dumps(suite))
    return name, {settings.ENV_PIPELINES_DIR: str(pipelines), settings.ENV_EXPECTATIONS_DIR: str(suites)}


def land_live_days(lake_root: str, s3: Mapping[str, str], pipeline: str, start: str, end: str, scale: int) -> None:
    from airflow_mlops.config import pipeline_by_name
    from airflow_mlops.core.demo import feed_range
    from airflow_mlops.core.lake.storage import open_lake

    feed_range(open_lake(lake_root, dict(s3) or None), pipeline_by_name(pipeline), start, end, scale)


def promote(mlflow_uri: str, pipeline: str, version: str) -> None:
    """Make the version champion, as <p>__deploy would (score and monitor need one)."""
    from airflow_mlops.config import pipeline_by_name
    from airflow_mlops.core.registry import promotion
    from airflow_mlops.core.registry.tracking import Tracking

    name = pipeline_by_name(pipeline).train.model_name(pipeline)
    promotion.promote(Tracking(mlflow_uri), name, version, who="bench_scale", why="benchmark", dag_run_id="bench")


# Report -----------------------------------------------------------------------------------------------------


def report(measured: Sequence[Measured], scales: Sequence[int]) -> None:
    by = {(m.scale, m.step): m for m in measured}
    base, top = scales[0], scales[-1]
    factor = top / base
    print(f"\nsummary: seconds of each step at {base}x and {top}x rows per day, peak RSS of its process tree (MiB)")
    header = (
        f"{'step':<10} {f'{base}x s':>8} {f'{top}x s':>8} {'ratio':>6} {f'{base}x MiB':>8} {f'{top}x MiB':>8}  verdict"
    )
    print(header)
    print("-" * len(header))
    for step in STEPS:
        a, b = by[(base, step)], by[(top, step)]
        ratio = b.seconds / a.seconds if a.seconds > 0 else float("nan")
        misses = []
        if ratio > TIME_RATIO_TARGET * factor / 10:
            misses.append(f"time ratio > {TIME_RATIO_TARGET * factor / 10:g}")
        if max(a.peak_mib, b.peak_mib) > MEMORY_TARGET_MIB:
            misses.append(f"peak > {MEMORY_TARGET_MIB} MiB")
        verdict = "misses: " + ", ".join(misses) if misses else "meets both"
        print(
            f"{step:<10} {a.seconds:8.1f} {b.seconds:8.1f} {ratio:6.2f} {a.peak_mib:8.0f} {b.peak_mib:8.0f}  {verdict}"
        )
    total = [sum(by[(s, step)].seconds for step in STEPS) for s in (base, top)]
    print(f"{'all':<10} {total[0]:8.1f} {total[1]:8.1f} {total[1] / total[0]:6.2f}")
    print(f"load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus")


# Main -------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--scales", default="1,10", help="rows-per-day factors, smallest first (default 1,10)")
    parser.add_argument("--history-start", default="2013-01-01")
    parser.add_argument("--history-end", default="2013-03-01", help="last history day: the training window's end")
    parser.add_argument("--live-days", type=int, default=7, help="days after the history: ingest, score, monitor")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds one step may take")
    orch.add_stack_options(parser, STACK)
    args = parser.parse_args()
    if args.child:
        child_main(json.loads(Path(args.child).read_text()))
        return
    scales = sorted(int(s) for s in args.scales.split(","))
    if len(scales) < 2 or scales[0] < 1:
        parser.error("--scales wants at least two factors >= 1, e.g. 1,10")

    from airflow_mlops import settings
    from airflow_mlops.stack import control
    from airflow_mlops.stack.components import s3_client_env, stack_env

    cfg = orch.stack_config(parser, args, "distributed", STACK)
    history_end = date.fromisoformat(args.history_end)
    window_days = (history_end - date.fromisoformat(args.history_start)).days + 1
    live = [(history_end + timedelta(days=i)).isoformat() for i in range(1, args.live_days + 1)]
    print(f"cpus: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}; stack in {cfg.state_dir}")
    print(f"history {args.history_start}..{args.history_end} ({window_days} days), live days {live[0]}..{live[-1]}")
    started_stack = False
    measured: list[Measured] = []
    try:
        keys = control.up(cfg)
        started_stack = True
        env = {**stack_env(cfg, keys), **s3_client_env(cfg)}
        s3 = cfg.s3_settings()
        folder = Path(tempfile.mkdtemp(prefix="pipelines-", dir=cfg.state_dir))
        base = (settings.pipelines_dir(), settings.expectations_dir())  # before the loop points them elsewhere
        for scale in scales:
            pipeline, found = scaled_pipeline(folder, scale, base)
            os.environ.update(found)  # this process builds the history with the same pipeline files
            t = time.perf_counter()
            built = orch.prepare_features(cfg.lake_root, s3, pipeline, args.history_start, args.history_end, scale)
            land_live_days(cfg.lake_root, s3, pipeline, live[0], live[-1], scale)
            print(f"\n{scale}x: built {built} history partitions, landed the live days: {time.perf_counter() - t:.0f}s")
            spec: dict[str, Any] = {
                "pipeline": pipeline,
                "lake_root": cfg.lake_root,
                "mlflow_uri": cfg.mlflow_url,
                "days": live,
                "end_ds": args.history_end,
                "window_days": window_days,
            }
            step_env = {**env, **found}
            for step in STEPS:
                m = run_step(step_env, {**spec, "step": step}, scale, args.timeout)
                measured.append(m)
                if step == "train":
                    spec["trained"] = m.out
                elif step == "evaluate":
                    spec["evaluated"] = m.out
                elif step == "register":
                    promote(cfg.mlflow_url, pipeline, m.out["version"])
        report(measured, scales)
    finally:
        if started_stack and not args.keep_stack:
            control.down(cfg)


if __name__ == "__main__":
    main()
