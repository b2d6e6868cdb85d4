"""Model files: every option of the project's own model pipeline saves with the project's allow-list alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import skops.io

from airflow_mlops.config.train import ModelConfig
from airflow_mlops.core.registry.models import check_trusted
from airflow_mlops.core.train import training as tr
from tests.fixtures.training_data import day_range, flight_config, synthetic_features


@pytest.mark.parametrize(
    "model",
    [
        {},
        {"numeric_impute": "median"},
        {"numeric_impute": "mean", "scale_numeric": True},
        {"estimator": "sklearn.linear_model.LogisticRegression", "categorical": "onehot", "numeric_impute": "median"},
        {"estimator": "sklearn.linear_model.LogisticRegression", "categorical": "ordinal", "numeric_impute": "mean"},
    ],
)
def test_the_projects_own_pipeline_options_need_no_extra_trusted_type(model: dict, tmp_path: Path) -> None:
    cfg = flight_config()
    frame = synthetic_features(cfg, day_range("2013-03-01", 2), rows_per_day=100).dropna(subset=["delayed"])
    spec = tr.feature_spec(cfg, frame)
    pipeline = tr.build_estimator(ModelConfig.model_validate(model), spec.columns, spec.categorical, seed=0)
    pipeline.fit(frame[spec.columns], frame["delayed"].astype(int))
    path = tmp_path / "model.skops"
    skops.io.dump(pipeline, path)
    check_trusted(path)  # raises UnsafeModelError naming any type outside the allow-list
