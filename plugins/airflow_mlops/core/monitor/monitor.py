"""The monitor of a pipeline: drift of production inputs, model quality on matured labels, the retrain decision."""

from __future__ import annotations

import html
import io
import json
import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from airflow_mlops.config.train import LOWER_IS_BETTER, METRIC_NAMES
from airflow_mlops.core.lake import paths
from airflow_mlops.core.lake.storage import Lake
from airflow_mlops.core.monitor.drift import DriftResult, InsufficientData, detect_drift
from airflow_mlops.core.registry.tracking import CHAMPION, TAG_PREFIX, RunTags, Tracking, metric_key, retrying
from airflow_mlops.core.report import Link, Section, Table, Verdict, render_report
from airflow_mlops.core.train import training as tr
from airflow_mlops.core.train.tasks import PROBA_PREFIX, frame_scores, predict_frame, proba_column
from airflow_mlops.core.train.tasks import positives as count_positives

if TYPE_CHECKING:
    from airflow_mlops.config import PipelineConfig

Outcome = Literal["ok", "drift", "quality_drop", "insufficient_data", "no_champion"]

PREDICTION = "prediction"
MODEL_VERSION = "model_version"
LABEL = "label"
QUALITY_SAMPLE_ROWS = 200_000
"""Matured labelled rows kept for the quality metrics: far more than a metric estimate needs, bounded memory."""

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


def window_days(ds: str, days: int) -> list[str]:
    """The `days` dates ending on `ds`, oldest first."""
    end = date.fromisoformat(ds)
    return [(end - timedelta(days=n)).isoformat() for n in range(days - 1, -1, -1)]


# Reference sample (written at training time) ---------------------------------------------------------------


def reference_sample(split: tr.Split, cfg: PipelineConfig, spec: tr.FeatureSpec, model: Any) -> pd.DataFrame:
    """`monitor.reference_rows` rows of the train and validation days, drawn with train.seed, and the model's score.

    Columns: ds, key columns, timestamp, feature columns, label, prediction (and `proba.<class>` columns for
    multiclass, as the score DAG writes them). The holdout is left out: the
    reference is what the model learnt from. The same window and seed give the same sample.
    """
    frame = pd.concat([split.train, split.validation], ignore_index=True)
    if len(frame) > cfg.monitor.reference_rows:
        frame = frame.sample(n=cfg.monitor.reference_rows, random_state=cfg.train.seed).sort_index()
    wanted = [tr.DS_COLUMN, *cfg.features.key, cfg.features.timestamp, *spec.columns, spec.label]
    out = frame[[c for c in dict.fromkeys(wanted) if c in frame.columns]].reset_index(drop=True)
    with tr.thread_limit(cfg.train.model.threads):
        predicted = predict_frame(model, out[spec.columns], cfg.train.task)
    for col in predicted.columns:  # prediction, and the class probabilities of a multiclass model
        out[col] = predicted[col].to_numpy()
    return out


# Current production inputs ---------------------------------------------------------------------------------


