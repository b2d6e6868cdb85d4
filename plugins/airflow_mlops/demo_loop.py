"""The main job: the whole lifecycle of the demo pipeline on the local stack, ending with a summary."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from airflow_mlops import localstack as ls

KINDS_AFTER_INGEST = ("train", "deploy", "score", "monitor")
ACTIVE = frozenset({"queued", "running"})


@dataclass
class LoopReport:
    """What the loop did, for the summary and the exit status."""

    history: tuple[date, date]
    live: tuple[date, date]
    runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def failed(self) -> list[str]:
        return [f"{dag}/{r['dag_run_id']}" for dag, runs in self.runs.items() for r in runs if r["state"] == "failed"]


def ingest_history(cfg: ls.StackConfig, pipeline: str, start: date, end: date) -> None:
    """The ingest DAG's steps for the history days, in one process (`python -m airflow_mlops ingest`)."""
    env = ls.stack_env(cfg, ls.ensure_secrets(cfg))
    argv = [sys.executable, "-m", "airflow_mlops", "ingest", "--pipeline", pipeline]
    argv += ["--start", start.isoformat(), "--end", end.isoformat(), "--lake-root", cfg.lake_root]
    proc = subprocess.run(argv, env=env, cwd=cfg.repo_root, check=False, timeout=3600)
    if proc.returncode != 0:
        raise ls.StackError(f"{' '.join(argv[1:])} exited {proc.returncode}")


def all_runs(api: ls.AirflowApi, dag_id: str) -> list[dict[str, Any]]:
    return api.list_all(f"/api/v2/dags/{dag_id}/dagRuns", "dag_runs", order_by="run_after")


def trigger(api: ls.AirflowApi, dag_id: str, conf: dict[str, Any]) -> str:
    run = api.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})
    return str(run["dag_run_id"])


def settle(cfg: ls.StackConfig, api: ls.AirflowApi, dag_ids: Iterable[str], timeout: float, quiet: float = 20) -> None:
    """Wait until none of the DAGs has an active run for `quiet` seconds (asset and trigger chains included)."""
    dag_ids = list(dag_ids)
    deadline = time.monotonic() + timeout
    calm_since: float | None = None
    last = ""
    while True:
        active = {d: sum(r["state"] in ACTIVE for r in all_runs(api, d)) for d in dag_ids}
        line = ", ".join(f"{d.split('__')[-1]} {n}" for d, n in active.items() if n) or "idle"
        if line != last:
            print(f"  active runs: {line}")
            last = line
        now = time.monotonic()
        if not any(active.values()):
            calm_since = calm_since or now
            if now - calm_since >= quiet:
                return
        else:
            calm_since = None
        if now > deadline:
            raise ls.StackError(f"runs still active after {timeout:.0f}s: {line}")
        ls._check_alive(cfg)
        time.sleep(3)


def run_loop(
    cfg: ls.StackConfig, pipeline: str, start: date, history_end: date, end: date, reprocess: str = "failed"
) -> LoopReport:
    """Land start..end; ingest the history in one process; train and deploy the first model on it; then let
    Airflow run the live days: nightly ingest, scoring, monitoring, and the retrains the monitor asks for."""
    if not start <= history_end < end:
        raise ls.StackError(f"need start <= history end < end, got {start}, {history_end}, {end}")
    report = LoopReport((start, history_end), (history_end + timedelta(days=1), end))
    timeout = cfg.float_setting("MLOPS_DEMO_TIMEOUT_SECONDS")
    t0 = time.monotonic()
    ls.up(cfg)
    api = ls.api_for(cfg)
    dag = {kind: f"{pipeline}__{kind}" for kind in ("ingest", *KINDS_AFTER_INGEST)}
    report.seconds["stack up"] = time.monotonic() - t0

    t = time.monotonic()
    print(f"\nloop: landing {pipeline} data for {start}..{end} (one file per source and day)")
    ls.feed(cfg, pipeline, start, end)
    print(f"loop: ingesting the history {start}..{history_end} in one process")
    ingest_history(cfg, pipeline, start, history_end)
    report.seconds["land + history"] = time.monotonic() - t

    for kind in KINDS_AFTER_INGEST:
        ls.wait_for_dag(cfg, api, dag[kind], timeout=180)
        api.set_paused(dag[kind], False)
    t = time.monotonic()
    print(f"\nloop: first model: {dag['train']} on the window up to {history_end}, then {dag['deploy']}")
    trigger(api, dag["train"], {"end_date": history_end.isoformat(), "reason": "loop: first model on the history"})
    settle(cfg, api, [dag["train"], dag["deploy"]], timeout)
    report.seconds["first train + deploy"] = time.monotonic() - t

    t = time.monotonic()
    live = report.live
    live_timeout = timeout + cfg.float_setting("MLOPS_DEMO_TIMEOUT_PER_DAY_SECONDS") * ((live[1] - live[0]).days + 1)
    print(f"\nloop: live days {live[0]}..{live[1]}: {dag['ingest']} each night; score and monitor follow each ingest")
    ls.backfill_and_wait(cfg, dag["ingest"], live[0], live[1], reprocess=reprocess, timeout=live_timeout, api=api)
    settle(cfg, api, [dag[k] for k in KINDS_AFTER_INGEST], live_timeout)
    report.seconds["live days"] = time.monotonic() - t
    report.runs = {dag[k]: all_runs(api, dag[k]) for k in ("ingest", *KINDS_AFTER_INGEST)}
    report.seconds["total"] = time.monotonic() - t0
    return report


