"""Benchmark: wall time of `<p>__train` run by the Airflow scheduler over the same steps in one plain process.

Run from the repo root: `.venv/bin/python benchmarks/bench_orchestration.py [--profile distributed] [--repeats N]`.
Targets: ratio of the medians at most 1.15 on the embedded profile (LocalExecutor), 1.3 on the distributed one
(CeleryExecutor, two workers; it needs PostgreSQL and Redis, see --setting). Figures only, no asserts.

It starts a local stack of its own (state folder and ports given by the options; never the default ones),
builds the feature partitions of --start..--end with the core ingest functions, then alternates:

* airflow: a manual run of `<p>__train` through the REST API (window end --end, the config's window). Measured
  from the DAG run's queued_at to the end_date of its `register` task, both stamped by Airflow. Tasks after
  `register` (passed_gates, trigger_deploy when train.trigger_deploy is set) are not counted; the next run
  starts only once the DAG run has ended.
* plain: a fresh Python process, with the environment the stack gives its tasks, that calls train_step,
  evaluate_step and register_step on the same lake and MLflow server. Measured from the spawn of the process
  to the return of register_step, so its interpreter start and imports (paid once) count too.

One unmeasured run of each mode goes first: it creates the MLflow experiment and registered model and warms
the page cache, so every measured run takes the same path (experiment and model exist, no champion; the
deploy DAG stays paused, so no champion appears). Modes alternate, so drift in machine load hits both; each
run shows the load average. Airflow's part is split per task: the wait before it (until scheduled, queued,
running), its start-up (DAG file parse) and execute(), from Airflow's timestamps and the task logs. At the
end, fresh-process probes time what every task pays again and the plain process pays once.

The embedded stack's scheduler runs LocalExecutor workers from a forkserver that preloads the ML stack
(stack.components.FORKSERVER_PRELOAD, preload.py), so a task is a fork that does not import pandas,
scikit-learn, MLflow or skops again; the first task waits once while the forkserver imports them (the
warm-up run). To measure without it (every task importing everything itself), pass
  --airflow-setting AIRFLOW__SCHEDULER__MP_START_METHOD=fork
The distributed stack's Celery workers import the same modules when they start, before their pool forks
(celery_config.py); to measure without it, point the setting at Airflow's default Celery configuration:
  --airflow-setting AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS=\
airflow.providers.celery.executors.default_celery.DEFAULT_CELERY_CONFIG
The start-up probes at the end time those imports in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("train", "evaluate", "register")
"""Tasks of `<p>__train` that are measured, in order (each one calls the core step of the same name)."""
TERMINAL = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})
BAD = frozenset({"failed", "skipped", "upstream_failed", "removed", "up_for_retry", "up_for_reschedule"})
"""States of a measured task that end the benchmark: a retry would measure Airflow's retry delay."""


@dataclass
class Measured:
    """One measured run: wall seconds and per-step figures (seconds)."""

    mode: str
    label: str
    wall: float
    steps: dict[str, dict[str, float]] = field(default_factory=dict)
    """step -> {"wait": before it started, "run": its own time, ...}; plain: "startup" under "train"."""
    note: str = ""


# The plain process ------------------------------------------------------------------------------------------


