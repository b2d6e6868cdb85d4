"""The per-task pieces: labels, metrics against scikit-learn's, prediction columns and the served answer."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm
from sklearn.linear_model import LinearRegression, LogisticRegression

from airflow_mlops.core.train import tasks


def test_binary_labels_stay_0_1_and_others_are_refused() -> None:
    assert tasks.label_values(pd.Series([True, False], dtype="boolean"), "binary", "y", "w").tolist() == [1, 0]
    with pytest.raises(tasks.LabelError, match="label column 'y' must be boolean"):
        tasks.label_values(pd.Series([0, 2]), "binary", "y", "w")


def test_regression_and_multiclass_labels() -> None:
    values = tasks.label_values(pd.Series([1.5, 2], dtype="Float64"), "regression", "y", "w")
    assert values.dtype == "float64" and values.tolist() == [1.5, 2.0]
    with pytest.raises(tasks.LabelError, match="numeric for regression"):
        tasks.label_values(pd.Series(["a"]), "regression", "y", "w")
    assert tasks.label_values(pd.Series(["a", "b"], dtype="string"), "multiclass", "y", "w").tolist() == ["a", "b"]
    assert tasks.label_values(pd.Series([3, 1], dtype="Int64"), "multiclass", "y", "w").tolist() == [3, 1]
    with pytest.raises(tasks.LabelError, match="whole numbers"):
        tasks.label_values(pd.Series([1.5]), "multiclass", "y", "w")


def test_multiclass_metrics_equal_sklearn_with_every_class_present() -> None:
    rng = np.random.default_rng(0)
    classes = ["a", "b", "c"]
    proba = rng.dirichlet([1, 1, 1], 300)
    y = np.array(classes, dtype=object)[rng.integers(0, 3, 300)]
    got = tasks.multiclass_metrics(y, proba, classes)
    predicted = np.array(classes, dtype=object)[proba.argmax(axis=1)]
    assert got["roc_auc_ovr"] == pytest.approx(skm.roc_auc_score(y, proba, multi_class="ovr", labels=classes))
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, proba, labels=classes))
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, predicted))
    assert got["f1_macro"] == pytest.approx(skm.f1_score(y, predicted, average="macro"))


def test_multiclass_metrics_on_a_slice_missing_classes_and_an_unseen_label() -> None:
    proba = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8]])
    got = tasks.multiclass_metrics(np.array(["a", "b", "a", "z"], dtype=object), proba, ["a", "b", "c"])
    assert got["accuracy"] == 0.75  # "z" was never a class: a wrong prediction
    assert got["log_loss"] > 5  # and a probability of (almost) zero
    assert got["roc_auc_ovr"] == pytest.approx(1.0)  # the mean over the classes present: a and b
    one_class = tasks.multiclass_metrics(np.array(["a", "a"], dtype=object), proba[:2], ["a", "b", "c"])
    assert math.isnan(one_class["roc_auc_ovr"]) and one_class["accuracy"] == 0.5
    # numbers and texts name the same class (labels read back from Parquet vs. proba.<class> column names)
    assert tasks.class_index(np.array([3, 1]), ["1", "3"]).tolist() == [1, 0]


def test_regression_metrics_equal_sklearn() -> None:
    y, p = np.array([1.0, 2.0, 4.0, 8.0]), np.array([1.5, 2.0, 3.0, 9.0])
    got = tasks.regression_metrics(y, p)
    assert got["rmse"] == pytest.approx(math.sqrt(skm.mean_squared_error(y, p)))
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(y, p))
    assert got["r2"] == pytest.approx(skm.r2_score(y, p))
    assert got["mape"] == pytest.approx(skm.mean_absolute_percentage_error(y, p))
    assert math.isnan(tasks.regression_metrics(np.array([2.0, 2.0]), np.array([1.0, 2.0]))["r2"])


def test_predict_frame_and_frame_scores_round_trip() -> None:
    x = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]})
    model = LogisticRegression().fit(x, ["lo", "lo", "mid", "mid", "hi", "hi"])
    out = tasks.predict_frame(model, x, "multiclass")
    assert list(out.columns) == ["prediction", "proba.hi", "proba.lo", "proba.mid"]
    assert out["prediction"].tolist() == model.predict(x).tolist()
    scores, classes = tasks.frame_scores(out, "multiclass")
    assert classes == ["hi", "lo", "mid"]
    np.testing.assert_array_equal(scores, model.predict_proba(x))
    reg = LinearRegression().fit(x, [0.0, 2.0, 4.0, 6.0, 8.0, 10.0])
    out = tasks.predict_frame(reg, x, "regression")
    assert list(out.columns) == ["prediction"]
    np.testing.assert_allclose(tasks.frame_scores(out, "regression")[0], [0, 2, 4, 6, 8, 10], atol=1e-9)


def test_served_predictions_and_their_comparison() -> None:
    x = pd.DataFrame({"a": [0.0, 1.0, 4.0, 5.0]})
    model = LogisticRegression().fit(x, [1, 1, 2, 3])
    [first, *_] = served = tasks.served_predictions(model, x, "multiclass")
    assert set(first) == {"prediction", "probabilities"} and set(first["probabilities"]) == {"1", "2", "3"}
    assert isinstance(first["prediction"], int)
    assert tasks.prediction_difference(served[0], served[0]) == 0.0
    shifted = {**first, "probabilities": {k: v + 0.01 for k, v in first["probabilities"].items()}}
    assert tasks.prediction_difference(shifted, first) == pytest.approx(0.01)
    assert tasks.prediction_difference({**first, "prediction": "2"}, first) == math.inf
    assert tasks.prediction_difference(0.3, first) == math.inf
    assert tasks.prediction_difference(None, None) == 0.0 and tasks.prediction_difference(0.2, None) == math.inf


def test_a_model_must_suit_its_task() -> None:
    x = pd.DataFrame({"a": [0.0, 1.0, 2.0]})
    with pytest.raises(tasks.TaskMismatch, match="not a regressor"):
        tasks.check_model(LogisticRegression().fit(x, [0, 1, 1]), "regression")
    with pytest.raises(tasks.TaskMismatch, match="positive class 1"):
        tasks.check_model(LogisticRegression().fit(x, ["a", "b", "b"]), "binary")
    assert tasks.check_estimator(LinearRegression(), "binary", "p.LinearRegression") == (
        "p.LinearRegression is not a classifier with predict_proba (train.task is binary)"
    )
