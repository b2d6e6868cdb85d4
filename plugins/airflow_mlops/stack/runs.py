"""Driving DAG runs on the stack: wait for a DAG, backfill days, wait until runs settle."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import date, timedelta
from typing import Any

from airflow_mlops.stack.airflow_api import (
    TERMINAL_RUN_STATES,
    AirflowApi,
    ApiError,
    api_for,
    summarize_runs,
)
from airflow_mlops.stack.control import check_alive
from airflow_mlops.stack.settings import StackConfig, StackError
from airflow_mlops.stack.supervisor import log_file, log_tail

ACTIVE = frozenset({"queued", "running"})


def day_range(start: date, end: date) -> list[date]:
    """Every day from start to end, both included."""
    if end < start:
        raise StackError(f"the range ends ({end}) before it starts ({start})")
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def wait_for_dag(cfg: StackConfig, api: AirflowApi, dag_id: str, timeout: float) -> None:
    """Wait until the DAG is parsed and known to the API; fail at once on an import error."""
    deadline = time.monotonic() + timeout
    while api.dag(dag_id) is None:
        errors = api.import_errors()
        if errors:
            text = "\n".join(f"{e.get('filename')}:\n{e.get('stack_trace')}" for e in errors)
            raise StackError(f"DAG {dag_id} is not there and DAG files fail to import:\n{text}")
        if time.monotonic() > deadline:
            raise StackError(
                f"DAG {dag_id} did not appear within {timeout:.0f}s; is it defined in {cfg.repo_root / 'dags'}?\n"
                + log_tail(log_file(cfg, "dag-processor"))
            )
        check_alive(cfg)
        time.sleep(2)


def backfill_and_wait(
    cfg: StackConfig,
    dag_id: str,
    start: date,
    end: date,
    *,
    reprocess: str = "failed",
    timeout: float = 1800.0,
    api: AirflowApi | None = None,
    progress: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Unpause the DAG, backfill the days start..end through the REST API and wait for every run to end.

    :param reprocess: Airflow's reprocess_behavior for days that already have a run: none, failed, completed.
    :returns: the DAG runs of those days (one per day) in their final states.
    """
    api = api or api_for(cfg)
    wait_for_dag(cfg, api, dag_id, timeout=180)
    max_runs = int(cfg.float_setting("MLOPS_BACKFILL_MAX_ACTIVE_RUNS"))
    backfill = _create_backfill(api, dag_id, start, end, max_runs, reprocess, progress)
    # Unpaused after the backfill exists: its runs only start once the DAG is unpaused.
    api.set_paused(dag_id, False)
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        done = bool(api.backfill(int(backfill["id"])).get("completed_at"))
        runs = api.dag_runs(dag_id, start, end)
        counts = summarize_runs(runs)
        line = ", ".join(f"{n} {s}" for s, n in counts.items()) or "no runs yet"
        if line != last:
            progress(f"  runs: {line}")
            last = line
        if done and all(r["state"] in TERMINAL_RUN_STATES for r in runs):
            return runs
        if time.monotonic() > deadline:
            raise StackError(f"backfill of {dag_id} not finished after {timeout:.0f}s (runs: {line})")
        check_alive(cfg)
        time.sleep(3)


def _create_backfill(
    api: AirflowApi,
    dag_id: str,
    start: date,
    end: date,
    max_runs: int,
    reprocess: str,
    progress: Callable[[str], None],
    attempts: int = 20,
) -> dict[str, Any]:
    for attempt in range(1, attempts + 1):
        try:
            backfill = api.create_backfill(dag_id, start, end, max_runs, reprocess)
            progress(f"backfill {backfill['id']} of {dag_id}: {start}..{end} (reprocess {reprocess})")
            return backfill
        except ApiError as exc:
            running = [b for b in api.backfills(dag_id) if not b.get("completed_at")] if exc.status == 409 else []
            if running:
                # One backfill per DAG at a time: follow the one already running instead.
                backfill = running[0]
                progress(f"a backfill of {dag_id} is running ({backfill['from_date']}..{backfill['to_date']}): waiting")
                return backfill
            # 503: SQLite was locked by the scheduler; Airflow removed the partial backfill, so retry.
            # 409 with no running backfill: the other one just finished, so retry too.
            if exc.status not in (409, 503) or attempt == attempts:
                raise
            progress(f"  metadata database busy, retrying the backfill ({attempt}/{attempts})")
            time.sleep(3)
    raise AssertionError("unreachable")


def settle(cfg: StackConfig, api: AirflowApi, dag_ids: Iterable[str], timeout: float, quiet: float = 20) -> None:
    """Wait until none of the DAGs has an active run for `quiet` seconds (asset and trigger chains included)."""
    dag_ids = list(dag_ids)
    deadline = time.monotonic() + timeout
    calm_since: float | None = None
    last = ""
    while True:
        active = {d: sum(r["state"] in ACTIVE for r in api.all_runs(d)) for d in dag_ids}
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
            raise StackError(f"runs still active after {timeout:.0f}s: {line}")
        check_alive(cfg)
        time.sleep(3)
