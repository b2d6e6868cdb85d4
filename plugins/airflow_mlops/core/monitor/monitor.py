"""The monitor step of a pipeline: the champion, the checks of one window, the report and the MLflow run."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from airflow_mlops.config.train import METRIC_NAMES
from airflow_mlops.core.lake import paths
from airflow_mlops.core.lake.storage import Lake
from airflow_mlops.core.monitor.current import PREDICTION, CurrentData, floats, load_current, window_days
from airflow_mlops.core.monitor.decision import ChampionAge, Decision, cooldown_blocker, decide
from airflow_mlops.core.monitor.drift import DriftResult, InsufficientData, detect_drift, weigh
from airflow_mlops.core.monitor.estimate import ESTIMATED_PREFIX, EstimatedQuality, assess_estimated
from airflow_mlops.core.monitor.prediction import PredictionDrift, detect_prediction_drift
from airflow_mlops.core.monitor.quality import QualityResult, assess_quality
from airflow_mlops.core.monitor.report import render_monitor_html
from airflow_mlops.core.registry.tags import GATE_OUTCOME, WINDOW
from airflow_mlops.core.registry.tracking import CHAMPION, TAG_PREFIX, RunTags, Tracking, metric_key, retrying
from airflow_mlops.core.report import Link
from airflow_mlops.core.train import training as tr
from airflow_mlops.core.train.evaluation import IMPORTANCE_PREFIX

if TYPE_CHECKING:
    from airflow_mlops.config import PipelineConfig

TAG_PIPELINE = f"{TAG_PREFIX}pipeline"
TAG_MONITOR_DS = f"{TAG_PREFIX}monitor_ds"
TAG_OUTCOME = f"{TAG_PREFIX}outcome"
TAG_RETRAIN = f"{TAG_PREFIX}retrain_triggered"
TAG_RETRAIN_REASON = f"{TAG_PREFIX}retrain_reason"
TAG_ALARMS = f"{TAG_PREFIX}alarms"
TAG_CHAMPION_VERSION = f"{TAG_PREFIX}champion_version"
TAG_REPORT = f"{TAG_PREFIX}report_uri"

EPOCH = date(1970, 1, 1)


def experiment(cfg: PipelineConfig) -> str:
    """MLflow experiment of a pipeline's monitor runs."""
    return cfg.monitor.experiment or f"{cfg.name}-monitoring"


def metric_step(ds: str) -> int:
    """The step of a monitor run's metrics: its logical date as days since 1970-01-01 (evenly spaced on plots)."""
    return (date.fromisoformat(ds) - EPOCH).days


# The step --------------------------------------------------------------------------------------------------


def _quote(value: str) -> str:
    if "'" in value:
        raise ValueError(f"value {value!r} contains a single quote: it cannot be used in an MLflow filter")
    return f"'{value}'"


def previous_retrains(
    tracking: Tracking, experiment_id: str, pipeline: str, exclude_run_id: str
) -> list[tuple[str, str]]:
    """(logical date, run id) of the pipeline's monitor runs that triggered a retrain, other than this run."""
    filter_string = f"tags.`{TAG_RETRAIN}` = 'true' AND tags.`{TAG_PIPELINE}` = {_quote(pipeline)}"

    def search() -> list[tuple[str, str]]:
        runs = tracking.client.search_runs(
            [experiment_id], filter_string=filter_string, max_results=1000, order_by=["attributes.start_time DESC"]
        )
        return [
            (r.data.tags[TAG_MONITOR_DS], r.info.run_id)
            for r in runs
            if r.info.run_id != exclude_run_id and TAG_MONITOR_DS in r.data.tags
        ]

    return retrying(
        search, tracking.retry, f"find the retrains triggered by {pipeline}'s monitor", tracking.tracking_uri
    )