def child_main(spec: Mapping[str, Any]) -> None:
    """Body of the plain process: the three steps as the operators call them, timed; one JSON line on stdout."""
    spawned = float(spec["spawned"])
    from airflow_mlops.config import pipeline_by_name
    from airflow_mlops.core.lake.storage import open_lake
    from airflow_mlops.core.registry.tracking import RunTags, Tracking
    from airflow_mlops.core.train.steps import evaluate_step, register_step, train_step

    cfg = pipeline_by_name(spec["pipeline"])
    lake = open_lake(spec["lake_root"])
    tracking = Tracking(spec["mlflow_uri"])
    window_days = cfg.train.window_days

    def tags(task: str) -> RunTags:
        return RunTags(dag_id=spec["dag_id"], run_id=spec["run_id"], logical_date=spec["ds"], task=task)

    marks = {"ready": time.time()}
    trained = train_step(lake, cfg, tracking, tags("train"), spec["end_ds"], window_days, "benchmark")
    marks["train"] = time.time()
    evaluated = evaluate_step(lake, cfg, tracking, tags("evaluate"), trained, None)
    marks["evaluate"] = time.time()
    registered = register_step(cfg, tracking, tags("register"), trained, evaluated, spec["airflow_run_url"])
    marks["register"] = time.time()
    out = {
        "spawned": spawned,
        "marks": marks,
        "version": registered["version"],
        "outcome": registered["outcome"],
        "rows": trained["data"].get("rows_labelled"),
    }
    print("BENCH-RESULT " + json.dumps(out), flush=True)


def plain_run(env: Mapping[str, str], spec: dict[str, Any], label: str, timeout: float) -> Measured:
    """Run the steps in a fresh process of this interpreter; figures from its marks (same host clock)."""
    spec = {**spec, "spawned": time.time()}
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
        env=dict(env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("BENCH-RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"plain run failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    out = json.loads(lines[-1].removeprefix("BENCH-RESULT "))
    marks, start = out["marks"], float(out["spawned"])
    steps = {"train": {"startup": marks["ready"] - start, "run": marks["train"] - marks["ready"]}}
    steps["evaluate"] = {"run": marks["evaluate"] - marks["train"]}
    steps["register"] = {"run": marks["register"] - marks["evaluate"]}
    note = f"version {out['version']} ({out['outcome']}), {out['rows']} labelled rows"
    return Measured("plain", label, marks["register"] - start, steps, note)


# The Airflow run --------------------------------------------------------------------------------------------


def _ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value).timestamp() if value else None


def log_phases(log_file: Path, start: float, end: float) -> dict[str, float]:
    """Split a task's running time by its log: start-up (of it, the DAG file parse), execute(), and after it.

    The Task SDK logs `::endgroup::` when execute() begins and `::group::Post Execute` when it returned.
    """
    try:
        events = [json.loads(line) for line in log_file.read_text().splitlines() if line.startswith("{")]
    except (FileNotFoundError, ValueError):
        return {}
    first: dict[str, dict[str, Any]] = {}
    for event in events:
        first.setdefault(str(event.get("event")), event)
    began, ended = first.get("::endgroup::"), first.get("::group::Post Execute")
    if began is None or ended is None:
        return {}
    began_at, ended_at = _ts(began["timestamp"]) or start, _ts(ended["timestamp"]) or end
    parsed = first.get("Worker startup parse complete", {})
    return {
        "startup": began_at - start,
        "parse": float(parsed.get("dag_file_parse_ms", "nan")) / 1000,
        "execute": ended_at - began_at,
        "after": end - ended_at,
    }


def airflow_run(
    api: Any,
    dag_id: str,
    run_id: str,
    end_ds: str,
    label: str,
    log_roots: Sequence[Path],
    timeout: float,
    tail_timeout: float,
) -> Measured:
    """Trigger one run, wait for `register` (then for the run to end) and read Airflow's own timestamps."""
    body = {"dag_run_id": run_id, "logical_date": None, "conf": {"end_date": end_ds, "reason": "benchmark"}}
    api.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)
    deadline = time.monotonic() + timeout
    tis: dict[str, dict[str, Any]] = {}
    while True:
        answer = api.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", limit=100)
        tis = {ti["task_id"]: ti for ti in answer["task_instances"]}
        states = {t: tis.get(t, {}).get("state") for t in STEPS}
        if any(s in BAD for s in states.values()):
            api.request("PATCH", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}", {"state": "failed"})
            raise SystemExit(f"airflow run {run_id}: task states {states}; task logs in {[str(r) for r in log_roots]}")
        if states["register"] == "success":
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"airflow run {run_id} not done after {timeout:.0f}s: {states}")
        time.sleep(1)
    run = api.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
    queued = _ts(run["queued_at"])
    assert queued is not None
    steps: dict[str, dict[str, float]] = {}
    previous_end = queued
    for task in STEPS:
        ti = tis[task]
        start, end = _ts(ti["start_date"]), _ts(ti["end_date"])
        assert start is not None and end is not None
        figures = {"wait": start - previous_end, "run": end - start}
        scheduled, queued_ti = _ts(ti.get("scheduled_when")), _ts(ti.get("queued_when"))
        if scheduled is not None and queued_ti is not None:
            # Where the wait went: until the scheduler made it schedulable, until the executor got it, until it ran.
            figures.update(
                to_scheduled=scheduled - previous_end, to_queued=queued_ti - scheduled, to_running=start - queued_ti
            )
        rel = Path(f"dag_id={dag_id}", f"run_id={run_id}", f"task_id={task}", "attempt=1.log")
        # One log folder on the embedded stack; one per worker on the distributed one (the task's worker has it).
        log_file = next((root / rel for root in log_roots if (root / rel).is_file()), log_roots[0] / rel)
        figures.update(log_phases(log_file, start, end))
        steps[task] = figures
        previous_end = end
    tail = _finish_tail(api, dag_id, run_id, tail_timeout)
    return Measured("airflow", label, previous_end - queued, steps, tail)


