"""The train step against a real MLflow server: the reference sample it records for the monitor."""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import yaml

from airflow_mlops.config import PipelineConfig, parse_pipeline
from airflow_mlops.core.lake.storage import open_lake
from airflow_mlops.core.monitor.monitor import reference_sample
from airflow_mlops.core.registry.tracking import RunTags, Tracking
from airflow_mlops.core.train import training as tr
from airflow_mlops.core.train.steps import load, train_step
from tests.fixtures.training_data import FLIGHTS_YAML, day_range, synthetic_features, write_partitions

END = "2013-03-20"


def small_config(reference_rows: int) -> PipelineConfig:
    data = yaml.safe_load(FLIGHTS_YAML.read_text(encoding="utf-8"))
    data["train"].update(
        window_days=20,
        validation_days=3,
        holdout_days=4,
        min_rows=100,
        search=None,
        registered_model_name=f"reference_{uuid.uuid4().hex[:8]}",
        model={**data["train"]["model"], "params": {"max_iter": 15}},
    )
    data["monitor"]["reference_rows"] = reference_rows
    return parse_pipeline(yaml.safe_dump(data), str(FLIGHTS_YAML))


def test_train_step_records_a_seeded_reference_sample_of_the_training_days(mlflow_server: str, tmp_path) -> None:
    cfg = small_config(reference_rows=500)
    lake = open_lake(str(tmp_path / "lake"))
    write_partitions(lake, cfg, synthetic_features(cfg, day_range("2013-03-01", 20), rows_per_day=200, seed=7))
    tracking = Tracking(mlflow_server)
    tags = RunTags(f"{cfg.name}__train", f"manual__{uuid.uuid4().hex}", END, "train")
    trained = train_step(lake, cfg, tracking, tags, END, 20, "reference test")

    reference = tracking.load_reference(trained["mlflow_run_id"])
    assert reference is not None and len(reference) == trained["reference_rows"] == 500
    window = load(lake, cfg, END, 20)
    spec = window.spec
    expected = ["ds", *cfg.features.key, cfg.features.timestamp, *spec.columns, spec.label, "prediction"]
    assert list(reference.columns) == list(dict.fromkeys(expected))
    # train and validation days only: the holdout the model is judged on is not what it learnt from
    assert set(reference["ds"]) <= set(window.split.train_days + window.split.validation_days)
    assert reference["ds"].nunique() == 16 and reference["ds"].is_monotonic_increasing
    model = tracking.load_model(trained["model_uri"])
    np.testing.assert_allclose(reference["prediction"], tr.positive_scores(model, reference[spec.columns]))

    # The same window and seed give the same sample; another seed another one.
    again = reference_sample(window.split, cfg, spec, model)
    pd.testing.assert_frame_equal(again, reference)
    other_seed = cfg.model_copy(update={"train": cfg.train.model_copy(update={"seed": 1})})
    assert not reference_sample(window.split, other_seed, spec, model)["flight"].equals(reference["flight"])

    # Fewer rows than reference_rows: all of them.
    everything = reference_sample(window.split, small_config(reference_rows=100_000), spec, model)
    assert len(everything) == len(window.split.train) + len(window.split.validation)
