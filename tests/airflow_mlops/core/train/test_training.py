"""The model: feature spec, the pipeline around the estimator, fit and search."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from airflow_mlops.config import PipelineConfig
from airflow_mlops.config.train import ModelConfig
from airflow_mlops.core.lake.storage import Lake
from airflow_mlops.core.train import evaluation as evals
from airflow_mlops.core.train import training as tr
from tests.fixtures.training_data import SMALL_MODEL, build_features, write_partitions
from tests.fixtures.training_data import small_train_config as train_cfg

# Model -----------------------------------------------------------------------------------------------------


def test_feature_spec_uses_declared_types(cfg: PipelineConfig, window: tr.TrainingData) -> None:
    spec = tr.feature_spec(cfg, window.frame)
    assert spec.categorical == ["carrier", "origin", "dest"]
    assert set(spec.numeric) == set(cfg.feature_columns) - {"carrier", "origin", "dest"}
    assert spec.label == "delayed"


def test_model_accepts_raw_rows_with_missing_values_and_unknown_categories(
    cfg: PipelineConfig, window: tr.TrainingData
) -> None:
    spec = tr.feature_spec(cfg, window.frame)
    model = tr.build_estimator(ModelConfig.model_validate(SMALL_MODEL), spec.columns, spec.categorical, seed=0)
    model.fit(window.frame[spec.columns], window.frame["delayed"])
    row = {c: 1.0 for c in spec.numeric}
    rows = pd.DataFrame(
        [
            {**row, "carrier": "B6", "origin": "JFK", "dest": "BOS"},
            {**row, "carrier": None, "origin": np.nan, "dest": "ZZZ", "temp": None},  # missing and unseen
            {**row, "carrier": pd.NA, "origin": "LGA", "dest": "ATL", "precip": np.nan, "extra": "ignored"},
        ]
    )
    proba = tr.positive_scores(model, rows)
    assert proba.shape == (3,) and np.all((proba > 0) & (proba < 1))
    # Same rows from the feature store (string dtype, nullable numbers) give the same scores.
    typed = rows.astype({"carrier": "string", "origin": "string", "dest": "string", "temp": "Float64"})
    assert np.allclose(tr.positive_scores(model, typed), proba)
    with pytest.raises(ValueError, match="model input lacks feature column\\(s\\): plane_age"):
        model.predict_proba(rows.drop(columns=["plane_age"]))


def test_onehot_linear_model_from_import_path(cfg: PipelineConfig, window: tr.TrainingData) -> None:
    spec = tr.feature_spec(cfg, window.frame)
    model_cfg = ModelConfig(
        estimator="sklearn.linear_model.LogisticRegression",
        params={"max_iter": 200},
        categorical="onehot",
        numeric_impute="median",
        scale_numeric=True,
    )
    model = tr.build_estimator(model_cfg, spec.columns, spec.categorical, seed=0)
    model.fit(window.frame[spec.columns], window.frame["delayed"])
    assert model.named_steps["model"].coef_.shape[1] > len(spec.columns)  # one-hot widened the categoricals
    assert roc_auc_score(window.frame["delayed"], tr.positive_scores(model, window.frame)) > 0.6


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"estimator": "sklearn.ensemble.NoSuchModel"}, "has no class 'NoSuchModel'"),
        ({"estimator": "nosuchpackage.Model", "allowed_modules": ["nosuchpackage"]}, "cannot import module"),
        ({"estimator": "sklearn.linear_model.LinearRegression"}, "is not a classifier with predict_proba"),
        (
            {"estimator": "collections.OrderedDict", "allowed_modules": ["collections"]},
            "is not a scikit-learn estimator",
        ),
        ({"params": {"max_iterations": 3}}, "has no parameter\\(s\\) max_iterations"),
        (
            {"estimator": "sklearn.linear_model.LogisticRegression"},
            "no native categorical support; use ordinal or onehot",
        ),
    ],
)
def test_model_config_errors(model: dict[str, object], message: str) -> None:
    with pytest.raises(tr.ModelConfigError, match=message):
        tr.build_estimator(ModelConfig.model_validate(model), ["carrier", "temp"], ["carrier"], seed=0)


def test_an_estimator_outside_the_allowed_modules_is_never_imported(tmp_path: Path) -> None:
    # A config that skipped validation (model_construct) still cannot reach an import.
    marker = tmp_path / "imported"
    model = ModelConfig.model_construct(
        estimator="subprocess.Popen", allowed_modules=[], params={"args": ["touch", str(marker)]}
    )
    with pytest.raises(
        tr.ModelConfigError, match=r"'subprocess\.Popen' is not in sklearn or train\.model\.allowed_modules"
    ):
        tr.build_estimator(model, ["carrier"], ["carrier"], seed=0)
    assert not marker.exists()


def test_fit_without_nan_support_says_what_to_set(cfg: PipelineConfig, window: tr.TrainingData) -> None:
    split = tr.split_by_time(window.frame, 3, 4)
    spec = tr.feature_spec(cfg, window.frame)
    bad = train_cfg(model={"estimator": "sklearn.linear_model.LogisticRegression", "categorical": "onehot"})
    with pytest.raises(tr.ModelConfigError, match="numeric_impute"):
        tr.fit(split, bad, spec)


# Fit -------------------------------------------------------------------------------------------------------


def test_fit_is_deterministic_and_refits_on_validation(cfg: PipelineConfig, window: tr.TrainingData) -> None:
    split = tr.split_by_time(window.frame, 3, 4)
    spec = tr.feature_spec(cfg, window.frame)
    first = tr.fit(split, train_cfg(), spec)
    second = tr.fit(split, train_cfg(), spec)
    assert np.array_equal(
        tr.positive_scores(first.model, split.holdout), tr.positive_scores(second.model, split.holdout)
    )
    # Without a search there is nothing to select: one fit on train + validation days.
    assert first.refit_with_validation and first.train_rows == len(split.train) + len(split.validation)
    assert len(first.candidates) == 1 and first.validation_metrics == {}
    assert first.params["random_state"] == 42 and first.params["max_iter"] == 15
    no_refit = tr.fit(split, train_cfg(model={**SMALL_MODEL, "refit_with_validation": False}), spec)
    assert not no_refit.refit_with_validation and no_refit.train_rows == len(split.train)
    assert set(no_refit.validation_metrics) == set(tr.compute_metrics(np.array([0, 1]), np.array([0.2, 0.8]), 0.5))
    assert no_refit.candidates[0].validation == no_refit.validation_metrics["roc_auc"]
    expected = roc_auc_score(split.validation["delayed"], tr.positive_scores(no_refit.model, split.validation))
    assert no_refit.validation_metrics["roc_auc"] == pytest.approx(expected)


def test_search_ranks_candidates_on_validation(cfg: PipelineConfig, window: tr.TrainingData) -> None:
    split = tr.split_by_time(window.frame, 3, 4)
    spec = tr.feature_spec(cfg, window.frame)
    search = {
        "n_iter": 3,
        "max_seconds": 600,
        "params": {"max_iter": [1, 30], "learning_rate": {"dist": "loguniform", "low": 0.05, "high": 0.3}},
    }
    result = tr.fit(split, train_cfg(search=search), spec)
    assert 2 <= len(result.candidates) <= 4 and result.candidates[0].params == {}
    best = max(result.candidates, key=lambda c: c.validation or -1)
    assert result.validation_metrics["roc_auc"] == best.validation
    for key, value in best.params.items():
        assert result.params[key] == value
    assert not result.search_stopped_by_time


def test_search_stops_at_the_time_bound(cfg: PipelineConfig, window: tr.TrainingData) -> None:
    split = tr.split_by_time(window.frame, 3, 4)
    spec = tr.feature_spec(cfg, window.frame)
    search = {"n_iter": 5, "max_seconds": 0.001, "params": {"max_leaf_nodes": [7, 15, 31, 63, 127]}}
    result = tr.fit(split, train_cfg(search=search), spec)
    assert len(result.candidates) == 1 and result.search_stopped_by_time


@pytest.mark.slow
def test_real_flights_window_trains(cfg: PipelineConfig, lake: Lake) -> None:
    """Two weeks of the real 2013 flights, built as the config says, train a better-than-chance model."""
    write_partitions(lake, cfg, build_features(cfg, "2013-06-01", "2013-06-14"))
    data = tr.load_window(lake, cfg, "2013-06-14", 14, min_rows=5000)
    split = tr.split_by_time(data.frame, 2, 3)
    spec = tr.feature_spec(cfg, data.frame)
    tc = train_cfg(window_days=14, validation_days=2, holdout_days=3)
    result = tr.fit(split, tc, spec)
    ev = evals.evaluate(result.model, split.holdout, tc, spec)
    assert ev.primary > 0.6
    assert {s.value for s in ev.slices if s.column == "origin"} == {"EWR", "JFK", "LGA"}