def _finish_tail(api: Any, dag_id: str, run_id: str, timeout: float) -> str:
    """Wait for the tasks after `register`; a tail stuck in retries (no deploy DAG yet) has its run marked failed."""
    deadline = time.monotonic() + timeout
    while True:
        run = api.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        answer = api.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", limit=100)
        tail = {ti["task_id"]: ti["state"] for ti in answer["task_instances"] if ti["task_id"] not in STEPS}
        text = ", ".join(f"{t} {s}" for t, s in sorted(tail.items())) or "no tail tasks"
        if run["state"] in TERMINAL:
            return f"run {run['state']}; {text}"
        if time.monotonic() > deadline:
            # Only so the next run is not held back by max_active_runs=1; the measured part ended already.
            api.request("PATCH", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}", {"state": "failed"})
            return f"run marked failed after {timeout:.0f}s waiting for {text}"
        time.sleep(1)


# Preparing the stack ----------------------------------------------------------------------------------------


def prepare_features(lake_root: str, s3: dict[str, str], pipeline: str, start: str, end: str, scale: int = 1) -> int:
    """Land the demo days and build their feature partitions with the core ingest functions (skips built days).

    :param scale: land `scale` times each day's flights (core.demo.replicate_flights).
    """
    from airflow_mlops.config import pipeline_by_name
    from airflow_mlops.core.demo import date_range, feed_range
    from airflow_mlops.core.ingest.steps import build_feature_partition, ingest_source
    from airflow_mlops.core.lake import paths
    from airflow_mlops.core.lake.storage import open_lake

    cfg = pipeline_by_name(pipeline)
    lake = open_lake(lake_root, s3 or None)
    days = [ds for ds in date_range(start, end) if not lake.exists(lake.uri(paths.features(cfg.name, ds)))]
    if days:
        feed_range(lake, cfg, days[0], days[-1], scale)
    for ds in days:
        for source in cfg.sources:
            ingest_source(lake, cfg, source, ds)
        build_feature_partition(lake, cfg, ds)
    return len(days)


def wait_unpaused(api: Any, dag_id: str) -> None:
    """Unpause the DAG and check it has no runs of its own (schedule outside its end_date) to get in the way."""
    api.set_paused(dag_id, False)
    time.sleep(5)
    runs = api.request("GET", f"/api/v2/dags/{dag_id}/dagRuns", limit=100)["dag_runs"]
    others = [r["dag_run_id"] for r in runs if not str(r["dag_run_id"]).startswith("bench")]
    if others:
        print(f"note: {dag_id} has runs not made by this benchmark: {others}")


# Diagnosis --------------------------------------------------------------------------------------------------

