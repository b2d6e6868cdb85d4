"""The demo on the stack: land demo days, ingest them, and the main job (the whole lifecycle, then a summary)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from airflow_mlops.stack.airflow_api import api_for, run_days, summarize_runs
from airflow_mlops.stack.components import s3_client_env, stack_env
from airflow_mlops.stack.control import describe, python_cmd, up
from airflow_mlops.stack.keys import ensure_secrets
from airflow_mlops.stack.runs import backfill_and_wait, day_range, settle, wait_for_dag
from airflow_mlops.stack.settings import StackConfig, StackError

KINDS_AFTER_INGEST = ("train", "deploy", "score", "monitor")
_DATE_PART = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")


# The lake -----------------------------------------------------------------------------------


def partition_dates(relative_paths: Iterable[str]) -> dict[str, list[str]]:
    """Dates partitioned per dataset, from file paths relative to a zone's pipeline folder.

    `flights/date=2013-01-01/flights.parquet` -> {"flights": ["2013-01-01"]}; a partition right
    below the pipeline folder (features/<p>/date=.../) is keyed by "".
    """
    found: dict[str, set[str]] = {}
    for rel in relative_paths:
        parts = rel.strip("/").split("/")
        for i, part in enumerate(parts[:-1]):
            match = _DATE_PART.match(part)
            if match:
                found.setdefault("/".join(parts[:i]), set()).add(match.group(1))
                break
    return {k: sorted(v) for k, v in sorted(found.items())}


def lake_partitions(cfg: StackConfig, zone: str, pipeline: str) -> dict[str, list[str]]:
    """Dated partitions per dataset in one zone of the stack's lake."""
    from airflow_mlops.core.lake.storage import open_lake

    s3 = cfg.s3_settings() if cfg.lake_root.startswith("s3://") else None
    lake = open_lake(cfg.lake_root, s3 or None)
    prefix = lake.zone_uri(zone, pipeline)
    return partition_dates(uri[len(prefix) :] for uri in lake.list(prefix))


def _run_package_command(cfg: StackConfig, command: str, pipeline: str, start: date, end: date, timeout: float) -> None:
    """`python -m airflow_mlops <command>` over a range of days, with the stack's environment."""
    # Both open an S3 lake with boto3's default chain, as an upstream producer would.
    env = {**stack_env(cfg, ensure_secrets(cfg)), **s3_client_env(cfg)}
    argv = [sys.executable, "-m", "airflow_mlops", command, "--pipeline", pipeline]
    argv += ["--start", start.isoformat(), "--end", end.isoformat(), "--lake-root", cfg.lake_root]
    proc = subprocess.run(argv, env=env, cwd=cfg.repo_root, check=False, timeout=timeout)
    if proc.returncode != 0:
        raise StackError(f"{' '.join(argv[1:])} exited {proc.returncode}")


def feed(cfg: StackConfig, pipeline: str, start: date, end: date) -> None:
    """Land the demo days into the lake's landing zone with the package's `feed` command."""
    _run_package_command(cfg, "feed", pipeline, start, end, timeout=900)


def ingest_history(cfg: StackConfig, pipeline: str, start: date, end: date) -> None:
    """The ingest DAG's steps for the history days, in one process (`python -m airflow_mlops ingest`)."""
    _run_package_command(cfg, "ingest", pipeline, start, end, timeout=3600)


def ingest_demo(cfg: StackConfig, pipeline: str, start: date, end: date, reprocess: str = "failed") -> int:
    """Start the stack, land the days, backfill the ingest DAG over them and print where to look.

    :returns: the exit status: 0 when every run succeeded.
    """
    days = day_range(start, end)
    keys = up(cfg)
    print(f"\ndemo: landing {pipeline} data for {start}..{end}")
    feed(cfg, pipeline, start, end)
    dag_id = f"{pipeline}__ingest"
    print(f"\ndemo: backfilling {dag_id} through the REST API")
    runs = backfill_and_wait(
        cfg, dag_id, start, end, reprocess=reprocess, timeout=cfg.float_setting("MLOPS_DEMO_TIMEOUT_SECONDS")
    )
    states = run_days(runs)
    missing = [d.isoformat() for d in days if d.isoformat() not in states]
    failed = sorted(d for d, s in states.items() if s != "success")
    print(f"\ndemo: {dag_id} runs by state: {summarize_runs(runs)}")
    for zone in ("raw", "features", "quarantine"):
        parts = lake_partitions(cfg, zone, pipeline)
        for dataset, dates in parts.items():
            label = f"{zone}/{pipeline}/{dataset}".rstrip("/")
            print(f"  {label:<40} {len(dates):>4} partitions  {dates[0]}..{dates[-1]}")
    print(f"\nWhere to look:\n{describe(cfg, keys)}")
    print(f"  DAG runs     {cfg.airflow_url}/dags/{dag_id}/runs")
    print(f"\nThe stack keeps running. Stop it with:  {python_cmd(cfg)} -m airflow_mlops.stack down")
    if failed or missing:
        print(f"demo: FAILED: runs not successful for {', '.join(failed + missing)}", file=sys.stderr)
        return 1
    return 0