class RowSample:
    """A uniform sample of at most `size` of all rows added (the `size` smallest random keys).

    Memory stays at about twice `size` rows plus the frame being added, whatever the volume. Keys come
    from a generator seeded by `seed` and the name of each added part, so the same data give the same sample.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.seed = seed
        self.seen = 0
        self._parts: list[pd.DataFrame] = []
        self._keys: list[np.ndarray] = []
        self._held = 0
        self._bound = math.inf  # once the sample is full, rows with a key above its largest can never enter

    def add(
        self, frame: pd.DataFrame, name: str, prepare: Callable[[pd.DataFrame], pd.DataFrame] | None = None
    ) -> None:
        """Offer the rows of `frame`; `prepare` converts only the rows that may enter (most never do)."""
        if frame.empty:
            return
        self.seen += len(frame)
        keys = np.random.default_rng([self.seed, zlib.crc32(name.encode("utf-8"))]).random(len(frame))
        keep = np.flatnonzero(keys < self._bound)
        if len(keep) > self.size:
            keep = keep[np.sort(np.argpartition(keys[keep], self.size - 1)[: self.size])]
        if not len(keep):
            return
        part = (frame.iloc[keep] if len(keep) < len(frame) else frame).reset_index(drop=True)
        self._parts.append(prepare(part) if prepare is not None else part)
        self._keys.append(keys[keep])
        self._held += len(keep)
        if self._held > 2 * self.size:
            self._compact()

    def _compact(self) -> None:
        if len(self._parts) <= 1 and self._held <= self.size:
            return
        frame = pd.concat(self._parts, ignore_index=True) if len(self._parts) > 1 else self._parts[0]
        keys = np.concatenate(self._keys)
        if len(frame) > self.size:
            keep = np.sort(np.argpartition(keys, self.size - 1)[: self.size])
            frame, keys = frame.iloc[keep].reset_index(drop=True), keys[keep]
        if len(frame) >= self.size:
            self._bound = float(keys.max())
        self._parts, self._keys, self._held = [frame], [keys], len(frame)

    def frame(self, columns: Sequence[str]) -> pd.DataFrame:
        """The sample (rows in the order they were added); an empty frame of `columns` when nothing was added."""
        if not self._parts:
            return pd.DataFrame({c: pd.Series(dtype="float64") for c in columns})
        self._compact()
        return self._parts[0]


@dataclass
class CurrentData:
    """What the monitor read from the lake for one window."""

    rows: pd.DataFrame
    """Sampled production rows: the drift columns and the prediction."""
    quality: pd.DataFrame
    """Sampled matured rows predicted by the champion with a known label: prediction, label (0/1)."""
    days: list[str]
    matured_days: list[str]
    rows_seen: dict[str, int]
    rows_by_day: dict[str, dict[str, int]]
    matured_rows: int = 0
    other_version_rows: int = 0
    unlabelled_rows: int = 0
    unmatched_rows: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def total_rows(self) -> int:
        return sum(self.rows_seen.values())


def _floats(values: pd.Series) -> np.ndarray:
    number = pd.to_numeric(values, errors="coerce")
    return pd.Series(number).astype("Float64").to_numpy(dtype="float64", na_value=np.nan)


def _normalise(frame: pd.DataFrame, numeric: Sequence[str], categorical: Sequence[str]) -> pd.DataFrame:
    """The drift columns and the prediction with one dtype each (text or float64), whatever the source wrote.

    One dtype per column keeps the sample's concatenation cheap and makes absent columns plain missing values.
    """
    n = len(frame)
    out: dict[str, Any] = {}
    for col in categorical:
        out[col] = frame[col].astype("string") if col in frame.columns else pd.array([pd.NA] * n, dtype="string")
    for col in [*numeric, PREDICTION]:
        out[col] = _floats(frame[col]) if col in frame.columns else np.full(n, np.nan)
    return pd.DataFrame(out, index=pd.RangeIndex(n))


def _read(
    lake: Lake, uri: str, columns: Sequence[str], notes: list[str], prefix: str | None = None
) -> pd.DataFrame | None:
    """The named columns a Parquet file has (others are left out), and those starting with `prefix`; None,
    with a note, if it cannot be read."""
    import pyarrow.parquet as pq

    try:
        handle = pq.ParquetFile(io.BytesIO(lake.read_bytes(uri)))
        names = handle.schema_arrow.names
        wanted = [*columns, *(n for n in names if prefix is not None and n.startswith(prefix))]
        present = [c for c in dict.fromkeys(wanted) if c in set(names)]
        frame: pd.DataFrame = handle.read(columns=present).to_pandas()
        return frame
    except Exception as exc:  # a missing or corrupt file is reported, never the end of the monitor
        notes.append(f"skipped {uri}: {exc}")
        return None


def _join_features(
    predictions: pd.DataFrame, features: pd.DataFrame | None, keys: Sequence[str], notes: list[str], where: str
) -> pd.DataFrame:
    """Predictions with the feature columns of their rows (inner join); unmatched predictions are left out.

    The score DAG writes one prediction per feature row in the same order, so equal key columns row by
    row join by position (exact even when keys repeat); otherwise rows join on key + timestamp, and keys
    repeated in the features are left out rather than guessed.
    """
    if features is None:
        return predictions.iloc[:0]
    missing = [k for k in keys if k not in predictions.columns or k not in features.columns]
    if missing:
        notes.append(f"{where}: cannot join predictions to features: no column(s) {', '.join(missing)}")
        return predictions.iloc[:0]
    pred = predictions.reset_index(drop=True)
    feat = features.reset_index(drop=True)
    extra = feat.drop(columns=[*keys, *[c for c in feat.columns if c in pred.columns and c not in keys]])
    if len(pred) == len(feat) and all(pred[k].equals(feat[k]) for k in keys):
        return pd.concat([pred, extra], axis=1)
    unique = pd.concat([feat[list(keys)], extra], axis=1).drop_duplicates(list(keys), keep=False)
    try:
        return pred.merge(unique, on=list(keys), how="inner", validate="many_to_one")
    except (ValueError, TypeError) as exc:  # e.g. key dtypes that do not compare
        notes.append(f"{where}: cannot join predictions to features on {', '.join(keys)}: {exc}")
        return pred.iloc[:0]


def load_current(
    lake: Lake,
    cfg: PipelineConfig,
    ds: str,
    numeric: Sequence[str],
    categorical: Sequence[str],
    champion_version: str | None,
) -> CurrentData:
    """Production rows of the window ending on `ds` from the configured sources, sampled to bounded memory.

    inference_log: every file of inference_log/<p>/date=<day>/ (requests to the model server).
    predictions: predictions/<p>/date=<day>/ joined back to features/<p>/date=<day>/ for the feature
    columns; on days at least `quality.label_delay_days` before `ds`, the rows the champion predicted
    whose label is known also go to the quality sample. Only the needed columns are read; unreadable
    files are skipped with a note.
    """
    mon = cfg.monitor
    days = window_days(ds, mon.window_days)
    last_matured = (date.fromisoformat(ds) - timedelta(days=mon.quality.label_delay_days)).isoformat()
    matured = [d for d in days if d <= last_matured]
    keys = list(dict.fromkeys([*cfg.features.key, cfg.features.timestamp]))
    label = cfg.features.label.name
    drift_columns = [*categorical, *numeric]
    rows = RowSample(mon.drift.sample_rows, cfg.train.seed)
    quality = RowSample(QUALITY_SAMPLE_ROWS, cfg.train.seed + 1)
    out = CurrentData(
        rows=pd.DataFrame(),
        quality=pd.DataFrame(),
        days=days,
        matured_days=matured,
        rows_seen={s: 0 for s in mon.sources},
        rows_by_day={s: {} for s in mon.sources},
    )

    def normalise(frame: pd.DataFrame) -> pd.DataFrame:
        return _normalise(frame, numeric, categorical)

    for day in days:
        if "inference_log" in mon.sources:
            for uri in lake.list(lake.uri(paths.inference_log_partition(cfg.name, day))):
                if not uri.endswith(".parquet"):
                    continue
                part = _read(lake, uri, [*drift_columns, PREDICTION], out.notes)
                if part is None or part.empty:
                    continue
                out.rows_seen["inference_log"] += len(part)
                out.rows_by_day["inference_log"][day] = out.rows_by_day["inference_log"].get(day, 0) + len(part)
                rows.add(part, f"inference_log/{day}/{uri.rsplit('/', 1)[-1]}", normalise)
        if "predictions" in mon.sources:
            uri = lake.uri(paths.predictions(cfg.name, day))
            if not lake.exists(uri):
                continue
            proba = PROBA_PREFIX if cfg.train.task == "multiclass" else None
            pred = _read(lake, uri, [*keys, PREDICTION, MODEL_VERSION], out.notes, proba)
            if pred is None or pred.empty:
                continue
            out.rows_seen["predictions"] += len(pred)
            out.rows_by_day["predictions"][day] = len(pred)
            features_uri = lake.uri(paths.features(cfg.name, day))
            features = None
            if lake.exists(features_uri):
                features = _read(lake, features_uri, [*keys, *drift_columns, label], out.notes)
            else:
                out.notes.append(f"predictions of {day}: no features partition {features_uri} to join")
            joined = _join_features(pred, features, keys, out.notes, f"predictions of {day}")
            out.unmatched_rows += len(pred) - len(joined)
            rows.add(joined, f"predictions/{day}", normalise)
            if day in matured and len(joined):
                _add_quality(quality, joined, label, champion_version, day, out, cfg.train.task)
    out.rows = rows.frame([*drift_columns, PREDICTION])
    out.quality = quality.frame([PREDICTION, LABEL])
    return out


def _add_quality(
    sample: RowSample,
    joined: pd.DataFrame,
    label: str,
    champion: str | None,
    day: str,
    out: CurrentData,
    task: str = "binary",
) -> None:
    """The day's rows predicted by the champion, with a known label and a score, into the quality sample.

    The score is the prediction (binary, regression) or the class probabilities (multiclass, `proba.<class>`).
    """
    n = len(joined)
    labels = joined[label] if label in joined.columns else pd.Series([pd.NA] * n, dtype="boolean")
    known = labels.notna().to_numpy()
    versions = joined[MODEL_VERSION].astype(str).to_numpy() if MODEL_VERSION in joined.columns else np.full(n, "")
    same = versions == str(champion)
    scores, classes = frame_scores(joined, task) if PREDICTION in joined.columns else (np.full(n, np.nan), [])
    if task == "multiclass":
        scored = ~np.isnan(scores).any(axis=1) if classes else np.zeros(n, dtype=bool)
    else:
        scored = ~np.isnan(scores)
    use = same & known & scored
    out.matured_rows += n
    out.other_version_rows += int((~same).sum())
    out.unlabelled_rows += int((same & ~known).sum())
    if use.any():
        part: dict[str, Any]
        if task == "multiclass":
            part = {LABEL: labels[use].astype(str).to_numpy(dtype=object)}
            part.update({proba_column(c): scores[use, i] for i, c in enumerate(classes)})
        elif task == "regression":
            part = {PREDICTION: scores[use], LABEL: _floats(labels[use])}
        else:
            part = {PREDICTION: scores[use], LABEL: labels[use].astype("boolean").astype("int8").to_numpy()}
        sample.add(pd.DataFrame(part), f"quality/{day}")


# Quality ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QualityResult:
    """The primary metric on matured labels against the champion's own holdout figure."""

    metric: str
    value: float
    baseline: float
    drop: float
    """How much worse than the baseline, in the metric's better direction (negative: better)."""
    max_drop: float
    degraded: bool
    rows: int
    positives: int
    champion_version: str
    days: list[str]
    metrics: dict[str, float]
    baselines: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        def clean(values: Mapping[str, float]) -> dict[str, float | None]:
            return {k: None if math.isnan(v) else v for k, v in values.items()}

        return {
            "metric": self.metric,
            "value": self.value,
            "baseline": self.baseline,
            "drop": self.drop,
            "max_drop": self.max_drop,
            "degraded": self.degraded,
            "lower_is_better": self.metric in LOWER_IS_BETTER,
            "rows": self.rows,
            "positives": self.positives,
            "champion_version": self.champion_version,
            "days": list(self.days),
            "metrics": clean(self.metrics),
            "baselines": clean(self.baselines),
        }