def _float(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


def summary(cfg: ls.StackConfig, pipeline: str, report: LoopReport) -> str:
    """Days processed, retrains and why, champion versions, the monitored quality over time, the timings."""
    from mlflow import MlflowClient

    from airflow_mlops.config import pipeline_by_name
    from airflow_mlops.core.registry import promotion
    from airflow_mlops.core.registry.tracking import Tracking

    pcfg = pipeline_by_name(pipeline)
    name = pcfg.train.model_name(pipeline)
    out = [f"\n=== {pipeline}: the loop, {report.history[0]}..{report.live[1]} ==="]
    history_days = (report.history[1] - report.history[0]).days + 1
    ingest = report.runs.get(f"{pipeline}__ingest", [])
    out.append(
        f"Days processed: {history_days} history days (one process) + {len(ingest)} live days through Airflow "
        f"({ls.summarize_runs(ingest)})"
    )
    for kind in KINDS_AFTER_INGEST:
        runs = report.runs.get(f"{pipeline}__{kind}", [])
        out.append(f"  {kind:<8} {len(runs):>3} runs {ls.summarize_runs(runs)}")

    tracking = Tracking(cfg.mlflow_url)
    client: MlflowClient = tracking.client
    out.append("\nTrainings (model versions) and why:")
    for mv in sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version)):
        run = client.get_run(mv.run_id) if mv.run_id else None
        reason = run.data.tags.get("mlops.reason", "?") if run else "?"
        tags = mv.tags
        out.append(
            f"  v{mv.version}: window {tags.get('mlops.window', '?')}, gates {tags.get('mlops.gate_outcome', '?')}, "
            f"reason: {reason}"
        )
    out.append("\nChampion history (audit records on the registered model):")
    try:
        records = promotion.audit_log(tracking, name)
    except Exception as exc:  # no model registered at all
        records = []
        out.append(f"  none: {exc}")
    for rec in records:
        what = f"champion v{rec.champion} (was v{rec.replaced})"
        if rec.action not in ("promote", "rollback"):  # approve/reject: the candidate, and the champion then
            what = f"v{rec.champion} (champion v{rec.replaced})"
        out.append(f"  {rec.when} {rec.action:<8} {what} by {rec.who}: {rec.why}")

    experiment = client.get_experiment_by_name(pcfg.monitor.experiment or f"{pipeline}-monitoring")
    out.append("\nMonitoring over time (one MLflow run per monitor run):")
    if experiment is None:
        out.append("  no monitor run")
    else:
        monitor_runs = client.search_runs([experiment.experiment_id], max_results=1000)
        primary = pcfg.train.metric.primary
        for r in sorted(monitor_runs, key=lambda r: r.data.tags.get("mlops.monitor_ds", "")):
            m, tags = r.data.metrics, r.data.tags
            out.append(
                f"  {tags.get('mlops.monitor_ds', '?')}: {tags.get('mlops.outcome', '?'):<17} "
                f"{primary} {_float(m.get(f'quality.{primary}'))} (champion v{tags.get('mlops.champion_version')} "
                f"holdout {_float(m.get('quality.baseline'))}), drift share {_float(m.get('drift.share'))}"
                + (", retrain triggered" if tags.get("mlops.retrain_triggered") == "true" else "")
            )
    out.append("\nTimings: " + ", ".join(f"{k} {v:.0f}s" for k, v in report.seconds.items()))
    return "\n".join(out)


def main_loop(cfg: ls.StackConfig, pipeline: str, start: date, history_end: date, end: date, reprocess: str) -> int:
    """The main job; 0 when no run failed."""
    report = run_loop(cfg, pipeline, start, history_end, end, reprocess)
    print(summary(cfg, pipeline, report))
    keys = ls.ensure_secrets(cfg)
    print(f"\nWhere to look:\n{ls.describe(cfg, keys)}")
    print(f"\nThe stack keeps running. Stop it with:  {ls._python_cmd(cfg)} -m airflow_mlops.localstack down")
    failed = report.failed()
    if failed:
        print(f"loop: FAILED runs: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
