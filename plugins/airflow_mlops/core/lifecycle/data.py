"""What the lifecycle page shows of a pipeline, read from the registry, its runs and the lake in a few calls."""

from __future__ import annotations

import functools
import json
import re
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from airflow_mlops.core.lake import paths
from airflow_mlops.core.lake.storage import Lake
from airflow_mlops.core.registry.promotion import AUDIT_PREFIX, PREVIOUS, AuditRecord
from airflow_mlops.core.registry.tags import CHALLENGER, CHAMPION, TAG_PREFIX, metric_key, quote

if TYPE_CHECKING:
    from airflow_mlops.config import PipelineConfig
    from airflow_mlops.core.registry.tracking import Tracking

T = TypeVar("T")

SEARCH_PAGE = 1000
"""Runs or versions per search call: a year of daily monitor runs takes one call."""
_MONITOR_REASON = re.compile(r"^monitor (\d{4}-\d{2}-\d{2})\b")


def _tag(tags: Mapping[str, str], key: str) -> str | None:
    value = tags.get(f"{TAG_PREFIX}{key}")
    return None if value in (None, "", "-") else value


def _millis(ms: int | None) -> str | None:
    if not ms:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class RunRef:
    """An MLflow run and the Airflow DAG run that made it."""

    run_id: str
    experiment_id: str
    dag_id: str | None
    dag_run_id: str | None


@dataclass(frozen=True)
class Gate:
    name: str
    passed: bool
    observed: float | None
    threshold: float | None
    detail: str


@dataclass(frozen=True)
class Version:
    """One registered version: when and why it was trained, on what, and what its gates said."""

    version: str
    created: str | None
    aliases: tuple[str, ...]
    run: RunRef | None
    window: str | None
    content_hash: str | None
    partition_count: str | None
    trigger: str
    """schedule, monitor, manual or forced."""
    reason: str
    monitor_report: str | None
    """Lake path of the monitor report whose alarm asked for this training, if any."""
    forced_by: str | None
    force_reason: str | None
    gate_outcome: str | None
    gate_reason: str | None
    gates: tuple[Gate, ...]
    metric: float | None
    """The primary metric on its own holdout."""
    approved_by: str | None
    rolled_back: str | None


@dataclass(frozen=True)
class MonitorPoint:
    """One monitor run: its date, outcome, drift and quality figures."""

    ds: str
    outcome: str
    alarms: tuple[str, ...]
    retrain: bool
    champion_version: str | None
    drift_share: float | None
    column_scores: Mapping[str, float]
    quality: float | None
    baseline: float | None
    report: str
    """Lake path of the run's HTML report."""
    run: RunRef
    prediction_drift: float | None = None
    """Drift score of the champion's output on the window against its reference (None: not measured, or the
    run predates it)."""
    prediction_drifted: bool | None = None
    weighted_share: float | None = None
    """Drift share weighted by the champion's importance (monitor.drift.weighting: importance)."""
    estimated: float | None = None
    """The primary metric estimated from the champion's probabilities on the window (no labels needed)."""
    estimated_baseline: float | None = None
    alarm_retrains: float | None = None
    """Retrains the monitor had triggered and the gates had decided by this run, and how many passed them."""
    alarm_promoted: float | None = None


@dataclass(frozen=True)
class Validation:
    """The latest validated batch of a source and its quarantined batches (newest first)."""

    source: str
    latest_ds: str | None
    latest_passed: bool | None
    report: str | None
    quarantined: tuple[Quarantined, ...]


@dataclass(frozen=True)
class Quarantined:
    ds: str
    files: tuple[str, ...]
    """Lake paths of the batch's files (data, report, reason)."""
    open: bool
    """Not re-ingested since: the raw partition of that date is missing."""


@dataclass(frozen=True)
class PipelineData:
    """Everything the lifecycle page of one pipeline shows, as read at `read_at`."""

    pipeline: str
    model_name: str
    primary_metric: str
    versions: tuple[Version, ...]
    """Newest first."""
    champion: str | None
    previous: str | None
    challenger: str | None
    audit: tuple[AuditRecord, ...]
    """Oldest first."""
    monitoring: tuple[MonitorPoint, ...]
    """Oldest first."""
    validation: tuple[Validation, ...]
    read_at: str
    errors: tuple[str, ...] = field(default=())

    def version(self, number: str | None) -> Version | None:
        return next((v for v in self.versions if v.version == number), None)

    def champion_since(self) -> str | None:
        """When the current champion was last promoted (or restored by a rollback), per the audit records."""
        for record in reversed(self.audit):
            if record.action in ("promote", "rollback") and record.champion == self.champion:
                return record.when
        return None

    def open_quarantines(self) -> list[tuple[str, Quarantined]]:
        return [(v.source, q) for v in self.validation for q in v.quarantined if q.open]

    def last_monitor(self) -> MonitorPoint | None:
        return self.monitoring[-1] if self.monitoring else None


# Reading --------------------------------------------------------------------------------------------------


def _run_ref(run: Any) -> RunRef:
    tags = run.data.tags
    return RunRef(run.info.run_id, run.info.experiment_id, _tag(tags, "dag_id"), _tag(tags, "dag_run_id"))