def assess_quality(
    sample: pd.DataFrame,
    cfg: PipelineConfig,
    baselines: Mapping[str, float],
    champion_version: str,
    days: Sequence[str],
) -> QualityResult:
    """The metrics of the champion's matured predictions; degraded when the primary metric is worse than
    the champion's holdout figure (`baselines`) by more than `quality.max_drop`.

    Raises InsufficientData for fewer than `quality.min_rows` rows, a missing baseline, or a primary metric
    that is undefined on these rows (one class only).
    """
    q = cfg.monitor.quality
    primary = cfg.train.metric.primary
    span = f"{days[0]}..{days[-1]}" if days else "none"
    if not days:
        raise InsufficientData(
            f"no day of the window has matured labels (quality.label_delay_days {q.label_delay_days} "
            f">= window_days {cfg.monitor.window_days})"
        )
    if len(sample) < q.min_rows:
        raise InsufficientData(
            f"{len(sample)} matured labelled row(s) predicted by champion v{champion_version} on days {span}; "
            f"quality.min_rows is {q.min_rows}"
        )
    baseline = baselines.get(primary, math.nan)
    if math.isnan(baseline):
        raise InsufficientData(
            f"champion v{champion_version} has no holdout {primary} in its training run to compare with"
        )
    task = cfg.train.task
    y_score, classes = frame_scores(sample, task)
    y_true = sample[LABEL].to_numpy(dtype={"binary": "int8", "regression": "float64"}.get(task, "object"))
    metrics = tr.compute_metrics(y_true, y_score, cfg.train.metric.threshold, task, classes)
    value = metrics[primary]
    if math.isnan(value):
        raise InsufficientData(
            f"{primary} is undefined on the {len(sample)} matured rows of days {span}: every label is "
            f"{y_true[0] if len(y_true) else '-'}"
        )
    drop = value - baseline if primary in LOWER_IS_BETTER else baseline - value
    return QualityResult(
        metric=primary,
        value=value,
        baseline=baseline,
        drop=drop,
        max_drop=q.max_drop,
        degraded=drop > q.max_drop,
        rows=len(sample),
        positives=count_positives(y_true, task),
        champion_version=champion_version,
        days=list(days),
        metrics=metrics,
        baselines=dict(baselines),
    )


