"""A task SIGKILLed in the middle of each lake write (raw, features, predictions, quarantine), on a local lake and
on S3 (moto server): no partial partition that a later step reads as complete, and the retry succeeds.

The step runs in a child process (tests/fixtures/killable.py) stopped inside the write, then killed with
SIGKILL, so no cleanup code of the step runs. The retry is the same step, run again here.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_mlops import settings
from airflow_mlops.config import PipelineConfig, load_pipeline
from airflow_mlops.core.ingest.steps import BatchRejected, build_feature_partition, ingest_source, validate_source
from airflow_mlops.core.lake import paths
from airflow_mlops.core.lake.storage import TMP_PREFIX, Lake, StorageError, open_lake
from tests.fixtures.bad_corpus import BAD_CASES, EXPECTED
from tests.fixtures.killable import Stopped

pytestmark = [pytest.mark.slow]

PIPELINE, DS, SOURCE = "flight_delays", "2013-01-02", "flights"
CONFIG = settings.include_dir() / "pipelines" / f"{PIPELINE}.yaml"
VALIDATION_FAILURE = next(case for case, (stage, _) in sorted(EXPECTED.items()) if stage == "validate")


@pytest.fixture(params=["local", "s3"])
def lake(request: pytest.FixtureRequest, fed_lake, flights_cfg: PipelineConfig) -> Iterator[tuple[Lake, Any]]:
    """The landing files of DS (real 2013 flights), with DS copied to raw and its features built once already
    (the validation step is left out: it does not change what is written): (lake, S3 client kwargs)."""
    local = fed_lake([DS])
    if request.param == "local":
        target, s3 = local, None
    else:
        root, s3 = request.getfixturevalue("s3_lake_root")
        target = open_lake(root, s3)
        for uri in local.list(local.uri("landing")):
            target.write_bytes(target.uri(uri[len(local.root) + 1 :]), local.read_bytes(uri))
    for source in flights_cfg.sources:
        ingest_source(target, flights_cfg, source, DS)
    build_feature_partition(target, flights_cfg, DS)
    yield target, s3


def stop_in(lake: Lake, s3: Any, tmp_path: Path, step: str, stop_at: str, nth: int = 1, **extra: str) -> Stopped:
    spec = {"step": step, "root": lake.root, "s3": s3, "config": str(CONFIG), "source": SOURCE, "ds": DS,
            "stop_at": stop_at, "nth": nth, **extra}  # fmt: skip
    return Stopped(spec, tmp_path)


def no_temporary_files(lake: Lake) -> bool:
    root = Path(lake.root)
    return not root.exists() or not [p for p in root.rglob(f"{TMP_PREFIX}*")]


def test_raw(lake, tmp_path: Path, flights_cfg: PipelineConfig) -> None:
    lake, s3 = lake
    uri = lake.uri(paths.raw(PIPELINE, SOURCE, DS))
    lake.delete(lake.uri(paths.raw_partition(PIPELINE, SOURCE, DS)))  # a first ingest of the day
    stop_in(lake, s3, tmp_path, "ingest", f"{SOURCE}.parquet").kill()

    assert not lake.exists(uri) and DS not in lake.partitions("raw", PIPELINE, SOURCE)
    with pytest.raises(StorageError, match="cannot read"):
        validate_source(lake, flights_cfg, SOURCE, DS)  # the next step finds nothing, not half a file

    result = ingest_source(lake, flights_cfg, SOURCE, DS)  # the retry
    assert lake.read_parquet(uri).shape[0] == result.rows > 500
    assert lake.list(lake.uri(paths.raw_partition(PIPELINE, SOURCE, DS))) == [uri]
    assert no_temporary_files(lake)
    assert validate_source(lake, flights_cfg, SOURCE, DS)["success"]


def test_features(lake, tmp_path: Path, flights_cfg: PipelineConfig) -> None:
    lake, s3 = lake
    uri = lake.uri(paths.features(PIPELINE, DS))
    before = lake.read_bytes(uri)  # an earlier run's partition: the kill must leave it whole, or nothing
    stop_in(lake, s3, tmp_path, "features", "features.parquet").kill()

    assert lake.read_bytes(uri) == before
    lake.delete(lake.uri(paths.features_partition(PIPELINE, DS)))
    stop_in(lake, s3, tmp_path, "features", "features.parquet").kill()
    assert not lake.exists(uri) and DS not in lake.partitions("features", PIPELINE, "")

    result = build_feature_partition(lake, flights_cfg, DS)  # the retry
    assert lake.read_bytes(uri) == before and result.rows > 500
    assert lake.list(lake.uri(paths.features_partition(PIPELINE, DS))) == [uri]
    assert no_temporary_files(lake)


def test_quarantine(lake, tmp_path: Path, flights_cfg: PipelineConfig) -> None:
    """Killed after the first quarantine file of a rejected batch: the date's features are gone, the quarantine
    has no reason file (it is not complete), the raw input is still there, and the retry completes it all."""
    lake, s3 = lake
    quarantine = lake.uri(paths.quarantine(PIPELINE, SOURCE, DS))
    # An earlier rejection of the day left a complete quarantine: the new one must not be mistaken for it.
    lake.replace_partition(quarantine, {"old.csv": b"old", "report.html": b"old", "validation.json": b"{}"})
    landing = lake.uri(paths.landing(PIPELINE, flights_cfg.sources[SOURCE].landing_path(DS)))
    lake.write_bytes(landing, BAD_CASES[VALIDATION_FAILURE](lake.read_bytes(landing)))
    ingest_source(lake, flights_cfg, SOURCE, DS)  # reads as CSV; the suite rejects it
    raw = lake.uri(paths.raw(PIPELINE, SOURCE, DS))
    stop_in(lake, s3, tmp_path, "validate", "quarantine/", nth=2).kill()

    names = {u.rsplit("/", 1)[-1] for u in lake.list(quarantine)}
    assert "validation.json" not in names, names  # no reason file: an incomplete quarantine, not the old one
    assert not lake.exists(lake.uri(paths.features(PIPELINE, DS)))  # nothing downstream reads the date
    assert lake.exists(raw)  # the retry's input

    with pytest.raises(BatchRejected):
        validate_source(lake, flights_cfg, SOURCE, DS)  # the retry
    names = {u.rsplit("/", 1)[-1] for u in lake.list(quarantine)}
    assert names == {f"{SOURCE}.parquet", "report.html", "validation.json"}
    assert json.loads(lake.read_text(f"{quarantine}/validation.json"))["success"] is False
    assert not lake.exists(raw) and not lake.exists(lake.uri(paths.features(PIPELINE, DS)))
    assert no_temporary_files(lake)


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh MLflow server whose flight_delays model has a champion fitted on 20 synthetic days."""
    from airflow_mlops.config.train import TrainConfig
    from airflow_mlops.core.registry.tracking import CHAMPION, Tracking
    from airflow_mlops.core.train import training as tr
    from tests.fixtures.mlflow_server import MlflowServer
    from tests.fixtures.training_data import day_range, synthetic_features, write_partitions

    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    server.start()
    try:
        cfg = load_pipeline(CONFIG)
        lake = open_lake(str(tmp_path_factory.mktemp("train-lake")))
        write_partitions(lake, cfg, synthetic_features(cfg, day_range("2013-03-01", 20), rows_per_day=200, seed=7))
        train = TrainConfig.model_validate(
            {"window_days": 20, "validation_days": 3, "holdout_days": 4, "min_rows": 100,
             "model": {"params": {"max_iter": 15}}}
        )  # fmt: skip
        data = tr.load_window(lake, cfg, "2013-03-20", train.window_days, min_rows=train.min_rows)
        split = tr.split_by_time(data.frame, train.validation_days, train.holdout_days)
        spec = tr.feature_spec(cfg, data.frame)
        fitted = tr.fit(split, train, spec)
        tracking = Tracking(server.uri)
        run = tracking.client.create_run(tracking.get_or_create_experiment(f"kill-{uuid.uuid4().hex[:6]}"))
        logged = tracking.log_model(run.info.run_id, fitted.model, spec, split.holdout)
        name = cfg.train.model_name(cfg.name)
        tracking.client.create_registered_model(name)
        mv = tracking.client.create_model_version(
            name, source=logged.model_uri, run_id=run.info.run_id, model_id=logged.model_id
        )
        tracking.client.set_registered_model_alias(name, CHAMPION, mv.version)
        yield server.uri
    finally:
        server.stop()


def test_predictions(lake, tmp_path: Path, champion: str) -> None:
    from airflow_mlops.core.registry.tracking import Tracking
    from airflow_mlops.core.score import score_partition

    lake, s3 = lake
    cfg = load_pipeline(CONFIG)
    uri = lake.uri(paths.predictions(PIPELINE, DS))
    stop_in(lake, s3, tmp_path, "score", "predictions.parquet", tracking_uri=champion).kill()

    assert not lake.exists(uri) and DS not in lake.partitions("predictions", PIPELINE, "")
    result = score_partition(lake, cfg, Tracking(champion), DS)  # the retry
    preds = lake.read_parquet(uri)
    assert len(preds) == result["rows"] == len(lake.read_parquet(lake.uri(paths.features(PIPELINE, DS))))
    assert lake.list(lake.uri("predictions", PIPELINE)) == [uri]
    assert no_temporary_files(lake)
