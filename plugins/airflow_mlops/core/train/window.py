"""The training window: labelled rows of the feature partitions in a date range, and its time split."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import pandas as pd

from airflow_mlops.core.ingest.labels import attach_labels, read_labels
from airflow_mlops.core.lake import paths
from airflow_mlops.core.lake.hashing import combine_hashes, frame_hash
from airflow_mlops.core.lake.storage import Lake
from airflow_mlops.core.train.tasks import LabelError, label_values

if TYPE_CHECKING:
    from airflow_mlops.config import PipelineConfig


FEATURES_ZONE = "features"
DS_COLUMN = "ds"


class TrainingDataError(ValueError):
    """The feature window cannot be used for training; the message names the window, file or column."""


# Data window ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataSummary:
    """What a model was trained on: the window, its partitions and their content hash (JSON-safe)."""

    pipeline: str
    window_start: str
    window_end: str
    source_uri: str
    partitions: list[str]
    partition_uris: list[str]
    partition_hashes: dict[str, str]
    content_hash: str
    rows_read: int
    rows_labelled: int
    label_partitions: dict[str, str] = field(default_factory=dict)
    """With a label source of its own: landing date -> content hash of the labels that landed then (up to the
    window's end); the content hash covers them too."""
    label_uris: dict[str, str] = field(default_factory=dict)
    """Landing date -> URI of those labels."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DataSummary:
        return cls(**dict(data))


@dataclass
class TrainingData:
    """The labelled rows of a window (column `ds` = partition date) and its summary."""

    frame: pd.DataFrame
    summary: DataSummary

    @property
    def partitions(self) -> list[str]:
        return self.summary.partitions

    @property
    def content_hash(self) -> str:
        return self.summary.content_hash


def window_dates(end_ds: str, window_days: int) -> tuple[str, str]:
    """First and last date (inclusive) of the `window_days` days ending on `end_ds`."""
    end = date.fromisoformat(end_ds)
    return (end - timedelta(days=window_days - 1)).isoformat(), end.isoformat()


def content_hash(partition_hashes: Mapping[str, str]) -> str:
    """sha256 over `ds:hash` lines sorted by date: the same partitions give the same hash in any order."""
    return combine_hashes(f"{ds}:{partition_hashes[ds]}" for ds in sorted(partition_hashes))


def load_window(
    lake: Lake,
    cfg: PipelineConfig,
    end_ds: str,
    window_days: int,
    *,
    min_rows: int = 1,
    min_partitions: int = 1,
) -> TrainingData:
    """Labelled feature rows of the partitions that exist in [end_ds - window_days + 1, end_ds].

    Rows whose label is not known yet (null) are dropped. With a label source of its own, each row's label is
    the one that landed for its key by `end_ds` (core.ingest.labels): a rerun later sees the same labels. The label
    becomes what train.task learns from
    (binary: 0/1 int8; regression: float64; multiclass: int64 or text). Each partition's
    hash is `frame_hash` of its content (as the ingest computes it), independent of the Parquet writer.
    Raises TrainingDataError when fewer than `min_partitions` partitions or `min_rows` rows are found.
    """
    start, end = window_dates(end_ds, window_days)
    pipeline = cfg.name
    label = cfg.features.label.name
    needed = [*cfg.feature_columns, label]
    source_uri = lake.uri(paths.features_root(pipeline))
    dates = [ds for ds in lake.partitions(FEATURES_ZONE, pipeline, "") if start <= ds <= end]
    frames: list[pd.DataFrame] = []
    hashes: dict[str, str] = {}
    uris: list[str] = []
    rows_read = 0
    labels = None
    if cfg.label_source is not None:
        try:
            labels = read_labels(lake, cfg, start, end)
        except ValueError as exc:
            raise TrainingDataError(str(exc)) from exc
    for ds in dates:
        uri = lake.uri(paths.features(pipeline, ds))
        if not lake.exists(uri):
            continue  # a partition folder without the features file is not a finished partition
        raw = lake.read_bytes(uri)
        try:
            part = pd.read_parquet(io.BytesIO(raw), engine="pyarrow")
        except Exception as exc:  # pyarrow raises several types for a corrupt file
            raise TrainingDataError(f"{uri}: not a readable Parquet file: {exc}") from exc
        missing = [c for c in needed if c not in part.columns]
        if missing:
            raise TrainingDataError(
                f"{uri}: missing column(s) {', '.join(missing)} (feature columns and label of {pipeline})"
            )
        rows_read += len(part)
        hashes[ds] = frame_hash(part)
        part[DS_COLUMN] = ds  # the partition is the truth for the row's date
        if labels is not None:
            try:
                part = attach_labels(part, labels, cfg)
            except ValueError as exc:
                raise TrainingDataError(f"{uri}: {exc}") from exc
        frames.append(part[part[label].notna()])
        uris.append(uri)
    found = sorted(hashes)
    if len(found) < min_partitions:
        raise TrainingDataError(
            f"{source_uri}: window {start}..{end} has {len(found)} feature partition(s), "
            f"at least {min_partitions} needed (ingest the missing days or widen the window)"
        )
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*needed, DS_COLUMN])
    frame[label] = _label_values(frame[label], label, source_uri, cfg.train.task)
    if len(frame) < min_rows:
        raise TrainingDataError(
            f"{source_uri}: window {start}..{end} has {len(frame)} labelled row(s) in {len(found)} partition(s)"
            + (f" with {len(labels.partitions)} label landing(s) by {end}" if labels is not None else "")
            + f"; train.min_rows is {min_rows}"
        )
    summary = DataSummary(
        pipeline=pipeline,
        window_start=start,
        window_end=end,
        source_uri=source_uri,
        partitions=found,
        partition_uris=uris,
        partition_hashes=hashes,
        content_hash=content_hash(hashes)
        if labels is None
        else combine_hashes([content_hash(hashes), labels.content_hash]),
        rows_read=rows_read,
        rows_labelled=len(frame),
        label_partitions=dict(labels.partitions) if labels is not None else {},
        label_uris={ds: lake.uri(paths.labels(pipeline, ds)) for ds in labels.partitions} if labels is not None else {},
    )
    return TrainingData(frame=frame, summary=summary)


def _label_values(values: pd.Series, label: str, where: str, task: str) -> pd.Series:
    try:
        return label_values(values, task, label, where)
    except LabelError as exc:
        raise TrainingDataError(str(exc)) from exc


def partition_ranges(partitions: Sequence[str]) -> str:
    """Dates compressed into runs of consecutive days, e.g. `2013-01-01..2013-01-31, 2013-02-02`."""
    days = sorted(date.fromisoformat(p) for p in partitions)
    runs: list[tuple[date, date]] = []
    for day in days:
        if runs and day - runs[-1][1] == timedelta(days=1):
            runs[-1] = (runs[-1][0], day)
        else:
            runs.append((day, day))
    return ", ".join(a.isoformat() if a == b else f"{a.isoformat()}..{b.isoformat()}" for a, b in runs)


# Split ---------------------------------------------------------------------------------------------------


@dataclass
class Split:
    """Train, validation and holdout rows, split by date: every holdout day is after every train day."""

    train: pd.DataFrame
    validation: pd.DataFrame
    holdout: pd.DataFrame
    train_days: list[str]
    validation_days: list[str]
    holdout_days: list[str]

    def summary(self) -> dict[str, Any]:
        """Day ranges and row counts of the three parts (JSON-safe)."""

        def part(days: list[str], rows: pd.DataFrame) -> dict[str, Any]:
            return {
                "start": days[0] if days else None,
                "end": days[-1] if days else None,
                "days": len(days),
                "rows": len(rows),
            }

        return {
            "train": part(self.train_days, self.train),
            "validation": part(self.validation_days, self.validation),
            "holdout": part(self.holdout_days, self.holdout),
        }


def split_by_time(frame: pd.DataFrame, validation_days: int, holdout_days: int) -> Split:
    """Split on the partition dates present: the last `holdout_days` dates are the holdout, the
    `validation_days` before them the validation, the rest the training days. No shuffling."""
    days = sorted(frame[DS_COLUMN].unique().tolist())
    if len(days) < validation_days + holdout_days + 1:
        raise TrainingDataError(
            f"{len(days)} day(s) of data ({days[0] if days else '-'}..{days[-1] if days else '-'}) cannot give "
            f"holdout_days={holdout_days}, validation_days={validation_days} and at least one training day"
        )
    holdout = days[len(days) - holdout_days :]
    validation = days[len(days) - holdout_days - validation_days : len(days) - holdout_days]
    train = days[: len(days) - holdout_days - validation_days]
    # The ranges must not touch: leakage across time would make the holdout optimistic.
    assert max(train) < min(validation or holdout) and (not validation or max(validation) < min(holdout))
    assert (
        not (set(train) & set(validation)) and not (set(validation) & set(holdout)) and not (set(train) & set(holdout))
    )
    by_day = frame[DS_COLUMN]
    return Split(
        train=frame[by_day.isin(train)].reset_index(drop=True),
        validation=frame[by_day.isin(validation)].reset_index(drop=True),
        holdout=frame[by_day.isin(holdout)].reset_index(drop=True),
        train_days=train,
        validation_days=validation,
        holdout_days=holdout,
    )
