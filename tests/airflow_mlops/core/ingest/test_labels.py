"""Labels that arrive later: the outcomes feed of real 2013 days, joined by key to the rows it labels."""

from __future__ import annotations

import pandas as pd
import pytest

from airflow_mlops.core.ingest.labels import LANDED, LabelSet, attach_labels, build_labels, read_labels
from airflow_mlops.core.ingest.steps import ingest_day, raw_uri
from airflow_mlops.core.lake import paths
from airflow_mlops.core.train.window import TrainingDataError, load_window

D1, D2, D3, D4 = "2013-01-02", "2013-01-03", "2013-01-04", "2013-01-05"


def expected_labels(lake, cfg, ds: str) -> pd.Series:
    """`arr_delay > 15` of the day's own flights file, by flight key and hour: what the label must say."""
    flights = lake.read_parquet(raw_uri(lake, cfg, "flights", ds))
    flights = flights[flights["arr_delay"].notna()]
    index = pd.MultiIndex.from_frame(
        flights[["carrier", "flight", "origin"]].astype(str).assign(t=flights["time_hour"].astype(str))
    )
    return pd.Series((flights["arr_delay"] > 15).to_numpy(), index=index)


def test_outcomes_land_a_day_late_and_label_the_rows_of_their_key(fed_lake, flights_cfg) -> None:
    cfg = flights_cfg
    lake = fed_lake([D1, D2])
    ingest_day(lake, cfg, D1)
    ingest_day(lake, cfg, D2)
    features = lake.read_parquet(lake.uri(paths.features(cfg.name, D1)))
    assert features["delayed"].isna().all()  # the departures know nothing of the arrivals

    landed = lake.read_parquet(lake.uri(paths.labels(cfg.name, D2)))  # D1's outcomes, landed on D2
    want = expected_labels(lake, cfg, D1)
    assert len(landed) == len(want) > 500  # cancelled flights (no arr_delay) give no label
    labels = read_labels(lake, cfg, D1, D2)
    assert sorted(labels.partitions) == [D1, D2]  # D1's landing: the flights of the day before
    joined = attach_labels(features, labels, cfg)
    assert len(joined) == len(features) and joined["ds"].tolist() == features["ds"].tolist()
    got = joined[joined["delayed"].notna()]
    key = pd.MultiIndex.from_frame(
        got[["carrier", "flight", "origin"]].astype(str).assign(t=got["time_hour"].astype(str))
    )
    assert len(got) == len(want)
    assert got["delayed"].astype(bool).tolist() == want.reindex(key).tolist()
    # a rerun of the day writes the same labels
    before = lake.read_bytes(lake.uri(paths.labels(cfg.name, D2)))
    ingest_day(lake, cfg, D2)
    assert lake.read_bytes(lake.uri(paths.labels(cfg.name, D2))) == before


def test_training_window_uses_only_labels_landed_by_its_end(fed_lake, flights_cfg) -> None:
    cfg = flights_cfg
    lake = fed_lake([D1, D2, D3, D4])
    for ds in (D1, D2, D3):
        ingest_day(lake, cfg, ds)
    data = load_window(lake, cfg, D3, 3)
    assert sorted(data.frame["ds"].unique()) == [D1, D2]  # D3's outcomes land on D4
    assert data.summary.partitions == [D1, D2, D3]
    assert sorted(data.summary.label_partitions) == [D1, D2, D3]
    assert data.summary.rows_labelled == len(expected_labels(lake, cfg, D1)) + len(expected_labels(lake, cfg, D2))

    ingest_day(lake, cfg, D4)  # D3's labels land: a rerun of the D3 training must not see them
    again = load_window(lake, cfg, D3, 3)
    assert again.content_hash == data.content_hash and again.summary == data.summary
    later = load_window(lake, cfg, D4, 4)
    assert sorted(later.frame["ds"].unique()) == [D1, D2, D3]

    # the labels are part of what the model was trained on: a restated outcome changes the hash
    uri = lake.uri(paths.labels(cfg.name, D2))
    restated = lake.read_parquet(uri)
    restated.loc[0, "delayed"] = not bool(restated.loc[0, "delayed"])
    lake.write_parquet(uri, restated)
    assert load_window(lake, cfg, D3, 3).content_hash != data.content_hash

    with pytest.raises(TrainingDataError, match=r"0 labelled row\(s\) in 1 partition\(s\) with 1 label landing"):
        load_window(lake, cfg, D1, 1)


def test_a_later_landing_restates_an_outcome_and_unknown_ones_are_left_out(flights_cfg) -> None:
    cfg = flights_cfg
    t = pd.Timestamp("2013-01-02 10:00", tz="UTC")
    source = pd.DataFrame(
        {
            "carrier": pd.array(["AA", "AA", "B6", "UA"], dtype="string"),
            "flight": [1, 1, 2, 3],
            "origin": pd.array(["JFK", "JFK", "EWR", "LGA"], dtype="string"),
            "time_hour": [t, t, t, t],
            "arr_delay": [5.0, 30.0, float("nan"), 16.0],
        }
    )
    labels = build_labels(cfg, source)
    # the repeated key keeps its last statement; a cancelled flight (no arr_delay) has no label
    assert labels[["carrier", "delayed"]].astype(str).values.tolist() == [["AA", "True"], ["UA", "True"]]
    assert str(labels["delayed"].dtype) == "boolean"

    rows = source.iloc[[3, 2, 0]][["carrier", "flight", "origin", "time_hour"]].reset_index(drop=True)
    rows["time_hour"] = rows["time_hour"].astype("datetime64[us, UTC]")  # as a Parquet round trip may give
    first = LabelSet(labels.assign(**{LANDED: "2013-01-03"}))
    assert attach_labels(rows, first, cfg)["delayed"].tolist() == [True, pd.NA, True]
