"""Replay of a dated table (CSV or Parquet shipped in an installed package) as one landing CSV per day."""

from __future__ import annotations

import functools
import importlib.util
import io
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_mlops.config.replay import ReplayConfig


class DemoDataError(ValueError):
    """The demo data cannot serve a request; the message names the date, table or source."""


def parse_day(ds: str) -> date:
    """The date of `ds`, which must be written YYYY-MM-DD, else DemoDataError."""
    try:
        day = date.fromisoformat(ds)
    except (TypeError, ValueError) as exc:
        raise DemoDataError(f"invalid date {ds!r}: use YYYY-MM-DD") from exc
    if len(ds) != 10:
        raise DemoDataError(f"invalid date {ds!r}: use YYYY-MM-DD")
    return day


def package_folder(package: str) -> Path:
    """Folder of an installed top-level package, found without importing it (no code of it runs)."""
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise DemoDataError(f"the package {package} is not installed")
    return Path(locations[0])


def table_path(replay: ReplayConfig) -> Path:
    """The table file a replay names: a file inside its package folder (links included)."""
    folder = package_folder(replay.package).resolve()
    path = (folder / replay.file).resolve()
    if not path.is_relative_to(folder):
        raise DemoDataError(f"replay table {replay.file!r} resolves to {path}, outside the package folder {folder}")
    if not path.is_file():
        raise DemoDataError(f"replay table {replay.file!r}: file {path} is missing")
    return path


def split_lines(raw: bytes, days: Sequence[str], what: str) -> tuple[bytes, dict[str, bytes]]:
    """Header line and, per day, the CSV lines of that day's rows in file order; `days[i]` is row i's day."""
    import pandas as pd

    header, _, body = raw.partition(b"\n")
    lines = body.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    # Lines map one-to-one to rows only if no quoted field spans lines; check rather than assume.
    if len(days) != len(lines):
        raise DemoDataError(f"{what}: {len(lines)} lines but {len(days)} rows; cannot split by day")
    by_day: dict[str, bytes] = {}
    # groupby().indices keeps the file order of the rows within each day.
    for ds, positions in pd.Series(list(days)).groupby(list(days), sort=True).indices.items():
        by_day[str(ds)] = b"\n".join([lines[i] for i in positions]) + b"\n"
    return header + b"\n", by_day


@functools.cache
def _split(path: Path, time_column: str, timezone: str) -> tuple[bytes, dict[str, bytes]]:
    import pandas as pd

    what = f"replay table {path.name}"
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
        raw = frame.to_csv(index=False, lineterminator="\n").encode()
    else:
        raw = path.read_bytes()
        try:
            frame = pd.read_csv(io.BytesIO(raw), usecols=[time_column])
        except ValueError as exc:  # pandas: the column is not in the header
            raise DemoDataError(f"{what}: {exc}") from None
    if time_column not in frame.columns:
        raise DemoDataError(f"{what} has no column {time_column!r} (columns: {', '.join(map(str, frame.columns))})")
    times = pd.to_datetime(frame[time_column], utc=True, errors="coerce", format="ISO8601")
    if times.isna().any():
        row = int(times.isna().to_numpy().argmax())
        raise DemoDataError(f"{what}: row {row + 1} has no readable time in {time_column!r}")
    days = times.dt.tz_convert(timezone).dt.strftime("%Y-%m-%d").tolist()
    return split_lines(raw, days, what)


def covered_days(replay: ReplayConfig) -> tuple[str, str]:
    """First and last day that have rows in the table."""
    _, by_day = _split(table_path(replay), replay.time_column, replay.timezone)
    if not by_day:
        raise DemoDataError(f"replay table {replay.file!r} has no rows")
    return min(by_day), max(by_day)


def check_day(replay: ReplayConfig, ds: str) -> None:
    """DemoDataError unless `ds` is a date within the days the table covers."""
    parse_day(ds)
    first, last = covered_days(replay)
    if not first <= ds <= last:
        raise DemoDataError(f"no demo data for {ds}: {replay.package}/{replay.file} covers {first} to {last} only")


def day_csv(replay: ReplayConfig, ds: str) -> bytes:
    """The rows of one day as CSV bytes: a CSV table's own lines, in its order; the header alone for a day
    without rows inside the covered range."""
    check_day(replay, ds)
    header, by_day = _split(table_path(replay), replay.time_column, replay.timezone)
    return header + by_day.get(ds, b"")