# Decision --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """The monitor's verdict: outcome, alarms, whether to retrain, and why (human-readable)."""

    outcome: Outcome
    alarms: list[str]
    retrain: bool
    reasons: list[str]
    retrain_reason: str = ""


def cooldown_blocker(ds: str, previous: Sequence[tuple[str, str]], cooldown_days: int) -> tuple[str, str] | None:
    """The latest earlier retrain (logical date, MLflow run id) within `cooldown_days` days up to `ds`, if any."""
    if cooldown_days <= 0:
        return None
    day = date.fromisoformat(ds)
    hits = []
    for prev_ds, run_id in previous:
        try:
            delta = (day - date.fromisoformat(prev_ds)).days
        except ValueError:
            continue  # a hand-edited tag is not a date: it cannot hold back a retrain
        if 0 <= delta <= cooldown_days:
            hits.append((prev_ds, run_id))
    return max(hits) if hits else None


def _fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def drift_reason(result: DriftResult) -> str:
    """One line on a drift result: which columns drifted, by how much, against which rule."""
    drifted = result.drifted_columns
    detail = "; ".join(
        f"{c} {col.method} {_fmt(col.score)} (threshold {_fmt(col.threshold)})"
        for c, col in result.columns.items()
        if col.drifted
    )
    share = f"{len(drifted)} of {len(result.columns)} columns drifted ({result.share:.0%}, share_threshold " + (
        f"{result.share_threshold:.0%})"
    )
    if result.drifted:
        why = f"critical column(s) {', '.join(result.critical_drifted)} drifted; " if result.critical_drifted else ""
        return f"drift: {why}{share}: {detail}"
    return f"no drift: {share}{': ' + detail if detail else ''}; no critical column drifted"