# The main job -------------------------------------------------------------------------------


@dataclass
class LoopReport:
    """What the loop did, for the summary and the exit status."""

    history: tuple[date, date]
    live: tuple[date, date]
    runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def failed(self) -> list[str]:
        return [f"{dag}/{r['dag_run_id']}" for dag, runs in self.runs.items() for r in runs if r["state"] == "failed"]


def run_loop(
    cfg: StackConfig, pipeline: str, start: date, history_end: date, end: date, reprocess: str = "failed"
) -> LoopReport:
    """Land start..end; ingest the history in one process; train and deploy the first model on it; then let
    Airflow run the live days: nightly ingest, scoring, monitoring, and the retrains the monitor asks for."""
    if not start <= history_end < end:
        raise StackError(f"need start <= history end < end, got {start}, {history_end}, {end}")
    report = LoopReport((start, history_end), (history_end + timedelta(days=1), end))
    timeout = cfg.float_setting("MLOPS_DEMO_TIMEOUT_SECONDS")
    t0 = time.monotonic()
    up(cfg)
    api = api_for(cfg)
    dag = {kind: f"{pipeline}__{kind}" for kind in ("ingest", *KINDS_AFTER_INGEST)}
    report.seconds["stack up"] = time.monotonic() - t0

    t = time.monotonic()
    print(f"\nloop: landing {pipeline} data for {start}..{end} (one file per source and day)")
    feed(cfg, pipeline, start, end)
    print(f"loop: ingesting the history {start}..{history_end} in one process")
    ingest_history(cfg, pipeline, start, history_end)
    report.seconds["land + history"] = time.monotonic() - t

    for kind in KINDS_AFTER_INGEST:
        wait_for_dag(cfg, api, dag[kind], timeout=180)
        api.set_paused(dag[kind], False)
    t = time.monotonic()
    print(f"\nloop: first model: {dag['train']} on the window up to {history_end}, then {dag['deploy']}")
    api.trigger(dag["train"], {"end_date": history_end.isoformat(), "reason": "loop: first model on the history"})
    settle(cfg, api, [dag["train"], dag["deploy"]], timeout)
    report.seconds["first train + deploy"] = time.monotonic() - t

    t = time.monotonic()
    live = report.live
    live_timeout = timeout + cfg.float_setting("MLOPS_DEMO_TIMEOUT_PER_DAY_SECONDS") * ((live[1] - live[0]).days + 1)
    print(f"\nloop: live days {live[0]}..{live[1]}: {dag['ingest']} each night; score and monitor follow each ingest")
    backfill_and_wait(cfg, dag["ingest"], live[0], live[1], reprocess=reprocess, timeout=live_timeout, api=api)
    settle(cfg, api, [dag[k] for k in KINDS_AFTER_INGEST], live_timeout)
    report.seconds["live days"] = time.monotonic() - t
    report.runs = {dag[k]: api.all_runs(dag[k]) for k in ("ingest", *KINDS_AFTER_INGEST)}
    report.seconds["total"] = time.monotonic() - t0
    return report


def _float(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


def summary(cfg: StackConfig, pipeline: str, report: LoopReport) -> str:
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
        f"({summarize_runs(ingest)})"
    )
    for kind in KINDS_AFTER_INGEST:
        runs = report.runs.get(f"{pipeline}__{kind}", [])
        out.append(f"  {kind:<8} {len(runs):>3} runs {summarize_runs(runs)}")

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


def main_loop(cfg: StackConfig, pipeline: str, start: date, history_end: date, end: date, reprocess: str) -> int:
    """The main job; 0 when no run failed."""
    report = run_loop(cfg, pipeline, start, history_end, end, reprocess)
    print(summary(cfg, pipeline, report))
    keys = ensure_secrets(cfg)
    print(f"\nWhere to look:\n{describe(cfg, keys)}")
    print(f"\nThe stack keeps running. Stop it with:  {python_cmd(cfg)} -m airflow_mlops.stack down")
    failed = report.failed()
    if failed:
        print(f"loop: FAILED runs: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