def _paged(tracking: Tracking, what: str, fetch: Callable[[str | None], Any]) -> list[Any]:
    """Every item of a paged MLflow search, each page call retried."""
    items: list[Any] = []
    token: str | None = None
    while True:
        page = tracking._retry(functools.partial(fetch, token), what)
        items.extend(page)
        token = page.token
        if not token:
            return items


def _search_runs(tracking: Tracking, experiment: str) -> list[Any]:
    client = tracking.client
    found = tracking._retry(lambda: client.get_experiment_by_name(experiment), f"get experiment {experiment}")
    if found is None:
        return []
    return _paged(
        tracking,
        f"search runs of {experiment}",
        lambda token: client.search_runs([found.experiment_id], max_results=SEARCH_PAGE, page_token=token),
    )


def _search_versions(tracking: Tracking, name: str) -> list[Any]:
    client = tracking.client
    return _paged(
        tracking,
        f"search versions of {name}",
        lambda token: client.search_model_versions(f"name = {quote(name)}", max_results=SEARCH_PAGE, page_token=token),
    )


def _gates(raw: str | None) -> tuple[Gate, ...]:
    try:
        items = json.loads(raw or "[]")
    except json.JSONDecodeError:
        return ()
    return tuple(
        Gate(str(g.get("name")), bool(g.get("passed")), g.get("observed"), g.get("threshold"), str(g.get("detail")))
        for g in items
        if isinstance(g, dict)
    )


def _trigger(reason: str, forced_by: str | None, dag_run_id: str | None) -> str:
    if forced_by:
        return "forced"
    if _MONITOR_REASON.match(reason):
        return "monitor"
    if (dag_run_id or "").startswith("scheduled__") or reason == "scheduled":
        return "schedule"
    return "manual"


def _version(mv: Any, aliases: Mapping[str, list[str]], runs: Mapping[str, Any], cfg: PipelineConfig) -> Version:
    tags = dict(mv.tags or {})
    run = runs.get(mv.run_id or "")
    run_tags = run.data.tags if run is not None else {}
    reason = run_tags.get(f"{TAG_PREFIX}reason") or "unknown (no training run found)"
    forced_by = _tag(tags, "force_by")
    dag_run_id = _tag(tags, "dag_run_id")
    matched = _MONITOR_REASON.match(reason)
    metric = None
    if run is not None:
        metric = run.data.metrics.get(metric_key("holdout", cfg.train.metric.primary))
    ref = _run_ref(run) if run is not None else None
    if ref is None and mv.run_id:
        ref = RunRef(mv.run_id, "", _tag(tags, "dag_id"), dag_run_id)
    return Version(
        version=str(mv.version),
        created=_millis(mv.creation_timestamp),
        aliases=tuple(sorted(aliases.get(str(mv.version), []))),
        run=ref,
        window=_tag(tags, "window"),
        content_hash=_tag(tags, "content_hash"),
        partition_count=_tag(tags, "partition_count"),
        trigger=_trigger(reason, forced_by, dag_run_id),
        reason=reason,
        monitor_report=paths.monitor_report(cfg.name, matched.group(1)) if matched else None,
        forced_by=forced_by,
        force_reason=_tag(tags, "force_reason"),
        gate_outcome=_tag(tags, "gate_outcome"),
        gate_reason=_tag(tags, "gate_reason"),
        gates=_gates(tags.get(f"{TAG_PREFIX}gates")),
        metric=metric,
        approved_by=_tag(tags, "approved_by"),
        rolled_back=_tag(tags, "rolled_back"),
    )


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and value == value else None


def _monitor_point(run: Any, cfg: PipelineConfig) -> MonitorPoint | None:
    tags, metrics = run.data.tags, run.data.metrics
    ds = _tag(tags, "monitor_ds")
    if ds is None:
        return None
    prefix = "drift.score."
    drifted = _float(metrics.get("prediction_drift.drifted"))
    return MonitorPoint(
        ds=ds,
        outcome=_tag(tags, "outcome") or "unknown",
        alarms=tuple(a for a in (_tag(tags, "alarms") or "").split(",") if a),
        retrain=tags.get(f"{TAG_PREFIX}retrain_triggered") == "true",
        champion_version=_tag(tags, "champion_version"),
        drift_share=_float(metrics.get("drift.share")),
        column_scores={k[len(prefix) :]: float(v) for k, v in metrics.items() if k.startswith(prefix)},
        quality=_float(metrics.get(metric_key("quality", cfg.train.metric.primary))),
        baseline=_float(metrics.get("quality.baseline")),
        report=paths.monitor_report(cfg.name, ds),
        run=_run_ref(run),
        prediction_drift=_float(metrics.get("prediction_drift.score")),
        prediction_drifted=None if drifted is None else drifted > 0,
        weighted_share=_float(metrics.get("drift.weighted_share")),
        estimated=_float(metrics.get(metric_key("estimated_quality", cfg.train.metric.primary))),
        estimated_baseline=_float(metrics.get("estimated_quality.baseline")),
        alarm_retrains=_float(metrics.get("alarms.retrains")),
        alarm_promoted=_float(metrics.get("alarms.promoted")),
    )