PROBE = """
import json, runpy, time
t0 = time.time()
import airflow.sdk.execution_time.task_runner
t1 = time.time()
runpy.run_path({dag_file!r})
t2 = time.time()
import airflow_mlops.core.train.steps
t3 = time.time()
print("BENCH-PROBE", json.dumps([t1 - t0, t2 - t1, t3 - t2]))
"""
"""One fresh process: import the task runner, parse the DAG file, import the training code (in that order)."""
PROBE_NAMES = (
    "import the Task SDK runner (inherited from the worker: not paid per task)",
    "parse the DAG file (paid by every task: the preload imports the package, not the DAG file)",
    "import the training code (preloaded by the forkserver; paid by every task without it)",
)


def diagnose(env: Mapping[str, str], repeats: int) -> dict[str, float]:
    """Median seconds of each part of PROBE over fresh processes."""
    samples: list[list[float]] = []
    for _ in range(repeats):
        proc = subprocess.run(
            [sys.executable, "-c", PROBE.format(dag_file=str(ROOT / "dags" / "mlops_pipelines.py"))],
            env=dict(env),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
        line = [x for x in proc.stdout.splitlines() if x.startswith("BENCH-PROBE ")][-1]
        samples.append(json.loads(line.removeprefix("BENCH-PROBE ")))
    return {name: statistics.median(s[i] for s in samples) for i, name in enumerate(PROBE_NAMES)}


# Report -----------------------------------------------------------------------------------------------------


def print_run(m: Measured) -> None:
    parts = []
    for step, figures in m.steps.items():
        extra = " ".join(f"{k} {v:.2f}" for k, v in figures.items() if k not in ("run",))
        parts.append(f"{step} {figures['run']:.2f} ({extra})" if extra else f"{step} {figures['run']:.2f}")
    print(f"  {m.mode:<8} {m.label:<10} wall {m.wall:7.2f} s | " + " | ".join(parts) + f" | {m.note}", flush=True)


def summarize(runs: Sequence[Measured], probes: Mapping[str, float] | None, target: float) -> None:
    by_mode = {mode: [m for m in runs if m.mode == mode] for mode in ("airflow", "plain")}
    med = {mode: statistics.median(m.wall for m in ms) for mode, ms in by_mode.items()}
    print(f"\nsummary, medians of {len(by_mode['airflow'])} measured runs per mode (seconds):")
    print(f"{'':<26} {'airflow':>9} {'plain':>9} {'extra':>9}")

    def row(name: str, a: float, p: float) -> None:
        print(f"{name:<26} {a:9.2f} {p:9.2f} {a - p:9.2f}")

    def step_median(mode: str, step: str, key: str) -> float:
        return statistics.median(m.steps[step].get(key, 0.0) for m in by_mode[mode])

    for step in STEPS:
        row(f"{step}: before it started", step_median("airflow", step, "wait"), step_median("plain", step, "startup"))
        row(f"{step}: running", step_median("airflow", step, "run"), step_median("plain", step, "run"))
    row("wall (queued/spawn->register)", med["airflow"], med["plain"])
    ratio = med["airflow"] / med["plain"]
    verdict = "meets" if ratio <= target else "misses"
    print(f"ratio airflow/plain: {ratio:.3f} ({verdict} the target <= {target})")
    # Without the plain process's interpreter start and imports: the fair figure when the executor preloads them.
    steps_only = statistics.median(m.wall - m.steps["train"]["startup"] for m in by_mode["plain"])
    fair = med["airflow"] / steps_only
    print(f"ratio airflow/plain steps only (plain minus its start-up: {steps_only:.2f} s): {fair:.3f}")
    for key in ("to_scheduled", "to_queued", "to_running"):
        figures = [f"{s} {step_median('airflow', s, key):.2f}" for s in STEPS]
        print(f"  airflow wait {key:<13}: " + ", ".join(figures))
    if probes:
        print("start-up costs in a fresh process (median):")
        for name, seconds in probes.items():
            print(f"  {seconds:6.2f} s  {name}")
    print(f"load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus")


# The benchmark's own stack (also used by bench_scale.py) ------------------------------------------------------


@dataclass(frozen=True)
class BenchStack:
    """Defaults of a benchmark's own stack: never the default stack's folder, ports or databases."""

    state_dir: str
    airflow_port: int
    mlflow_port: int
    model_server_port: int
    distributed: Mapping[str, str]


def add_stack_options(parser: argparse.ArgumentParser, defaults: BenchStack) -> None:
    """Options of the benchmark's stack: folder, ports, extra Airflow and stack settings, --keep-stack."""
    parser.add_argument("--state-dir", help=f"the benchmark stack's folder (default {defaults.state_dir})")
    parser.add_argument("--airflow-port", type=int, default=defaults.airflow_port)
    parser.add_argument("--mlflow-port", type=int, default=defaults.mlflow_port)
    parser.add_argument("--model-server-port", type=int, default=defaults.model_server_port)
    parser.add_argument(
        "--airflow-setting",
        action="append",
        default=[],
        metavar="AIRFLOW__SECTION__KEY=VALUE",
        help="extra Airflow setting for the stack (repeatable), to measure a tuning; a stack left running with "
        "--keep-stack keeps its old settings",
    )
    parser.add_argument("--keep-stack", action="store_true", help="leave the stack running at the end")
    shown = ", ".join(f"{k}={v}" for k, v in defaults.distributed.items())
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="MLOPS_KEY=VALUE",
        help="a stack setting (repeatable), e.g. MLOPS_AIRFLOW_DB=... or MLOPS_REDIS_URL=... for the distributed "
        f"profile (defaults: {shown}, Redis DB 0)",
    )


