"""Tests of the demo's lake summary."""

from __future__ import annotations

from pathlib import Path

from airflow_mlops.stack.demo import lake_partitions, partition_dates
from tests.airflow_mlops.stack.helpers import make_cfg


def test_partition_dates_groups_by_dataset() -> None:
    paths = [
        "/flights/date=2013-01-02/flights.parquet",
        "/flights/date=2013-01-01/flights.parquet",
        "/flights/date=2013-01-01/_SUCCESS",
        "/date=2013-01-01/features.parquet",
        "/validation/weather/date=2013-01-03/report.html",
        "/notes.txt",
        "/flights/date=2013-1-1/x",
    ]
    assert partition_dates(paths) == {
        "": ["2013-01-01"],
        "flights": ["2013-01-01", "2013-01-02"],
        "validation/weather": ["2013-01-03"],
    }


def test_lake_partitions_reads_a_local_lake(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, MLOPS_LAKE_ROOT=str(tmp_path / "lake"))
    part = tmp_path / "lake" / "raw" / "p" / "flights" / "date=2013-01-05"
    part.mkdir(parents=True)
    (part / "flights.parquet").write_bytes(b"x")
    assert lake_partitions(cfg, "raw", "p") == {"flights": ["2013-01-05"]}
    assert lake_partitions(cfg, "features", "p") == {}
