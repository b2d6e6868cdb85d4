"""The rows the monitor compares: the champion's reference sample and the current window's production rows."""

from __future__ import annotations

import io
import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from airflow_mlops.core.ingest.labels import LabelSet, attach_labels, read_labels
from airflow_mlops.core.lake import paths
from airflow_mlops.core.lake.storage import Lake
from airflow_mlops.core.train import training as tr
from airflow_mlops.core.train.tasks import PROBA_PREFIX, frame_scores, predict_frame, proba_column

if TYPE_CHECKING:
    from airflow_mlops.config import PipelineConfig

PREDICTION = "prediction"
MODEL_VERSION = "model_version"
LABEL = "label"
QUALITY_SAMPLE_ROWS = 200_000
"""Matured labelled rows kept for the quality metrics: far more than a metric estimate needs, bounded memory."""


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
    """Sampled production rows: the drift columns, the prediction (and class probabilities) and the model version."""
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
    label_landings: list[str] = field(default_factory=list)
    """With a label source of its own: the landing dates whose labels were joined to the window's rows."""
    served_labelled_rows: int = 0
    """Inference-log rows of the champion whose label landed (requests that carried the label key)."""
    notes: list[str] = field(default_factory=list)

    @property
    def total_rows(self) -> int:
        return sum(self.rows_seen.values())


def floats(values: pd.Series) -> np.ndarray:
    number = pd.to_numeric(values, errors="coerce")
    return pd.Series(number).astype("Float64").to_numpy(dtype="float64", na_value=np.nan)


def _normalise(
    frame: pd.DataFrame, numeric: Sequence[str], categorical: Sequence[str], task: str = "binary"
) -> pd.DataFrame:
    """The drift columns, the prediction and the model version with one dtype each (text or float64), whatever
    the source wrote. Multiclass: the prediction is the class (text), plus each `proba.<class>` as a number.

    One dtype per column keeps the sample's concatenation cheap and makes absent columns plain missing values.
    """
    n = len(frame)
    out: dict[str, Any] = {}

    def text(col: str) -> Any:
        return frame[col].astype("string") if col in frame.columns else pd.array([pd.NA] * n, dtype="string")

    for col in categorical:
        out[col] = text(col)
    for col in numeric:
        out[col] = floats(frame[col]) if col in frame.columns else np.full(n, np.nan)
    if task == "multiclass":
        out[PREDICTION] = text(PREDICTION)
        out.update({str(c): floats(frame[c]) for c in frame.columns if str(c).startswith(PROBA_PREFIX)})
    else:
        out[PREDICTION] = floats(frame[PREDICTION]) if PREDICTION in frame.columns else np.full(n, np.nan)
    out[MODEL_VERSION] = text(MODEL_VERSION)  # prediction drift compares the champion's own outputs only
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
    whose label is known also go to the quality sample. With a label source of its own, a row's label is the one
    that landed for its key by `ds` (rows without one are not judged), and inference-log rows that carry the
    label key (`features.key` and timestamp) are judged too. Only the needed columns are read; unreadable
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

    proba = PROBA_PREFIX if cfg.train.task == "multiclass" else None
    labels = _labels(lake, cfg, days[0], ds, out)
    label_keys = cfg.label_join[0] if labels is not None else []

    def normalise(frame: pd.DataFrame) -> pd.DataFrame:
        return _normalise(frame, numeric, categorical, cfg.train.task)

    for day in days:
        if "inference_log" in mon.sources:
            for uri in lake.list(lake.uri(paths.inference_log_partition(cfg.name, day))):
                if not uri.endswith(".parquet"):
                    continue
                part = _read(lake, uri, [*drift_columns, *label_keys, PREDICTION, MODEL_VERSION], out.notes, proba)
                if part is None or part.empty:
                    continue
                name = uri.rsplit("/", 1)[-1]
                out.rows_seen["inference_log"] += len(part)
                out.rows_by_day["inference_log"][day] = out.rows_by_day["inference_log"].get(day, 0) + len(part)
                rows.add(part, f"inference_log/{day}/{name}", normalise)
                if labels is not None and day in matured and all(k in part.columns for k in label_keys):
                    # Every request is logged, labelled or not: only the judged rows are counted.
                    served = _with_labels(part, labels, cfg, out, f"inference log {uri}")
                    out.served_labelled_rows += _add_quality(
                        quality,
                        served,
                        label,
                        champion_version,
                        f"quality/inference_log/{day}/{name}",
                        None,
                        cfg.train.task,
                    )
        if "predictions" in mon.sources:
            uri = lake.uri(paths.predictions(cfg.name, day))
            if not lake.exists(uri):
                continue
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
            if labels is not None and len(joined):
                joined = _with_labels(joined, labels, cfg, out, f"predictions of {day}")
            rows.add(joined, f"predictions/{day}", normalise)
            if day in matured and len(joined):
                _add_quality(quality, joined, label, champion_version, f"quality/{day}", out, cfg.train.task)
    out.rows = rows.frame([*drift_columns, PREDICTION, MODEL_VERSION])
    out.quality = quality.frame([PREDICTION, LABEL])
    return out


def _labels(lake: Lake, cfg: PipelineConfig, first: str, last: str, out: CurrentData) -> LabelSet | None:
    """The labels that landed during the window, with a label source of its own (None: labels come with rows)."""
    if cfg.label_source is None:
        return None
    try:
        labels = read_labels(lake, cfg, first, last)
    except ValueError as exc:  # reported, never the end of the monitor: quality is then not judged
        out.notes.append(f"labels not joined: {exc}")
        return LabelSet(pd.DataFrame())
    out.label_landings = sorted(labels.partitions)
    return labels


def _with_labels(
    frame: pd.DataFrame, labels: LabelSet, cfg: PipelineConfig, out: CurrentData, where: str
) -> pd.DataFrame:
    """`frame` with the label that landed for each row's key; on a key that cannot be joined, no label (a note)."""
    try:
        return attach_labels(frame, labels, cfg)
    except ValueError as exc:
        out.notes.append(f"{where}: {exc}")
        return frame.assign(**{cfg.features.label.name: pd.array([pd.NA] * len(frame), dtype="object")})


def _add_quality(
    sample: RowSample,
    joined: pd.DataFrame,
    label: str,
    champion: str | None,
    name: str,
    out: CurrentData | None,
    task: str = "binary",
) -> int:
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
    if out is not None:  # the counts of batch predictions (None: inference-log rows, counted by the caller)
        out.matured_rows += n
        out.other_version_rows += int((~same).sum())
        out.unlabelled_rows += int((same & ~known).sum())
    if use.any():
        part: dict[str, Any]
        if task == "multiclass":
            part = {LABEL: labels[use].astype(str).to_numpy(dtype=object)}
            part.update({proba_column(c): scores[use, i] for i, c in enumerate(classes)})
        elif task == "regression":
            part = {PREDICTION: scores[use], LABEL: floats(labels[use])}
        else:
            part = {PREDICTION: scores[use], LABEL: labels[use].astype("boolean").astype("int8").to_numpy()}
        sample.add(pd.DataFrame(part), name)
    return int(use.sum())