@dataclass(frozen=True)
class AlarmRecord:
    """How the monitor's earlier retrains turned out: a retrain that did not pass the gates (no better than the
    champion) counts against the alarm that asked for it."""

    retrains: int
    """Training runs the monitor triggered whose gates have decided (passed, failed or forced)."""
    promoted: int
    """Those whose challenger passed the gates on its own merit (a forced one is not counted)."""

    @property
    def share(self) -> float | None:
        return self.promoted / self.retrains if self.retrains else None

    def line(self) -> str:
        if not self.retrains:
            return "alarms followed by a promoted model: no retrain the monitor triggered has been decided yet"
        return (
            f"alarms followed by a promoted model: {self.promoted} of the {self.retrains} retrain(s) the monitor "
            f"triggered passed the gates ({self.share:.0%})"
        )


def alarm_record(tracking: Tracking, cfg: PipelineConfig) -> AlarmRecord:
    """The gate outcomes of the training runs the pipeline's monitor triggered (their reason is the monitor's:
    `monitor <date>: <reasons>`, see factory.retrain_request)."""
    from airflow_mlops.core.train.steps import experiment as train_experiment

    def search() -> AlarmRecord:
        found = tracking.client.get_experiment_by_name(train_experiment(cfg))
        if found is None:
            return AlarmRecord(0, 0)
        runs = tracking.client.search_runs(
            [found.experiment_id], filter_string="tags.`mlops.reason` LIKE 'monitor ____-__-__: %'", max_results=5000
        )
        outcomes = [r.data.tags.get(GATE_OUTCOME) for r in runs]
        return AlarmRecord(sum(o is not None for o in outcomes), sum(o == "passed" for o in outcomes))

    return retrying(search, tracking.retry, f"read the retrains {cfg.name}'s monitor triggered", tracking.tracking_uri)


@dataclass(frozen=True)
class Champion:
    """The champion version, its training run, reference sample and holdout metrics."""

    name: str
    version: str
    run_id: str | None
    reference: pd.DataFrame | None
    baselines: dict[str, float]
    importance: dict[str, float] = field(default_factory=dict)
    """Permutation importance of each feature column on its holdout (`importance.<column>` of its run)."""
    estimated: dict[str, float] = field(default_factory=dict)
    """Metric -> its estimate from the model's own probabilities on its holdout (`estimated.holdout.<metric>`)."""
    trained_through: str | None = None
    """Last day of its training window (the version's `mlops.window` tag); None when it records none."""


def champion_of(tracking: Tracking, name: str) -> Champion | None:
    """The version with alias `champion` and what its training run recorded; None when there is none yet."""
    version = tracking.alias_version(name, CHAMPION)
    if version is None:
        return None

    def details() -> tuple[str | None, dict[str, float], dict[str, str]]:
        found = tracking.client.get_model_version(name, version)
        tags = dict(found.tags or {})
        if not found.run_id:
            return None, {}, tags
        return found.run_id, {k: float(v) for k, v in tracking.client.get_run(found.run_id).data.metrics.items()}, tags

    run_id, metrics, tags = retrying(details, tracking.retry, f"read {name} v{version}", tracking.tracking_uri)
    reference = tracking.load_reference(run_id) if run_id else None
    return Champion(
        name,
        version,
        run_id,
        reference,
        _prefixed(metrics, "holdout.", METRIC_NAMES),
        importance=_prefixed(metrics, IMPORTANCE_PREFIX, None),
        estimated=_prefixed(metrics, ESTIMATED_PREFIX, METRIC_NAMES),
        trained_through=_window_end(tags.get(WINDOW, "")),
    )


def _window_end(window: str) -> str | None:
    """The last day of a `start..end` window tag; None when it is not one."""
    end = window.partition("..")[2]
    try:
        return date.fromisoformat(end).isoformat()
    except ValueError:
        return None


