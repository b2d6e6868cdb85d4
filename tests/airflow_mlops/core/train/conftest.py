"""Fixtures of the training tests: the demo config, a lake, and a window of 20 synthetic days."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_mlops.config import PipelineConfig
from airflow_mlops.core.lake.storage import Lake, open_lake
from airflow_mlops.core.train import training as tr
from tests.fixtures.training_data import day_range, flight_config, synthetic_features, write_partitions


@pytest.fixture(scope="module")
def cfg() -> PipelineConfig:
    return flight_config()


@pytest.fixture()
def lake(tmp_path: Path) -> Lake:
    return open_lake(str(tmp_path / "lake"))


@pytest.fixture(scope="module")
def window(cfg: PipelineConfig, tmp_path_factory: pytest.TempPathFactory) -> tr.TrainingData:
    """20 days of synthetic features in a lake, loaded as a window."""
    lake = open_lake(str(tmp_path_factory.mktemp("window-lake")))
    write_partitions(lake, cfg, synthetic_features(cfg, day_range("2013-03-01", 20), rows_per_day=250, seed=1))
    return tr.load_window(lake, cfg, "2013-03-20", 20)
