"""Labels that arrive later: built from a label source of their own, kept by landing date, joined to rows by key."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd

from airflow_mlops.core.ingest.features import label_column
from airflow_mlops.core.lake import paths
from airflow_mlops.core.lake.hashing import combine_hashes, frame_hash
from airflow_mlops.core.lake.storage import Lake

if TYPE_CHECKING:
    from airflow_mlops.config import PipelineConfig

LABELS_ZONE = "labels"
LANDED = "landed"
"""Column of a label set: the logical date its landing was ingested (a later landing restates an earlier one)."""


def build_labels(cfg: PipelineConfig, source: pd.DataFrame) -> pd.DataFrame:
    """The labels of one landing of the label source: the feature rows' key and timestamp columns (renamed from
    the source's own), and the label; rows whose label is not known (`known` false or a null label) are left out,
    as are all but the last row of a key the landing repeats (the latest statement of an outcome wins)."""
    left, right = cfg.label_join
    label = cfg.features.label.name
    values = label_column(cfg, source)
    out = source[right].set_axis(left, axis=1).reset_index(drop=True)
    out = normalise_keys(out, left)
    out[label] = values.reset_index(drop=True)
    out = out[out[label].notna()]
    return out.drop_duplicates(left, keep="last").sort_values(left, kind="stable").reset_index(drop=True)


def normalise_keys(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Join columns with one dtype each whatever wrote them: date-times as UTC nanoseconds, text as strings.

    Parquet round trips change a date-time's unit and pandas refuses to merge text with objects: the feature
    rows, predictions and labels must compare equal when their values do.
    """
    for col in columns:
        values = frame[col]
        if isinstance(values.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(values.dtype):
            frame[col] = pd.to_datetime(values, utc=True).astype("datetime64[ns, UTC]")
        elif values.dtype == object or isinstance(values.dtype, pd.StringDtype):
            frame[col] = values.astype("string")
    return frame


@dataclass
class LabelSet:
    """The labels that landed in a range of logical dates, one per key (the latest landing wins)."""

    frame: pd.DataFrame
    partitions: dict[str, str] = field(default_factory=dict)
    """Landing date -> content hash of that landing's labels (what a model's data lineage records)."""

    @property
    def content_hash(self) -> str:
        return combine_hashes(f"labels {ds}:{self.partitions[ds]}" for ds in sorted(self.partitions))


def read_labels(lake: Lake, cfg: PipelineConfig, first: str | None, last: str) -> LabelSet:
    """Every label that landed from `first` (None: the beginning) to `last`, both included.

    Only landings up to `last` count, so a training or monitor run dated `last` sees the same labels when it is
    rerun later. An unreadable landing raises: its labels would silently be missing.
    """
    left = cfg.label_join[0]
    label = cfg.features.label.name
    dates = [d for d in lake.partitions(LABELS_ZONE, cfg.name, "") if (first is None or first <= d) and d <= last]
    frames: list[pd.DataFrame] = []
    hashes: dict[str, str] = {}
    for ds in dates:
        uri = lake.uri(paths.labels(cfg.name, ds))
        if not lake.exists(uri):
            continue  # a partition folder without its file is not a finished landing
        try:
            part = pd.read_parquet(io.BytesIO(lake.read_bytes(uri)), engine="pyarrow")
        except Exception as exc:  # pyarrow raises several types for a corrupt file
            raise ValueError(f"{uri}: not a readable Parquet file: {exc}") from exc
        missing = [c for c in [*left, label] if c not in part.columns]
        if missing:
            raise ValueError(f"{uri}: missing column(s) {', '.join(missing)} (label key and label of {cfg.name})")
        hashes[ds] = frame_hash(part)
        part = normalise_keys(part[[*left, label]].copy(), left)
        part[LANDED] = ds
        frames.append(part)
    if not frames:
        empty = pd.DataFrame({c: pd.Series(dtype="object") for c in [*left, label, LANDED]})
        return LabelSet(empty, hashes)
    frame = pd.concat(frames, ignore_index=True)  # landings in date order: keep="last" keeps the latest
    frame = frame.drop_duplicates(left, keep="last").reset_index(drop=True)
    return LabelSet(frame, hashes)


def attach_labels(frame: pd.DataFrame, labels: LabelSet, cfg: PipelineConfig) -> pd.DataFrame:
    """`frame` (feature rows or predictions, with the key and timestamp columns) with its label column taken from
    `labels`: null where no label has landed. Row order and count are kept."""
    left = cfg.label_join[0]
    label = cfg.features.label.name
    missing = [c for c in left if c not in frame.columns]
    if missing:
        raise ValueError(f"cannot join labels: no column(s) {', '.join(missing)}")
    rows = normalise_keys(frame.drop(columns=[label], errors="ignore").reset_index(drop=True), left)
    for col in left:  # keys sent as JSON (the inference log): ISO text for a time, a number as sent
        want = labels.frame[col].dtype if col in labels.frame.columns else None
        if isinstance(want, pd.DatetimeTZDtype) and not isinstance(rows[col].dtype, pd.DatetimeTZDtype):
            times = pd.to_datetime(rows[col], utc=True, errors="coerce", format="ISO8601")
            rows[col] = times.astype("datetime64[ns, UTC]")
        elif want is not None and pd.api.types.is_numeric_dtype(want) and not pd.api.types.is_numeric_dtype(rows[col]):
            rows[col] = pd.to_numeric(rows[col], errors="coerce")
    if labels.frame.empty:
        rows[label] = label_column(cfg, pd.DataFrame(index=rows.index), empty=True)
        return rows
    try:
        joined = rows.merge(labels.frame[[*left, label]], on=left, how="left", validate="many_to_one")
    except (ValueError, TypeError) as exc:  # e.g. key dtypes that do not compare
        raise ValueError(f"cannot join labels on {', '.join(left)}: {exc}") from exc
    return joined