def stack_config(parser: argparse.ArgumentParser, args: argparse.Namespace, profile: str, defaults: BenchStack) -> Any:
    """The StackConfig of the benchmark's stack from the options of add_stack_options."""
    from airflow_mlops.stack.settings import StackConfig, clean_environ

    overrides = {
        "MLOPS_STACK_PROFILE": profile,
        "MLOPS_STATE_DIR": args.state_dir or defaults.state_dir.replace("<profile>", profile),
        "MLOPS_AIRFLOW_PORT": str(args.airflow_port),
        "MLOPS_MLFLOW_PORT": str(args.mlflow_port),
        "MLOPS_MODEL_SERVER_PORT": str(args.model_server_port),
        "MLOPS_LAKE_ROOT": "",
    }
    if profile == "distributed":
        overrides.update(defaults.distributed)
    for option, prefix, items in (
        ("--airflow-setting", "AIRFLOW__", args.airflow_setting),
        ("--setting", "MLOPS_", args.setting),
    ):
        for item in items:
            key, _, value = item.partition("=")
            if not key.startswith(prefix) or not _:
                parser.error(f"{option} wants {prefix}KEY=VALUE, got {item!r}")
            overrides[key] = value
    # The caller's Airflow/MLflow variables must not leak into this stack (or point it at another one).
    return StackConfig.load(environ=clean_environ(os.environ), overrides=overrides)


STACK = BenchStack(
    "/tmp/bench-orchestration-<profile>",
    18080,
    15000,
    18000,
    {
        "MLOPS_AIRFLOW_DB": "mlops_bench_airflow",
        "MLOPS_MLFLOW_DB": "mlops_bench_mlflow",
        "MLOPS_S3_PORT": "19000",
        "MLOPS_WORKER_LOG_SERVER_PORT": "18793",
    },
)
"""This benchmark's stack; its distributed settings differ from the default stack's (databases, ports)."""


