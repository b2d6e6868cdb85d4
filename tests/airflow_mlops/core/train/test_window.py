"""The training window on feature-store partitions: range, labels, content hash, errors and the time split."""

from __future__ import annotations

import numpy as np
import pytest

from airflow_mlops.config import PipelineConfig
from airflow_mlops.core.lake.hashing import frame_hash
from airflow_mlops.core.lake.storage import Lake
from airflow_mlops.core.train import training as tr
from tests.fixtures.training_data import day_range, flight_config, synthetic_features, write_partitions

# Window ----------------------------------------------------------------------------------------------------


def test_window_reads_existing_partitions_in_range_and_drops_unknown_labels(cfg: PipelineConfig, lake: Lake) -> None:
    features = synthetic_features(cfg, day_range("2013-02-25", 10), rows_per_day=50, seed=2)
    written = write_partitions(lake, cfg, features[features["ds"] != "2013-03-01"])  # a missing day
    data = tr.load_window(lake, cfg, "2013-03-04", 7)
    assert data.summary.window_start == "2013-02-26" and data.summary.window_end == "2013-03-04"
    expected_days = [d for d in written if "2013-02-26" <= d <= "2013-03-04"]
    assert data.partitions == expected_days and "2013-03-01" not in data.partitions
    in_window = features[features["ds"].isin(expected_days)]
    assert data.summary.rows_read == len(in_window)
    assert len(data.frame) == int(in_window["delayed"].notna().sum()) == data.summary.rows_labelled
    assert data.frame["delayed"].dtype == "int8" and set(data.frame["delayed"].unique()) <= {0, 1}
    assert sorted(data.frame["ds"].unique()) == expected_days
    assert data.summary.partition_uris == [
        lake.partition_uri("features", cfg.name, "", d, "features.parquet") for d in expected_days
    ]


def test_content_hash_is_over_partition_contents_and_order_stable(lake: Lake) -> None:
    cfg = flight_config(label_source=False)  # the hash of labels landing later: tests/.../ingest/test_labels.py
    features = synthetic_features(cfg, day_range("2013-03-01", 4), rows_per_day=40, seed=3)
    write_partitions(lake, cfg, features)
    first = tr.load_window(lake, cfg, "2013-03-04", 4).summary
    part = features[features["ds"] == "2013-03-02"].reset_index(drop=True)
    assert first.partition_hashes["2013-03-02"] == frame_hash(part)
    assert first.content_hash == tr.content_hash(dict(reversed(list(first.partition_hashes.items()))))
    # Rewriting the same rows gives the same hash; changing one value changes it.
    write_partitions(lake, cfg, features)
    assert tr.load_window(lake, cfg, "2013-03-04", 4).summary.content_hash == first.content_hash
    changed = part.copy()
    changed.loc[0, "temp"] = 123.0
    lake.write_parquet(lake.partition_uri("features", cfg.name, "", "2013-03-02", "features.parquet"), changed)
    again = tr.load_window(lake, cfg, "2013-03-04", 4).summary
    assert again.content_hash != first.content_hash
    assert {d for d in again.partition_hashes if again.partition_hashes[d] != first.partition_hashes[d]} == {
        "2013-03-02"
    }


def test_window_errors_name_the_problem(cfg: PipelineConfig, lake: Lake) -> None:
    with pytest.raises(
        tr.TrainingDataError, match=r"window 2013-03-01..2013-03-04 has 0 feature partition\(s\), at least 1"
    ):
        tr.load_window(lake, cfg, "2013-03-04", 4)
    features = synthetic_features(cfg, day_range("2013-03-01", 2), rows_per_day=30, seed=4)
    write_partitions(lake, cfg, features)
    with pytest.raises(tr.TrainingDataError, match=r"has 2 feature partition\(s\), at least 3 needed"):
        tr.load_window(lake, cfg, "2013-03-04", 4, min_partitions=3)
    with pytest.raises(
        tr.TrainingDataError,
        match=r"labelled row\(s\) in 2 partition\(s\) with 2 label landing\(s\) by 2013-03-04; train.min_rows is 1000",
    ):
        tr.load_window(lake, cfg, "2013-03-04", 4, min_rows=1000)
    uri = lake.partition_uri("features", cfg.name, "", "2013-03-02", "features.parquet")
    lake.write_parquet(uri, features[features["ds"] == "2013-03-02"].drop(columns=["plane_age"]))
    with pytest.raises(tr.TrainingDataError, match=rf"{uri}: missing column\(s\) plane_age"):
        tr.load_window(lake, cfg, "2013-03-04", 4)


def test_label_must_be_boolean(cfg: PipelineConfig, lake: Lake) -> None:
    features = synthetic_features(cfg, ["2013-03-01"], rows_per_day=20, seed=5)
    features["delayed"] = np.arange(len(features)) % 3
    write_partitions(lake, cfg, features)
    with pytest.raises(tr.TrainingDataError, match="label column 'delayed' must be boolean"):
        tr.load_window(lake, cfg, "2013-03-01", 1)


def test_partition_ranges() -> None:
    days = ["2013-01-03", "2013-01-01", "2013-01-02", "2013-01-05", "2013-01-07", "2013-01-08"]
    assert tr.partition_ranges(days) == "2013-01-01..2013-01-03, 2013-01-05, 2013-01-07..2013-01-08"


# Split -----------------------------------------------------------------------------------------------------


def test_split_by_time_puts_latest_days_in_holdout(window: tr.TrainingData) -> None:
    split = tr.split_by_time(window.frame, validation_days=3, holdout_days=4)
    days = window.partitions
    assert split.holdout_days == days[-4:] and split.validation_days == days[-7:-4] and split.train_days == days[:-7]
    assert (
        split.train["ds"].max()
        < split.validation["ds"].min()
        <= split.validation["ds"].max()
        < split.holdout["ds"].min()
    )
    assert len(split.train) + len(split.validation) + len(split.holdout) == len(window.frame)
    assert split.summary()["holdout"] == {"start": days[-4], "end": days[-1], "days": 4, "rows": len(split.holdout)}


def test_split_without_validation_and_too_few_days(window: tr.TrainingData) -> None:
    split = tr.split_by_time(window.frame, validation_days=0, holdout_days=2)
    assert split.validation.empty and split.validation_days == []
    assert split.train["ds"].max() < split.holdout["ds"].min()
    with pytest.raises(
        tr.TrainingDataError, match=r"20 day\(s\) of data .* cannot give holdout_days=10, validation_days=10"
    ):
        tr.split_by_time(window.frame, validation_days=10, holdout_days=10)