def _prefixed(metrics: Mapping[str, float], prefix: str, names: Sequence[str] | None) -> dict[str, float]:
    """The metrics under `prefix`, by the rest of their key (only `names`, when given)."""
    return {
        k[len(prefix) :]: v
        for k, v in metrics.items()
        if k.startswith(prefix) and (names is None or k[len(prefix) :] in names)
    }


@dataclass
class Checks:
    """Everything the monitor found for one window, before it is reported and logged."""

    decision: Decision
    current: CurrentData | None = None
    drift: DriftResult | None = None
    quality: QualityResult | None = None
    prediction: PredictionDrift | None = None
    estimated: EstimatedQuality | None = None
    age: ChampionAge | None = None
    critical: list[str] = field(default_factory=list)
    insufficient: dict[str, str] = field(default_factory=dict)


def run_checks(
    lake: Lake,
    cfg: PipelineConfig,
    ds: str,
    champion: Champion | None,
    previous: Sequence[tuple[str, str]] = (),
    train_active: bool = False,
) -> Checks:
    """Drift, quality and the decision for the window ending on `ds` (no MLflow calls: the caller passes the
    champion and the earlier retrains, as (logical date, run id), that the cool-down looks at)."""
    mon = cfg.monitor
    name = cfg.train.model_name(cfg.name)
    days = window_days(ds, mon.window_days)
    if champion is None:
        reason = f"no champion: model {name!r} has no version with alias {CHAMPION!r} yet; nothing to monitor"
        return Checks(Decision("no_champion", [], False, [reason]))
    out = Checks(Decision("ok", [], False, []))
    notes: list[str] = []
    reference = champion.reference
    spec = tr.feature_spec(cfg, reference)
    wanted = mon.drift.columns or spec.columns
    numeric = [c for c in spec.numeric if c in wanted]
    categorical = [c for c in spec.categorical if c in wanted]
    if reference is not None:
        absent = [c for c in [*categorical, *numeric] if c not in reference.columns]
        if absent:  # the config gained columns since the champion was trained
            notes.append(f"drift not judged for column(s) {', '.join(absent)}: not in the champion's reference")
            numeric = [c for c in numeric if c not in absent]
            categorical = [c for c in categorical if c not in absent]
    current = out.current = load_current(lake, cfg, ds, numeric, categorical, champion.version)
    notes.extend(current.notes)
    if current.total_rows == 0:
        names = {"inference_log": "inference log", "predictions": "predictions"}
        out.insufficient["drift"] = (
            f"no {' and no '.join(names[s] for s in mon.sources)} in the window {days[0]}..{days[-1]}"
        )
    elif reference is None:
        out.insufficient["drift"] = (
            f"champion v{champion.version} (run {champion.run_id}) has no reference sample: it was trained "
            "before reference samples were recorded; retrain to get one"
        )
    else:
        checked = {*numeric, *categorical}
        out.critical = [c for c in mon.drift.critical if c in checked]
        try:
            out.drift = detect_drift(
                reference,
                current.rows,
                numeric,
                categorical,
                # Each column's test: the column's own, else the one of its kind from the config.
                methods={c: mon.drift.methods.get(c, mon.drift.numeric_method) for c in numeric}
                | {c: mon.drift.methods.get(c, mon.drift.categorical_method) for c in categorical},
                thresholds={c: mon.drift.thresholds.get(c, mon.drift.numeric_threshold) for c in numeric}
                | {c: mon.drift.thresholds.get(c, mon.drift.categorical_threshold) for c in categorical},
                critical=out.critical,
                share_threshold=mon.drift.share_threshold,
                sample_rows=mon.drift.sample_rows,
                min_rows=mon.drift.min_rows,
                seed=cfg.train.seed,
                timestamp=datetime.fromisoformat(ds),
            )
        except InsufficientData as exc:
            out.insufficient["drift"] = f"{exc} ({current.total_rows} production rows in the window)"
        if out.drift is not None and mon.drift.weighting == "importance":
            if champion.importance:
                out.drift = weigh(out.drift, champion.importance)
            else:
                notes.append(
                    f"drift judged by the plain share: champion v{champion.version} has no logged importance "
                    "(trained before it was logged)"
                )
    if "predictions" not in mon.sources:
        notes.append("quality not checked: it needs predictions among monitor.sources")
    else:
        try:
            out.quality = assess_quality(
                current.quality, cfg, champion.baselines, champion.version, current.matured_days
            )
        except InsufficientData as exc:
            detail = ""
            if current.matured_rows and len(current.quality) < mon.quality.min_rows:
                detail = (
                    f" ({current.matured_rows} matured prediction rows: {current.other_version_rows} of other "
                    f"model versions, {current.unlabelled_rows} without a known label yet)"
                )
            out.insufficient["quality"] = f"{exc}{detail}"
    _check_predictions(cfg, ds, champion, current, out, notes)
    if mon.estimated_quality.enabled:
        try:
            out.estimated = assess_estimated(current.rows, cfg, champion.estimated, champion.version)
        except InsufficientData as exc:
            notes.append(f"estimated quality not judged: {exc}")
    out.age = champion_age(cfg, ds, champion, notes)
    blocker = cooldown_blocker(ds, previous, mon.retrain.cooldown_days)
    out.decision = decide(
        cfg,
        out.drift,
        out.quality,
        out.insufficient,
        blocker=blocker,
        train_active=train_active,
        notes=notes,
        prediction=out.prediction,
        estimated=out.estimated,
        age=out.age,
    )
    return out