# Main -------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--pipeline", default="flight_delays")
    parser.add_argument("--start", default="2013-01-01", help="first day of features to build")
    parser.add_argument("--end", default="2013-03-01", help="last day of features, and the window end")
    parser.add_argument("--repeats", type=int, default=3, help="measured runs per mode (after one warm-up each)")
    parser.add_argument(
        "--profile", choices=("embedded", "distributed"), default="embedded", help="the stack's profile"
    )
    add_stack_options(parser, STACK)
    parser.add_argument("--no-diagnose", action="store_true", help="skip the per-task start-up probes")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds one run may take")
    parser.add_argument("--target", type=float, help="ratio target (default 1.15 embedded, 1.3 distributed)")
    args = parser.parse_args()
    if args.child:
        child_main(json.loads(args.child))
        return

    from airflow_mlops.stack import control, supervisor
    from airflow_mlops.stack.airflow_api import api_for
    from airflow_mlops.stack.components import s3_client_env, stack_env
    from airflow_mlops.stack.runs import wait_for_dag

    target = args.target or (1.3 if args.profile == "distributed" else 1.15)
    cfg = stack_config(parser, args, args.profile, STACK)
    dag_id = f"{args.pipeline}__train"
    print(f"cpus: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}; stack in {cfg.state_dir}")
    print(f"profile {cfg.profile}; extra settings: {(args.airflow_setting + args.setting) or 'none'}")
    started_stack = False
    try:
        keys = control.up(cfg)
        started_stack = True
        env = {**stack_env(cfg, keys), **s3_client_env(cfg)}  # the plain process opens the lake as the CLI does
        started = time.perf_counter()
        s3 = cfg.s3_settings() if cfg.lake_root.startswith("s3://") else {}
        built = prepare_features(cfg.lake_root, s3, args.pipeline, args.start, args.end)
        print(f"features: built {built} partitions of {args.start}..{args.end} in {time.perf_counter() - started:.0f}s")
        api = api_for(cfg)
        wait_for_dag(cfg, api, dag_id, timeout=180)
        wait_unpaused(api, dag_id)
        stamp = datetime.now(UTC).strftime("%H%M%S")
        log_roots = [cfg.workers_dir / w.name / "logs" for w in cfg.workers] or [cfg.logs_dir / "airflow"]
        today = date.today().isoformat()
        spec = {
            "pipeline": args.pipeline,
            "dag_id": dag_id,
            "lake_root": cfg.lake_root,
            "mlflow_uri": cfg.mlflow_url,
            "end_ds": args.end,
            "ds": today,  # what the DAG's run date renders to for a manual run without a logical date
        }

        def one(mode: str, i: int) -> Measured:
            label = "warm-up" if i == 0 else f"#{i}"
            load = os.getloadavg()[0]  # other work on the machine slows both modes: shown with each run
            run_id = f"bench_{mode}_{stamp}_{i}"
            if mode == "airflow":
                m = airflow_run(api, dag_id, run_id, args.end, label, log_roots, args.timeout, tail_timeout=60)
            else:
                url = f"{cfg.airflow_url}/dags/{dag_id}/runs/{run_id}"
                m = plain_run(env, {**spec, "run_id": run_id, "airflow_run_url": url}, label, args.timeout)
            m.note += f"; load {load:.1f}"
            print_run(m)
            time.sleep(3)  # let the last run's leftovers (tail tasks, log flushes) settle
            return m

        print("runs (seconds; airflow: wait = from upstream end or run queued to task start):")
        measured: list[Measured] = []
        for i in range(args.repeats + 1):
            # Alternating, with the order flipped each round, spreads drift in machine load over both modes.
            order = ("airflow", "plain") if i % 2 == 0 else ("plain", "airflow")
            for mode in order:
                m = one(mode, i)
                if i > 0:
                    measured.append(m)
        # Memory after the runs: a preloading executor (see the module docstring) holds the ML stack.
        print(f"\nstack after the runs:\n{supervisor.format_status(control.status(cfg))}")
        probes = None if args.no_diagnose else diagnose(env, repeats=3)
        summarize(measured, probes, target)
    finally:
        if started_stack and not args.keep_stack:
            control.down(cfg)


if __name__ == "__main__":
    main()
