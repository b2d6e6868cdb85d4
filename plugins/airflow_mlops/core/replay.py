"""Replay of a dated table (CSV or Parquet shipped in an installed package) as one landing CSV per day."""

from __future__ import annotations

import functools
import importlib.util
import io
from collections.abc import Sequence
from datetime import date, timedelta
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
        raw = _csv_bytes(path, what)
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


def _csv_bytes(path: Path, what: str) -> bytes:
    """A CSV table's bytes; a `.csv.zip` holds it as its one member named like the zip without `.zip`."""
    if path.suffix != ".zip":
        return path.read_bytes()
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            return zf.read(path.stem)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise DemoDataError(f"{what}: not a zip holding {path.stem}: {exc}") from None


def covered_days(replay: ReplayConfig) -> tuple[str, str]:
    """First and last day that have rows in the table."""
    _, by_day = _split(table_path(replay), replay.time_column, replay.timezone)
    if not by_day:
        raise DemoDataError(f"replay table {replay.file!r} has no rows")
    return min(by_day), max(by_day)


def check_day(replay: ReplayConfig, ds: str) -> None:
    """DemoDataError unless `ds` is a landing day of the table: from its first day to its last plus `lag_days`."""
    day = parse_day(ds)
    first, last = covered_days(replay)
    last_landing = (date.fromisoformat(last) + timedelta(days=replay.lag_days)).isoformat()
    if not first <= ds <= last_landing:
        lag = f" landing {replay.lag_days} day(s) late" if replay.lag_days else ""
        raise DemoDataError(
            f"no demo data for {day.isoformat()}: {replay.package}/{replay.file}{lag} covers {first} to "
            f"{last_landing} only"
        )


def day_csv(replay: ReplayConfig, ds: str) -> bytes:
    """The rows that land on one day as CSV bytes: those of the day `lag_days` before, a CSV table's own lines in
    its order (only `columns`, when given); the header alone for a day without rows inside the covered range."""
    check_day(replay, ds)
    header, by_day = _split(table_path(replay), replay.time_column, replay.timezone)
    source_day = (date.fromisoformat(ds) - timedelta(days=replay.lag_days)).isoformat()
    data = header + by_day.get(source_day, b"")
    return data if replay.columns is None else select_columns(data, replay.columns, f"replay table {replay.file}")


def select_columns(data: bytes, columns: Sequence[str], what: str) -> bytes:
    """CSV bytes with only `columns`, in that order (values as the file writes them, quoted only where needed)."""
    import csv

    reader = csv.reader(io.StringIO(data.decode("utf-8"), newline=""))
    header = next(reader, [])
    missing = [c for c in columns if c not in header]
    if missing:
        raise DemoDataError(f"{what} has no column(s) {', '.join(missing)} (columns: {', '.join(header)})")
    at = [header.index(c) for c in columns]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([row[i] for i in at] for row in reader)
    return out.getvalue().encode("utf-8")
