"""The `train:` section schema: defaults, the proposed flight_delays section, and errors naming the key."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from airflow_mlops.config.train import Distribution, SearchConfig, TrainConfig, train_cross_check

FLIGHT_DELAYS_TRAIN = """
schedule: "@weekly"
window_days: 60
validation_days: 7
holdout_days: 7
min_rows: 5000
seed: 42
model:
  estimator: sklearn.ensemble.HistGradientBoostingClassifier
  params: {max_iter: 150, learning_rate: 0.1, max_leaf_nodes: 31, l2_regularization: 1.0, early_stopping: false}
  categorical: native
search:
  n_iter: 4
  max_seconds: 30
  params:
    learning_rate: {dist: loguniform, low: 0.03, high: 0.3}
    max_leaf_nodes: [15, 31, 63]
metric: {primary: roc_auc, threshold: 0.5}
gates:
  min_primary: 0.62
  min_improvement: -0.01
  max_slice_disparity: 0.25
  slice_columns: [carrier, origin]
  min_slice_rows: 300
registered_model_name: flight_delays
trigger_deploy: false
"""


def errors(exc: ValidationError) -> list[str]:
    return [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]


def test_proposed_flight_delays_section_is_valid() -> None:
    train = TrainConfig.model_validate(yaml.safe_load(FLIGHT_DELAYS_TRAIN))
    assert train.window_days == 60 and train.holdout_days == 7
    assert train.search is not None
    lr = train.search.params["learning_rate"]
    assert isinstance(lr, Distribution) and lr.dist == "loguniform"
    assert train.search.params["max_leaf_nodes"] == [15, 31, 63]
    assert train.model.params["early_stopping"] is False
    assert train.model_name("flight_delays") == "flight_delays"


def test_defaults_are_valid_and_name_defaults_to_pipeline() -> None:
    train = TrainConfig()
    assert train.model.estimator == "sklearn.ensemble.HistGradientBoostingClassifier"
    assert train.trigger_deploy is False
    assert train.search is None
    assert train.model_name("flight_delays") == "flight_delays"


@pytest.mark.parametrize(
    ("patch", "where", "words"),
    [
        ({"windw_days": 3}, "windw_days", "Extra inputs"),
        ({"model": {"estimator": "HistGradientBoosting"}}, "model.estimator", "import path"),
        ({"model": {"categorical": "target"}}, "model.categorical", "native"),
        ({"metric": {"primary": "auc"}}, "metric.primary", "roc_auc"),
        ({"gates": {"max_slice_disparity": -0.1}}, "gates.max_slice_disparity", "greater than or equal"),
        ({"gates": {"slices": ["carrier"]}}, "gates.slices", "Extra inputs"),
        ({"registered_model_name": "Flight Delays"}, "registered_model_name", "pattern"),
        ({"search": {"params": {}}}, "search.params", "at least 1"),
        ({"search": {"params": {"max_iter": []}}}, "search.params", "at least one value"),
        (
            {"search": {"params": {"learning_rate": {"dist": "loguniform", "low": 0, "high": 1}}}},
            "search.params",
            "low > 0",
        ),
    ],
)
def test_bad_values_are_named(patch: dict[str, object], where: str, words: str) -> None:
    with pytest.raises(ValidationError) as info:
        TrainConfig.model_validate(patch)
    messages = errors(info.value)
    assert any(m.startswith(where) and words in m for m in messages), messages


def test_window_must_leave_a_training_day() -> None:
    with pytest.raises(ValidationError, match=r"window_days \(10\) must leave at least one training day.*use >= 11"):
        TrainConfig(window_days=10, validation_days=5, holdout_days=5)
    TrainConfig(window_days=11, validation_days=5, holdout_days=5)


def test_search_needs_validation_days() -> None:
    search = SearchConfig(params={"max_iter": [10, 20]})
    with pytest.raises(ValidationError, match="search needs validation_days >= 1"):
        TrainConfig(validation_days=0, search=search)


def test_distribution_bounds() -> None:
    with pytest.raises(ValidationError, match="must be below high"):
        Distribution(dist="uniform", low=1, high=1)
    with pytest.raises(ValidationError, match="integer bounds"):
        Distribution(dist="randint", low=1.5, high=4)


def test_cross_check_names_unknown_slice_column() -> None:
    train = TrainConfig.model_validate({"gates": {"slice_columns": ["carrier", "airline"]}})
    problems = train_cross_check(train, feature_columns=["carrier", "dest"], key_columns=["flight"])
    assert problems == [
        (
            ("train", "gates", "slice_columns", 1),
            "column 'airline' is not a feature or key column (carrier, dest, flight)",
        )
    ]
    assert (
        train_cross_check(
            train.model_copy(update={"gates": train.gates.model_copy(update={"slice_columns": ["flight"]})}),
            ["carrier"],
            ["flight"],
        )
        == []
    )


@pytest.mark.parametrize(
    ("task", "estimator", "primary"),
    [
        ("binary", "sklearn.ensemble.HistGradientBoostingClassifier", "roc_auc"),
        ("multiclass", "sklearn.ensemble.HistGradientBoostingClassifier", "roc_auc_ovr"),
        ("regression", "sklearn.ensemble.HistGradientBoostingRegressor", "r2"),
    ],
)
def test_each_task_has_its_default_estimator_and_primary_metric(task: str, estimator: str, primary: str) -> None:
    train = TrainConfig.model_validate({"task": task, "model": {"params": {"max_iter": 5}}, "metric": {}})
    assert (train.task, train.model.estimator, train.metric.primary) == (task, estimator, primary)
    assert train.model.params == {"max_iter": 5}
    given = TrainConfig.model_validate({"task": task, "model": {"estimator": "sklearn.linear_model.Ridge"}})
    assert given.model.estimator == "sklearn.linear_model.Ridge"  # what the YAML says wins


def test_the_binary_default_is_todays_section() -> None:
    assert TrainConfig() == TrainConfig.model_validate({"task": "binary"})
    assert TrainConfig().task == "binary"


@pytest.mark.parametrize(("task", "primary"), [("regression", "roc_auc"), ("binary", "rmse"), ("multiclass", "f1")])
def test_a_primary_metric_of_another_task_names_the_key(task: str, primary: str) -> None:
    train = TrainConfig.model_validate({"task": task, "metric": {"primary": primary}})
    [(key, message)] = train_cross_check(train, ["carrier"], ["flight"])
    assert key == ("train", "metric", "primary")
    assert message.startswith(f"{primary!r} is not a {task} metric (use one of ")


def test_lower_is_better_covers_the_error_metrics() -> None:
    from airflow_mlops.config.train import LOWER_IS_BETTER, METRIC_NAMES, TASK_METRICS

    assert {"log_loss", "brier", "rmse", "mae", "mape"} == LOWER_IS_BETTER
    assert set(METRIC_NAMES) == {m for names in TASK_METRICS.values() for m in names}