def quality_reason(result: QualityResult) -> str:
    """One line on a quality result, naming the metric, the figures and the rule."""
    direction = "worse" if result.drop > 0 else "better"
    verdict = "quality drop" if result.degraded else "quality ok"
    return (
        f"{verdict}: {result.metric} {result.value:.3f} on {result.rows} matured rows of days "
        f"{result.days[0]}..{result.days[-1]} vs {result.baseline:.3f} on champion v{result.champion_version}'s "
        f"holdout: {direction} by {abs(result.drop):.3f} (max_drop {result.max_drop:g})"
    )


def decide(
    cfg: PipelineConfig,
    drift: DriftResult | None,
    quality: QualityResult | None,
    insufficient: Mapping[str, str],
    *,
    blocker: tuple[str, str] | None,
    train_active: bool,
    notes: Sequence[str] = (),
) -> Decision:
    """Outcome and retrain from the checks.

    Outcome: quality_drop or drift when that alarm fired (quality first: it is the harm itself), else
    insufficient_data when a check could not be made (`insufficient`: check -> why), else ok. A retrain
    is wanted when an alarm is among retrain.triggers and retrain is enabled, unless a <p>__train run is
    active or an earlier monitor run triggered one within the cool-down (`blocker`: its date and run id).
    """
    reasons: list[str] = []
    alarms: list[str] = []
    why: dict[str, str] = {}  # alarm -> its reason line
    if drift is not None:
        reasons.append(drift_reason(drift))
        if drift.drifted:
            alarms.append("drift")
            why["drift"] = reasons[-1]
        if drift.skipped:
            reasons.append(
                "drift not judged for column(s) " + "; ".join(f"{c}: {why}" for c, why in drift.skipped.items())
            )
    if quality is not None:
        reasons.append(quality_reason(quality))
        if quality.degraded:
            alarms.append("quality")
            why["quality"] = reasons[-1]
    reasons.extend(f"insufficient data for {check}: {why}" for check, why in insufficient.items())
    reasons.extend(notes)
    if "quality" in alarms:
        outcome: Outcome = "quality_drop"
    elif alarms:
        outcome = "drift"
    else:
        outcome = "insufficient_data" if insufficient else "ok"
    retrain_cfg = cfg.monitor.retrain
    wanted = [a for a in alarms if a in retrain_cfg.triggers]
    retrain = False
    if alarms:
        train_dag = cfg.dag_id("train")
        if not retrain_cfg.enabled:
            reasons.append("no retrain: monitor.retrain.enabled is false")
        elif not wanted:
            reasons.append(
                f"no retrain: alarm(s) {', '.join(alarms)} not in monitor.retrain.triggers "
                f"({', '.join(retrain_cfg.triggers) or 'none'})"
            )
        elif train_active:
            reasons.append(f"no retrain: a {train_dag} run is already active")
        elif blocker is not None:
            reasons.append(
                f"no retrain: cool-down: the monitor run of {blocker[0]} (MLflow run {blocker[1]}) triggered "
                f"{train_dag}, within monitor.retrain.cooldown_days ({retrain_cfg.cooldown_days})"
            )
        else:
            retrain = True
            reasons.append(f"retrain: triggering {train_dag} (alarm: {', '.join(wanted)})")
    retrain_reason = "monitor: " + "; ".join(why[a] for a in wanted) if retrain else ""
    return Decision(outcome, alarms, retrain, reasons, retrain_reason)


