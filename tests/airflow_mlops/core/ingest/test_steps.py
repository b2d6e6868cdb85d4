"""Ingest steps on real 2013 days and on the bad corpus: quarantine, clear errors, idempotent reruns."""

from __future__ import annotations

import pytest

from airflow_mlops.core.ingest.steps import (
    BatchRejected,
    build_feature_partition,
    build_label_partition,
    ingest_source,
    landing_uri,
    validate_source,
)
from airflow_mlops.core.lake import paths
from airflow_mlops.core.lake.hashing import frame_hash
from tests.fixtures.bad_corpus import BAD_CASES, EXPECTED

PREV, DS = "2013-01-01", "2013-01-02"


def run_day(lake, cfg, ds):
    for source in cfg.sources:
        ingest_source(lake, cfg, source, ds)
        validate_source(lake, cfg, source, ds)
    build_label_partition(lake, cfg, ds)
    return build_feature_partition(lake, cfg, ds)


def test_real_day_end_to_end_and_rerun_is_identical(fed_lake, flights_cfg) -> None:
    lake = fed_lake([DS])
    first = run_day(lake, flights_cfg, DS)
    files_before = lake.list(lake.uri("raw")) + lake.list(lake.uri("features")) + lake.list(lake.uri("labels"))
    df = lake.read_parquet(first.uri)
    assert first.rows == len(df) > 500
    assert frame_hash(df) == first.content_hash
    assert df["ds"].unique().tolist() == [DS]
    assert df["temp"].notna().mean() > 0.9  # weather really joined
    assert df["delayed"].isna().all()  # the outcomes of the day land the next day
    labels = lake.read_parquet(lake.uri(paths.labels(flights_cfg.name, DS)))  # those of the day before
    assert len(labels) > 500 and set(labels["time_hour"].dt.tz_convert("America/New_York").dt.date.astype(str)) == {
        PREV
    }
    assert lake.exists(lake.uri(paths.validation_report(flights_cfg.name, "flights", DS)))

    second = run_day(lake, flights_cfg, DS)
    assert second == first
    assert lake.list(lake.uri("raw")) + lake.list(lake.uri("features")) + lake.list(lake.uri("labels")) == files_before
    assert lake.list(lake.uri("quarantine")) == []


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_batch_is_quarantined_and_named(case, fed_lake, flights_cfg) -> None:
    lake = fed_lake([PREV, DS])
    cfg = flights_cfg
    prev = run_day(lake, cfg, PREV)
    run_day(lake, cfg, DS)  # a good version of the day existed before the bad batch landed
    landing = landing_uri(lake, cfg, "flights", DS)
    good = lake.read_bytes(landing)
    lake.write_bytes(landing, BAD_CASES[case](good))
    stage, needles = EXPECTED[case]

    with pytest.raises(BatchRejected) as err:
        ingest_source(lake, cfg, "flights", DS)
        assert stage == "validate", f"{case} should have been rejected at ingest"
        validate_source(lake, cfg, "flights", DS)
    message = str(err.value)
    for part in needles:
        assert part in message
    assert "flights" in message and "quarantine" in message

    quarantined = [u.rsplit("/", 1)[-1] for u in lake.list(lake.uri(paths.quarantine(cfg.name, "flights", DS)))]
    assert "report.html" in quarantined
    assert ("error.json" in quarantined) if stage == "ingest" else ("validation.json" in quarantined)
    assert len(quarantined) == 3  # the batch itself, the result, the report: nothing lost
    # nothing downstream may use the day any more ...
    assert not lake.exists(lake.uri(paths.features(cfg.name, DS)))
    assert not lake.exists(lake.uri(paths.raw(cfg.name, "flights", DS)))
    with pytest.raises(Exception, match="cannot read"):
        build_feature_partition(lake, cfg, DS)
    # ... while the good day next to it is untouched
    assert frame_hash(lake.read_parquet(prev.uri)) == prev.content_hash