def _validation(lake: Lake, cfg: PipelineConfig, source: str) -> Validation:
    reported = lake.partitions("reports", cfg.name, f"validation/{source}")
    raw = set(lake.partitions("raw", cfg.name, source))
    root = lake.uri().rstrip("/")
    prefix = lake.zone_uri("quarantine", cfg.name, source)
    by_date: dict[str, list[str]] = {}
    for uri in lake.list(prefix):
        head = uri[len(prefix) :].lstrip("/").split("/", 1)[0]
        if head.startswith("date="):
            by_date.setdefault(head[len("date=") :], []).append(uri[len(root) :].lstrip("/"))
    quarantined = tuple(
        Quarantined(ds, tuple(sorted(files)), ds not in raw) for ds, files in sorted(by_date.items(), reverse=True)
    )
    latest = reported[-1] if reported else None
    passed = None if latest is None else not (latest in by_date and latest not in raw)
    report = paths.validation_report(cfg.name, source, latest) if latest else None
    return Validation(source, latest, passed, report, quarantined)


def read_pipeline(tracking: Tracking, lake: Lake | None, cfg: PipelineConfig) -> PipelineData:
    """The pipeline's lifecycle in five registry/tracking calls and a few lake listings.

    A part that cannot be read (lake down, no such experiment) leaves its section empty and adds an error line;
    the rest still shows.
    """
    from airflow_mlops.core.monitor.monitor import experiment as monitor_experiment
    from airflow_mlops.core.train.steps import experiment as train_experiment

    name = cfg.train.model_name(cfg.name)
    errors: list[str] = []

    def attempt(what: str, read: Callable[[], T], empty: T) -> T:
        try:
            return read()
        except Exception as exc:  # one unreadable source must not hide the others
            errors.append(f"{what}: {type(exc).__name__}: {str(exc)[:300]}")
            return empty

    model = attempt("registered model", lambda: _registered_model(tracking, name), None)
    alias_map: dict[str, str] = dict(getattr(model, "aliases", None) or {})
    by_version: dict[str, list[str]] = {}
    for alias, number in alias_map.items():
        by_version.setdefault(str(number), []).append(alias)
    audit = sorted(
        (
            AuditRecord(**json.loads(v))
            for k, v in (getattr(model, "tags", None) or {}).items()
            if k.startswith(AUDIT_PREFIX)
        ),
        key=lambda r: (r.when, r.action),
    )
    train_runs: list[Any] = attempt("training runs", lambda: _search_runs(tracking, train_experiment(cfg)), [])
    runs_by_id = {r.info.run_id: r for r in train_runs}
    versions: list[Any] = (
        attempt("model versions", lambda: _search_versions(tracking, name), []) if model is not None else []
    )
    monitor_runs: list[Any] = attempt("monitor runs", lambda: _search_runs(tracking, monitor_experiment(cfg)), [])
    points = sorted(
        (p for p in (_monitor_point(r, cfg) for r in monitor_runs) if p is not None),
        key=lambda p: (p.ds, p.run.run_id),
    )
    latest: dict[str, MonitorPoint] = {p.ds: p for p in points}  # a rerun of a date keeps its newest run
    validation: list[Validation] = []
    if lake is not None:
        validation = attempt("lake", lambda: [_validation(lake, cfg, source) for source in cfg.partitioned_sources], [])
    return PipelineData(
        pipeline=cfg.name,
        model_name=name,
        primary_metric=cfg.train.metric.primary,
        versions=tuple(
            sorted(
                (_version(mv, by_version, runs_by_id, cfg) for mv in versions),
                key=lambda v: int(v.version),
                reverse=True,
            )
        ),
        champion=alias_map.get(CHAMPION),
        previous=alias_map.get(PREVIOUS),
        challenger=alias_map.get(CHALLENGER),
        audit=tuple(audit),
        monitoring=tuple(latest[ds] for ds in sorted(latest)),
        validation=tuple(validation),
        read_at=datetime.now(UTC).isoformat(timespec="seconds"),
        errors=tuple(errors),
    )


def _registered_model(tracking: Tracking, name: str) -> Any:
    from mlflow.exceptions import MlflowException

    def get() -> Any:
        try:
            return tracking.client.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
                return None
            raise

    return tracking._retry(get, f"get model {name}")


# Caching --------------------------------------------------------------------------------------------------

K = TypeVar("K", bound=Hashable)


class TtlCache(Generic[K, T]):
    """Values kept `ttl` seconds; concurrent callers of one missing key wait for a single computation."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._values: dict[K, tuple[float, T]] = {}
        self._locks: dict[K, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, key: K, compute: Callable[[], T]) -> T:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            held = self._values.get(key)
            if held is not None and self.clock() - held[0] < self.ttl:
                return held[1]
            value = compute()
            self._values[key] = (self.clock(), value)
            return value

    def clear(self) -> None:
        with self._guard:
            self._values.clear()