def champion_age(cfg: PipelineConfig, ds: str, champion: Champion, notes: list[str]) -> ChampionAge | None:
    """The champion's age on `ds` when monitor.retrain.max_age_days is set (why not, into `notes`, when its
    training window is unknown)."""
    max_days = cfg.monitor.retrain.max_age_days
    if max_days is None:
        return None
    if champion.trained_through is None:
        notes.append(f"age not judged: champion v{champion.version} records no training window ({WINDOW})")
        return None
    days = (date.fromisoformat(ds) - date.fromisoformat(champion.trained_through)).days
    return ChampionAge(champion.version, champion.trained_through, days, max_days)


def _check_predictions(
    cfg: PipelineConfig, ds: str, champion: Champion, current: CurrentData, out: Checks, notes: list[str]
) -> None:
    """Prediction drift of the window into `out`, when monitor.prediction_drift.enabled. What keeps it from a
    verdict is insufficient data when it may alarm, else a note: a report-only check never changes the outcome."""
    conf, mon = cfg.monitor.prediction_drift, cfg.monitor
    if not conf.enabled:
        return
    try:
        if champion.reference is None:
            raise InsufficientData(f"champion v{champion.version} has no reference sample")
        out.prediction = detect_prediction_drift(
            champion.reference,
            current.rows,
            cfg.train.task,
            champion.version,
            numeric_method=conf.numeric_method,
            numeric_threshold=conf.numeric_threshold,
            categorical_method=conf.categorical_method,
            categorical_threshold=conf.categorical_threshold,
            sample_rows=mon.drift.sample_rows,
            min_rows=mon.drift.min_rows,
            seed=cfg.train.seed,
            timestamp=datetime.fromisoformat(ds),
        )
    except InsufficientData as exc:
        if conf.alarm:
            out.insufficient["prediction_drift"] = str(exc)
        else:
            notes.append(f"prediction drift not judged: {exc}")