# Report ----------------------------------------------------------------------------------------------------


def render_monitor_html(
    cfg: PipelineConfig,
    ds: str,
    decision: Decision,
    context: Mapping[str, str | Link],
    current: CurrentData | None,
    drift: DriftResult | None,
    quality: QualityResult | None,
    critical: Sequence[str],
) -> str:
    """The monitor's page: verdict and reasons, drift per column, quality, rows read, then Evidently's report."""
    label = decision.outcome.replace("_", " ").upper()
    summary = decision.reasons[0] if decision.reasons else decision.outcome
    if decision.retrain:
        summary = f"retrain triggered; {summary}"
    verdict = Verdict(ok=not decision.alarms, summary=summary, labels=(label, label))
    status: Literal["fail", "warn", "pass"] = (
        "fail" if decision.alarms else ("warn" if decision.outcome != "ok" else "pass")
    )
    sections = [Section(title="Decision", text="\n\n".join(decision.reasons), status=status)]
    if drift is not None:
        cols = list(drift.columns.items())
        sections.append(
            Section(
                title=f"Drift per column ({len(drift.drifted_columns)} of {len(cols)} drifted)",
                status="fail" if drift.drifted else "pass",
                text=(
                    f"Reference: {drift.rows_reference} rows of the champion's training days; current: "
                    f"{drift.rows_current} sampled production rows. Drift of the data when at least "
                    f"{drift.share_threshold:.0%} of the columns drift, or a critical column does."
                ),
                table=Table(
                    headers=("Drifted", "Column", "Method", "Score", "Threshold", "Critical"),
                    rows=[
                        (
                            "DRIFT" if c.drifted else "no",
                            name,
                            c.method,
                            _fmt(c.score),
                            _fmt(c.threshold),
                            "yes" if name in critical else "",
                        )
                        for name, c in cols
                    ],
                    statuses=["fail" if c.drifted else "pass" for _, c in cols],
                ),
            )
        )
    if quality is not None:
        names = [m for m in METRIC_NAMES if m in quality.metrics]
        sections.append(
            Section(
                title=f"Quality on matured labels ({quality.rows} rows)",
                status="fail" if quality.degraded else "pass",
                text=quality_reason(quality),
                table=Table(
                    headers=("Metric", "Matured rows", f"Champion v{quality.champion_version} holdout"),
                    rows=[
                        (
                            m + (" (primary)" if m == quality.metric else ""),
                            _fmt(quality.metrics[m]) if not math.isnan(quality.metrics[m]) else "-",
                            _fmt(quality.baselines[m]) if m in quality.baselines else "-",
                        )
                        for m in names
                    ],
                    statuses=[
                        ("fail" if quality.degraded else "pass") if m == quality.metric else "info" for m in names
                    ],
                ),
            )
        )
    if current is not None:
        rows = [
            (source, day, str(count))
            for source, by_day in current.rows_by_day.items()
            for day, count in sorted(by_day.items())
        ]
        text = (
            f"Window {current.days[0]}..{current.days[-1]}; labels matured up to "
            f"{current.matured_days[-1] if current.matured_days else '(none)'}. Sampled for drift: "
            f"{len(current.rows)} of {current.total_rows} rows. Predictions without features: "
            f"{current.unmatched_rows}; matured rows of other model versions: {current.other_version_rows}; "
            f"matured rows of the champion without a known label: {current.unlabelled_rows}."
        )
        sections.append(
            Section(title="Production rows read", text=text, table=Table(headers=("Source", "Day", "Rows"), rows=rows))
        )
    page = render_report(f"Monitor of {cfg.name} for {ds}", context, sections, verdict)
    if drift is not None and drift.html:
        # Evidently's page is a whole document with its own scripts: a sandboxed srcdoc frame keeps both apart.
        frame = (
            '<section class="info"><h2>Evidently data drift report</h2>'
            f'<iframe title="Evidently data drift report" sandbox="allow-scripts" '
            f'style="width:100%;height:1800px;border:0" srcdoc="{html.escape(drift.html, quote=True)}"></iframe>'
            "</section>"
        )
        cut = page.rfind("<footer>")
        page = page[:cut] + frame + page[cut:]
    return page


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
class Champion:
    """The champion version, its training run, reference sample and holdout metrics."""

    name: str
    version: str
    run_id: str | None
    reference: pd.DataFrame | None
    baselines: dict[str, float]


