"""The inference log: requests and predictions buffered in memory (bounded) and written as Parquet files in batches."""

from __future__ import annotations

import io
import logging
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np
import pandas as pd

from airflow_mlops.core.lake.storage import Lake
from airflow_mlops.core.train import tasks

log = logging.getLogger("airflow_mlops.serving")

INFERENCE_ZONE = "inference_log"
UNWRITABLE = "unwritable"  # reasons rows are dropped, the `reason` label of the dropped-rows counter
BUFFER_FULL = "buffer_full"
_ERROR_LOG_SECONDS = 10.0  # a full buffer drops rows on every request: one error line per this interval


class Logged(Protocol):
    """What the log records of the model that predicted: its name, version and input columns."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def columns(self) -> tuple[str, ...]: ...


class InferenceLog:
    """Requests and predictions buffered in memory and written as Parquet files, in batches, atomically.

    At most `max_buffer_rows` rows wait in memory (e.g. while the lake is unreachable): rows beyond are
    dropped and counted, as are rows Parquet cannot hold (those are never retried, so they block nothing).
    """

    def __init__(self, lake: Lake, flush_rows: int, max_buffer_rows: int = 100_000) -> None:
        self.lake = lake
        self.flush_rows = flush_rows
        self.max_buffer_rows = max_buffer_rows
        self._buffer: dict[str, list[dict[str, Any]]] = {}
        self._rows = 0
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self.wanted = threading.Event()
        self.files_written = 0
        self.errors = 0
        self.rows_accepted: dict[str, int] = {}
        self.rows_written: dict[str, int] = {}
        self.dropped: dict[tuple[str, str], int] = {}  # (pipeline, reason) -> rows
        self.last_flush = time.time()
        self._last_error_log = 0.0

    @property
    def buffered(self) -> int:
        """Rows waiting in memory: what a crash (SIGKILL) now would lose."""
        return self._rows

    def add(self, pipeline: str, served: Logged, request_id: str, at: datetime,
            rows: Sequence[Mapping[str, Any]], scores: np.ndarray, classes: Sequence[Any] = (),
            keys: Sequence[Mapping[str, Any]] | None = None) -> None:  # fmt: skip
        """Buffer the rows with their `prediction`: a number per row (P(1) for binary, the value for regression),
        or, for (rows, classes) probabilities, the most probable of `classes` and one `proba.<class>` per class
        (the columns the batch predictions of core/train/tasks write); with `keys` (one per row), their columns
        too, where the row has no feature of that name (what was predicted on is what is logged)."""
        columns = served.columns
        records = [{c: row[c] for c in columns} for row in rows]  # new dicts in the model's column order
        for record, key in zip(records, keys or (), strict=False):
            for col, value in key.items():
                record.setdefault(col, value)
        stamp = pd.Timestamp(at)
        predictions = tasks.predicted_classes(scores, classes).tolist() if scores.ndim == 2 else scores.tolist()
        for i, (record, prediction) in enumerate(zip(records, predictions, strict=True)):
            record.update(
                {
                    "request_id": request_id,
                    "row": i,
                    "time": stamp,
                    "model_name": served.name,
                    "model_version": served.version,
                    tasks.PREDICTION: prediction,
                }
            )
        if scores.ndim == 2:
            names = [tasks.proba_column(c) for c in classes]
            for record, proba in zip(records, scores.tolist(), strict=True):
                record.update(zip(names, proba, strict=True))
        with self._lock:
            self.rows_accepted[pipeline] = self.rows_accepted.get(pipeline, 0) + len(records)
            self._keep(pipeline, records)
            if self._rows >= self.flush_rows:
                self.wanted.set()

    def _keep(self, pipeline: str, records: list[dict[str, Any]]) -> None:
        """Buffer what fits (call with the lock held); count and report the rest as dropped."""
        room = max(self.max_buffer_rows - self._rows, 0)
        if len(records) > room:
            self._drop(pipeline, BUFFER_FULL, len(records) - room, f"{self._rows} rows already wait for a write")
            records = records[:room]
        if records:
            self._buffer.setdefault(pipeline, []).extend(records)
            self._rows += len(records)

    def _drop(self, pipeline: str, reason: str, count: int, why: str) -> None:
        key = (pipeline, reason)
        self.dropped[key] = self.dropped.get(key, 0) + count
        if reason == BUFFER_FULL and time.monotonic() - self._last_error_log < _ERROR_LOG_SECONDS:
            return
        self._last_error_log = time.monotonic()
        log.error("inference log of %s: dropped %d row(s) (%s): %s; %d dropped so far for this reason", pipeline,
                  count, reason, why, self.dropped[key])  # fmt: skip

    def flush(self) -> list[str]:
        """Write the buffered rows: one file per pipeline and day. Rows of a failed write go back to the buffer
        (as far as it has room); rows Parquet cannot hold are dropped, the others of their batch written."""
        with self._flush_lock:
            with self._lock:
                taken, self._buffer, self._rows = self._buffer, {}, 0
                self.wanted.clear()
            written = []
            for pipeline, records in taken.items():
                frame = pd.DataFrame.from_records(records)
                # normalize, not strftime per row: that was a third of a flush, which holds the GIL.
                for day, part in frame.groupby(frame["time"].dt.normalize(), sort=True):
                    name = f"{datetime.now(UTC).strftime('%H%M%S%f')}-{uuid.uuid4().hex}.parquet"
                    date = pd.Timestamp(day).strftime("%Y-%m-%d")
                    uri = self.lake.partition_uri(INFERENCE_ZONE, pipeline, "", date, name)
                    data, rows = self._encode(pipeline, part.reset_index(drop=True))
                    if data is None:
                        continue
                    try:
                        self.lake.write_bytes(uri, data)
                    except Exception as exc:
                        self.errors += 1
                        log.error("inference log: cannot write %d row(s) to %s: %s", rows, uri, exc)
                        with self._lock:  # kept for the next flush, as far as the buffer has room
                            self._keep(pipeline, part.to_dict("records"))  # type: ignore[arg-type]
                        continue
                    self.files_written += 1
                    self.rows_written[pipeline] = self.rows_written.get(pipeline, 0) + rows
                    written.append(uri)
            self.last_flush = time.time()
            return written

    def _encode(self, pipeline: str, part: pd.DataFrame) -> tuple[bytes | None, int]:
        """The rows as Parquet bytes and how many; rows Parquet refuses are found by halving, dropped, counted."""
        try:
            return _parquet(part), len(part)
        except Exception as exc:  # pyarrow raises several unrelated types for unconvertible values
            first = exc
        good, bad = _split_writable(part)
        self._drop(pipeline, UNWRITABLE, bad, f"Parquet cannot hold them: {type(first).__name__}: {first}")
        if good.empty:
            return None, 0
        try:
            return _parquet(good), len(good)
        except Exception as exc:  # the rows write one by one but not together (e.g. mixed column types)
            self._drop(pipeline, UNWRITABLE, len(good), f"Parquet cannot hold them together: {exc}")
            return None, 0


def _parquet(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False, engine="pyarrow")
    return buf.getvalue()


def _split_writable(part: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The rows of `part` Parquet can hold, and how many it cannot; halving finds k bad rows in k log n tries."""
    keep: list[pd.DataFrame] = []
    bad = 0
    pending = [part]
    while pending:
        chunk = pending.pop()
        try:
            _parquet(chunk)
        except Exception:
            if len(chunk) == 1:
                bad += 1
            else:
                half = len(chunk) // 2
                pending += [chunk.iloc[half:], chunk.iloc[:half]]
            continue
        keep.append(chunk)
    return (pd.concat(keep, ignore_index=True) if keep else part.iloc[:0]), bad