def monitor_step(
    lake: Lake,
    cfg: PipelineConfig,
    tracking: Tracking,
    tags: RunTags,
    ds: str,
    train_active: bool = False,
    links: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Check the window ending on `ds`: drift against the champion's reference, quality on matured labels,
    the decision, the HTML report on the lake and one MLflow run of figures. Returns a JSON-able summary.

    Missing data is an outcome (insufficient_data, no_champion), never an error. A rerun of the same DAG
    run resumes its MLflow run and rewrites the same report; earlier runs of other DAG runs that triggered a
    retrain within `monitor.retrain.cooldown_days` days before `ds` hold a new trigger back. `links`: URLs the
    report links to, by name: "DAG run" (the run's page in Airflow), "Lifecycle" (the pipeline's lifecycle page).
    """
    mon = cfg.monitor
    name = cfg.train.model_name(cfg.name)
    exp_name = experiment(cfg)
    experiment_id = tracking.get_or_create_experiment(exp_name)
    run_id = tracking.start_or_resume_run(exp_name, tags)
    run_url = tracking.run_url(run_id)
    report_uri = lake.uri(paths.monitor_report(cfg.name, ds))
    days = window_days(ds, mon.window_days)
    champion = champion_of(tracking, name)
    previous = previous_retrains(tracking, experiment_id, cfg.name, run_id) if champion is not None else []
    checks = run_checks(lake, cfg, ds, champion, previous, train_active)
    record = alarm_record(tracking, cfg)
    checks.decision.reasons.append(record.line())
    decision, current, drift, quality = checks.decision, checks.current, checks.drift, checks.quality
    context: dict[str, str | Link] = {
        "Pipeline": cfg.name,
        "Logical date": ds,
        "Window": f"{days[0]}..{days[-1]} ({mon.window_days} days)",
        "Sources": ", ".join(mon.sources),
        "Champion": f"{name} v{champion.version}" if champion else f"{name}: none",
        "MLflow run": Link(run_url, run_url),
        "DAG run": Link(f"{tags.dag_id} / {tags.run_id}", (links or {}).get("DAG run", "")),
    }
    if (links or {}).get("Lifecycle"):
        context["Lifecycle"] = Link(f"lifecycle of {cfg.name}", (links or {})["Lifecycle"])
    prediction = checks.prediction
    page = render_monitor_html(
        cfg, ds, decision, context, current, drift, quality, checks.critical, prediction, checks.estimated
    )
    lake.write_text(report_uri, page)
    result: dict[str, Any] = {
        "pipeline": cfg.name,
        "ds": ds,
        "window": {"start": days[0], "end": days[-1]},
        "outcome": decision.outcome,
        "alarms": decision.alarms,
        "retrain": decision.retrain,
        "retrain_reason": decision.retrain_reason,
        "reasons": decision.reasons,
        "insufficient": checks.insufficient,
        "report_uri": report_uri,
        "experiment": exp_name,
        "mlflow_run_id": run_id,
        "mlflow_run_url": run_url,
        "model_name": name,
        "champion_version": champion.version if champion else None,
        "drift": drift.to_dict() if drift is not None else None,
        "quality": quality.to_dict() if quality is not None else None,
        "prediction_drift": prediction.to_dict() if prediction is not None else None,
        "estimated_quality": checks.estimated.to_dict() if checks.estimated is not None else None,
        "champion_age": checks.age.to_dict() if checks.age is not None else None,
        "alarm_record": {"retrains": record.retrains, "promoted": record.promoted, "share": record.share},
        "rows": len(current.rows) if current is not None else 0,
        "rows_seen": dict(current.rows_seen) if current is not None else {},
        "metric_step": metric_step(ds),
    }
    _log_run(tracking, run_id, cfg, ds, result, current, drift, quality, champion, prediction, checks.estimated)
    return result


def _log_run(
    tracking: Tracking,
    run_id: str,
    cfg: PipelineConfig,
    ds: str,
    result: Mapping[str, Any],
    current: CurrentData | None,
    drift: DriftResult | None,
    quality: QualityResult | None,
    champion: Champion | None,
    prediction: PredictionDrift | None = None,
    estimated: EstimatedQuality | None = None,
) -> None:
    """Figures as metrics at step = days since 1970-01-01 of `ds`; outcome and retrain as tags (the cool-down
    reads `mlops.retrain_triggered` and `mlops.monitor_ds`); the summary as monitor/summary.json."""
    metrics: dict[str, float | None] = {
        "retrain": float(result["retrain"]),
        "alarm.drift": float("drift" in result["alarms"]),
        "alarm.quality": float("quality" in result["alarms"]),
        "alarm.prediction_drift": float("prediction_drift" in result["alarms"]),
        "alarm.estimated_quality": float("estimated_quality" in result["alarms"]),
        "alarm.age": float("age" in result["alarms"]),
        "rows.current": float(result["rows"]),
        "alarms.retrains": float(result["alarm_record"]["retrains"]),
        "alarms.promoted": float(result["alarm_record"]["promoted"]),
        "alarms.promoted_share": result["alarm_record"]["share"],
    }
    if current is not None:
        metrics.update({f"rows.{s}": float(n) for s, n in current.rows_seen.items()})
        metrics["rows.unmatched_predictions"] = float(current.unmatched_rows)
        metrics["rows.matured_labelled"] = float(len(current.quality))
        scores = current.rows[PREDICTION] if PREDICTION in current.rows.columns else pd.Series(dtype="float64")
        numeric = pd.api.types.is_numeric_dtype(scores)  # a multiclass prediction is the class
        metrics["prediction.mean"] = float(scores.mean()) if numeric and scores.notna().any() else None
    if champion is not None and champion.reference is not None and PREDICTION in champion.reference.columns:
        reference_scores = floats(champion.reference[PREDICTION])  # NaN for the classes of a multiclass model
        if not np.isnan(reference_scores).all():
            metrics["prediction.mean.reference"] = float(np.nanmean(reference_scores))
    if drift is not None:
        metrics.update(
            {
                "drift.share": drift.share,
                "drift.drifted": float(drift.drifted),
                "drift.columns_drifted": float(len(drift.drifted_columns)),
                "drift.weighted_share": drift.weighted_share,
            }
        )
        metrics.update({metric_key("drift.score", c): col.score for c, col in drift.columns.items()})
    if prediction is not None:
        metrics["prediction_drift.score"] = prediction.main.score
        metrics["prediction_drift.drifted"] = float(prediction.drifted)
        metrics.update(
            {metric_key("prediction_drift.score", c): col.score for c, col in prediction.drift.columns.items()}
        )
    if estimated is not None:
        metrics.update(
            {
                metric_key("estimated_quality", estimated.metric): estimated.value,
                "estimated_quality.baseline": estimated.baseline,
                "estimated_quality.drop": estimated.drop,
                "estimated_quality.rows": float(estimated.rows),
            }
        )
    if result.get("champion_age"):
        metrics["champion.age_days"] = float(result["champion_age"]["days"])
    if quality is not None:
        metrics.update({metric_key("quality", m): v for m, v in quality.metrics.items()})
        metrics.update(
            {"quality.baseline": quality.baseline, "quality.drop": quality.drop, "quality.rows": float(quality.rows)}
        )
    tracking.log_metrics(run_id, metrics, step=metric_step(ds))
    tracking.set_tags(
        run_id,
        {
            TAG_PIPELINE: cfg.name,
            TAG_MONITOR_DS: ds,
            TAG_OUTCOME: result["outcome"],
            TAG_RETRAIN: str(bool(result["retrain"])).lower(),
            TAG_RETRAIN_REASON: result["retrain_reason"] or "-",
            TAG_ALARMS: ",".join(result["alarms"]) or "-",
            TAG_CHAMPION_VERSION: result["champion_version"] or "-",
            TAG_REPORT: result["report_uri"],
            f"{TAG_PREFIX}drifted_columns": ",".join(drift.drifted_columns) if drift is not None else "-",
        },
    )
    tracking.log_files(run_id, {"summary.json": json.dumps(result, indent=2, default=str)}, "monitor")
    tracking.end_run(run_id)