def champion_of(tracking: Tracking, name: str) -> Champion | None:
    """The version with alias `champion` and what its training run recorded; None when there is none yet."""
    version = tracking.alias_version(name, CHAMPION)
    if version is None:
        return None

    def details() -> tuple[str | None, dict[str, float]]:
        run_id = tracking.client.get_model_version(name, version).run_id
        if not run_id:
            return None, {}
        metrics = tracking.client.get_run(run_id).data.metrics
        prefix = "holdout."
        return run_id, {
            k[len(prefix) :]: float(v)
            for k, v in metrics.items()
            if k[len(prefix) :] in METRIC_NAMES and k.startswith(prefix)
        }

    run_id, baselines = retrying(details, tracking.retry, f"read {name} v{version}", tracking.tracking_uri)
    reference = tracking.load_reference(run_id) if run_id else None
    return Champion(name, version, run_id, reference, baselines)


@dataclass
class Checks:
    """Everything the monitor found for one window, before it is reported and logged."""

    decision: Decision
    current: CurrentData | None = None
    drift: DriftResult | None = None
    quality: QualityResult | None = None
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
                methods={c: m for c, m in mon.drift.methods.items() if c in checked},
                thresholds={c: t for c, t in mon.drift.thresholds.items() if c in checked},
                critical=out.critical,
                share_threshold=mon.drift.share_threshold,
                sample_rows=mon.drift.sample_rows,
                min_rows=mon.drift.min_rows,
                seed=cfg.train.seed,
                timestamp=datetime.fromisoformat(ds),
            )
        except InsufficientData as exc:
            out.insufficient["drift"] = f"{exc} ({current.total_rows} production rows in the window)"
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
    blocker = cooldown_blocker(ds, previous, mon.retrain.cooldown_days)
    out.decision = decide(
        cfg, out.drift, out.quality, out.insufficient, blocker=blocker, train_active=train_active, notes=notes
    )
    return out


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
    page = render_monitor_html(cfg, ds, decision, context, current, drift, quality, checks.critical)
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
        "rows": len(current.rows) if current is not None else 0,
        "rows_seen": dict(current.rows_seen) if current is not None else {},
        "metric_step": metric_step(ds),
    }
    _log_run(tracking, run_id, cfg, ds, result, current, drift, quality, champion)
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
) -> None:
    """Figures as metrics at step = days since 1970-01-01 of `ds`; outcome and retrain as tags (the cool-down
    reads `mlops.retrain_triggered` and `mlops.monitor_ds`); the summary as monitor/summary.json."""
    metrics: dict[str, float | None] = {
        "retrain": float(result["retrain"]),
        "alarm.drift": float("drift" in result["alarms"]),
        "alarm.quality": float("quality" in result["alarms"]),
        "rows.current": float(result["rows"]),
    }
    if current is not None:
        metrics.update({f"rows.{s}": float(n) for s, n in current.rows_seen.items()})
        metrics["rows.unmatched_predictions"] = float(current.unmatched_rows)
        metrics["rows.matured_labelled"] = float(len(current.quality))
        scores = current.rows[PREDICTION] if PREDICTION in current.rows.columns else pd.Series(dtype="float64")
        metrics["prediction.mean"] = float(scores.mean()) if scores.notna().any() else None
    if champion is not None and champion.reference is not None and PREDICTION in champion.reference.columns:
        reference_scores = _floats(champion.reference[PREDICTION])  # NaN for the classes of a multiclass model
        if not np.isnan(reference_scores).all():
            metrics["prediction.mean.reference"] = float(np.nanmean(reference_scores))
    if drift is not None:
        metrics.update(
            {
                "drift.share": drift.share,
                "drift.drifted": float(drift.drifted),
                "drift.columns_drifted": float(len(drift.drifted_columns)),
            }
        )
        metrics.update({metric_key("drift.score", c): col.score for c, col in drift.columns.items()})
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
