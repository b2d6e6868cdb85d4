"""What differs by train.task (binary, multiclass, regression): labels, model outputs, metrics, prediction columns."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from airflow_mlops.config.train import LOWER_IS_BETTER, TASK_METRICS
from airflow_mlops.errors import PermanentError

PREDICTION = "prediction"
"""Column of batch predictions: P(label true) (binary), the predicted class (multiclass) or value (regression)."""
PROBA_PREFIX = "proba."
"""Prefix of the class probability columns of multiclass predictions (`proba.<class>`)."""
EPSILON = 1e-15  # probabilities are clipped to [EPSILON, 1 - EPSILON] for log_loss, as the binary metric does


class LabelError(PermanentError, ValueError):
    """A label column holds values the task cannot learn from; the message names the column and the task."""


class TaskMismatch(PermanentError, ValueError):
    """A model does not fit the pipeline's train.task (a regressor for a classification task, or the reverse)."""


# Labels ------------------------------------------------------------------------------------------------------


def label_values(values: pd.Series, task: str, label: str, where: str) -> pd.Series:
    """A known (non-null) label column as the task trains on it.

    binary: 0/1 (int8); regression: float64; multiclass: int64 for whole numbers, else text (object).
    """
    if task == "regression":
        try:
            number = pd.to_numeric(values, errors="raise")
        except (TypeError, ValueError) as exc:
            raise LabelError(f"{where}: label column {label!r} must be numeric for regression: {exc}") from exc
        return pd.Series(number, index=values.index).astype("Float64").astype("float64")
    if task == "multiclass":
        if values.empty:
            return values.astype("object")
        if pd.api.types.is_bool_dtype(values.dtype) or not pd.api.types.is_numeric_dtype(values.dtype):
            return pd.Series(values.astype(str).to_numpy(dtype=object), index=values.index)
        whole = pd.Series(values).astype("Float64").to_numpy(dtype="float64", na_value=np.nan)
        if not np.all(np.isfinite(whole)) or not np.all(whole == np.round(whole)):
            raise LabelError(f"{where}: label column {label!r} must hold texts or whole numbers for multiclass")
        return pd.Series(whole.astype("int64"), index=values.index)
    if values.empty or pd.api.types.is_bool_dtype(values.dtype):
        return values.astype("int8")
    uniques = set(pd.unique(values))
    if not uniques <= {0, 1}:  # True == 1 and False == 0, so bool-like objects pass too
        shown = ", ".join(sorted(map(repr, uniques))[:5])
        raise LabelError(f"{where}: label column {label!r} must be boolean (0/1), found {shown}")
    return values.astype("int8")


# Model outputs -----------------------------------------------------------------------------------------------


def check_estimator(estimator: Any, task: str, path: str) -> str | None:
    """Why `estimator` cannot learn `task` (None when it can)."""
    from sklearn.base import is_classifier, is_regressor

    if task == "regression":
        if not is_regressor(estimator):
            return f"{path} is not a regressor (train.task is regression)"
        return None
    if not is_classifier(estimator) or not hasattr(estimator, "predict_proba"):
        return f"{path} is not a classifier with predict_proba (train.task is {task})"
    return None


def check_model(model: Any, task: str) -> None:
    """Raise TaskMismatch when a fitted model does not give the outputs of `task`."""
    from sklearn.base import is_classifier, is_regressor

    if task == "regression":
        if not is_regressor(model):
            raise TaskMismatch(f"the model ({type(model).__name__}) is not a regressor, but train.task is regression")
        return
    if not is_classifier(model) or not hasattr(model, "predict_proba"):
        raise TaskMismatch(f"the model ({type(model).__name__}) gives no class probabilities, but train.task is {task}")
    if task == "binary" and 1 not in list(getattr(model, "classes_", [0, 1])):
        raise TaskMismatch(f"model classes {list(model.classes_)} do not include the positive class 1")


def positive_scores(model: Any, rows: pd.DataFrame) -> np.ndarray:
    """Probability of the positive class (label 1/True) for each row."""
    proba = np.asarray(model.predict_proba(rows))
    classes = list(getattr(model, "classes_", [0, 1]))
    if 1 not in classes:
        raise ValueError(f"model classes {classes} do not include the positive class 1")
    return proba[:, classes.index(1)].astype("float64")


def model_classes(model: Any) -> list[Any]:
    """The classes of a classifier, in the order of its probability columns, as plain Python values."""
    return [c.item() if isinstance(c, np.generic) else c for c in getattr(model, "classes_", [])]


def model_scores(model: Any, rows: pd.DataFrame, task: str) -> np.ndarray:
    """What the metrics of `task` take: P(1) (binary), a (rows, classes) probability matrix (multiclass), values."""
    if task == "regression":
        return np.asarray(model.predict(rows), dtype="float64").reshape(-1)
    if task == "multiclass":
        return np.asarray(model.predict_proba(rows), dtype="float64")
    return positive_scores(model, rows)


def predicted_classes(proba: np.ndarray, classes: Sequence[Any]) -> np.ndarray:
    """The most probable class of each row (the first one on ties, as numpy's argmax)."""
    return np.asarray(classes, dtype=object)[np.argmax(proba, axis=1)] if len(proba) else np.array([], dtype=object)


def proba_column(value: Any) -> str:
    return f"{PROBA_PREFIX}{value}"


def predict_frame(model: Any, frame: pd.DataFrame, task: str) -> pd.DataFrame:
    """The model's predictions of raw feature rows, indexed like `frame`.

    `prediction`: P(label true) for binary, the value for regression, the most probable class for multiclass,
    which adds one `proba.<class>` column per class (the classes of the model, in its order).
    """
    scores = model_scores(model, frame, task)
    if task != "multiclass":
        return pd.DataFrame({PREDICTION: scores}, index=frame.index)
    classes = model_classes(model)
    out = pd.DataFrame({PREDICTION: predicted_classes(scores, classes)}, index=frame.index)
    for i, value in enumerate(classes):
        out[proba_column(value)] = scores[:, i]
    return out


def frame_scores(predictions: pd.DataFrame, task: str) -> tuple[np.ndarray, list[str]]:
    """Scores and classes back from a frame `predict_frame` wrote (classes as the column names hold them)."""
    if task != "multiclass":
        number = pd.to_numeric(predictions[PREDICTION], errors="coerce")
        return pd.Series(number).astype("Float64").to_numpy(dtype="float64", na_value=np.nan), []
    columns = [c for c in predictions.columns if str(c).startswith(PROBA_PREFIX)]
    proba = predictions[columns].apply(pd.to_numeric, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    return proba, [str(c)[len(PROBA_PREFIX) :] for c in columns]


def served_predictions(model: Any, frame: pd.DataFrame, task: str) -> list[Any]:
    """The JSON `predictions` of the model server for these rows.

    binary and regression: one number per row (null for NaN); multiclass: one
    `{"prediction": class, "probabilities": {class: p, ...}}` per row.
    """
    return served_answers(model_scores(model, frame, task), task, model_classes(model))


def served_answers(scores: np.ndarray, task: str, classes: Sequence[Any]) -> list[Any]:
    """`served_predictions` of scores as `model_scores` gives them (multiclass: of the model's `classes`)."""
    if task != "multiclass":
        return [None if math.isnan(v) else float(v) for v in scores.tolist()]
    names = [str(c) for c in classes]
    labels = predicted_classes(scores, classes).tolist()
    return [
        {"prediction": _plain(label), "probabilities": dict(zip(names, map(float, row), strict=True))}
        for label, row in zip(labels, scores.tolist(), strict=True)
    ]


def prediction_difference(got: Any, expected: Any) -> float:
    """Largest absolute difference between a served prediction and the offline one (inf when they disagree)."""
    if isinstance(expected, dict):
        if not isinstance(got, dict) or str(got.get("prediction")) != str(expected["prediction"]):
            return math.inf
        served = got.get("probabilities")
        wanted: dict[str, float] = expected["probabilities"]
        if not isinstance(served, dict) or set(served) != set(wanted):
            return math.inf
        return max((abs(float(served[k]) - v) for k, v in wanted.items()), default=0.0)
    if expected is None or got is None:
        return 0.0 if expected is None and got is None else math.inf
    return abs(float(got) - float(expected))


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


# Metrics -----------------------------------------------------------------------------------------------------


def compute_metrics(
    y_true: np.ndarray,
    y_score: np.ndarray,
    threshold: float = 0.5,
    task: str = "binary",
    classes: Sequence[Any] = (),
) -> dict[str, float]:
    """Every metric of `task` (TASK_METRICS); NaN where undefined on these rows (e.g. one class only).

    `y_score` as `model_scores` gives it; multiclass needs the `classes` of its columns.
    """
    if task == "regression":
        return regression_metrics(np.asarray(y_true, dtype="float64"), np.asarray(y_score, dtype="float64"))
    if task == "multiclass":
        return multiclass_metrics(y_true, np.asarray(y_score, dtype="float64"), classes)
    return binary_metrics(y_true, y_score, threshold)


def binary_metrics(y_true: np.ndarray, y_score: np.ndarray, threshold: float) -> dict[str, float]:
    """The binary metrics; ranking metrics are NaN when the rows hold one class only."""
    from sklearn import metrics as skm

    y_pred = (y_score >= threshold).astype("int8")
    both = len(np.unique(y_true)) == 2
    clipped = np.clip(y_score, EPSILON, 1 - EPSILON)
    return {
        "roc_auc": float(skm.roc_auc_score(y_true, y_score)) if both else math.nan,
        "average_precision": float(skm.average_precision_score(y_true, y_score)) if both else math.nan,
        "log_loss": float(skm.log_loss(y_true, clipped, labels=[0, 1])) if len(y_true) else math.nan,
        "brier": float(skm.brier_score_loss(y_true, y_score)) if len(y_true) else math.nan,
        "accuracy": float(skm.accuracy_score(y_true, y_pred)) if len(y_true) else math.nan,
        "f1": float(skm.f1_score(y_true, y_pred, zero_division=0)),
        "precision": float(skm.precision_score(y_true, y_pred, zero_division=0)),
        "recall": float(skm.recall_score(y_true, y_pred, zero_division=0)),
    }


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """rmse, mae, r2 (NaN below two rows or for a constant label) and mape (sklearn's: zero labels count as eps)."""
    from sklearn import metrics as skm

    if not len(y_true):
        return dict.fromkeys(TASK_METRICS["regression"], math.nan)
    error = y_pred - y_true
    constant = len(y_true) < 2 or float(np.var(y_true)) == 0.0
    return {
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mae": float(np.mean(np.abs(error))),
        "r2": math.nan if constant else float(skm.r2_score(y_true, y_pred)),
        "mape": float(skm.mean_absolute_percentage_error(y_true, y_pred)),
    }


def class_index(y_true: np.ndarray, classes: Sequence[Any]) -> np.ndarray:
    """Position of each label among `classes` (matched as text, so 3 and "3" agree); -1 for an unknown class."""
    lookup = {str(c): i for i, c in enumerate(classes)}
    mapped = pd.Series(np.asarray(y_true, dtype=object)).astype(str).map(lookup)
    return mapped.fillna(-1).to_numpy(dtype="int64")


def multiclass_metrics(y_true: np.ndarray, proba: np.ndarray, classes: Sequence[Any]) -> dict[str, float]:
    """log_loss, accuracy, f1_macro and roc_auc_ovr (the mean one-vs-rest AUC of the classes present).

    A label the model never saw counts as a wrong prediction with probability 0 (clipped) for log_loss.
    """
    from sklearn import metrics as skm

    if not len(y_true):
        return dict.fromkeys(TASK_METRICS["multiclass"], math.nan)
    if proba.ndim != 2 or proba.shape[1] != len(classes):
        raise ValueError(f"multiclass scores need one column per class ({len(classes)}), got shape {proba.shape}")
    index = class_index(y_true, classes)
    known = index >= 0
    p_true = np.zeros(len(index))
    p_true[known] = proba[np.flatnonzero(known), index[known]]
    predicted = np.argmax(proba, axis=1)
    present = [c for c in np.unique(index[known]) if 0 < int((index == c).sum()) < len(index)]
    aucs = [float(skm.roc_auc_score(index == c, proba[:, c])) for c in present]
    return {
        "log_loss": float(-np.mean(np.log(np.clip(p_true, EPSILON, 1 - EPSILON)))),
        "accuracy": float(np.mean(predicted == index)),
        "f1_macro": float(skm.f1_score(index, predicted, average="macro", zero_division=0)),
        "roc_auc_ovr": float(np.mean(aucs)) if len(aucs) >= 2 else math.nan,
    }


def positives(y_true: np.ndarray, task: str) -> int:
    """Rows with a true label (binary); 0 for the other tasks."""
    return int(np.asarray(y_true).sum()) if task == "binary" else 0


def importance_scorer(task: str, metric: str, classes: Sequence[Any]) -> Callable[[Any, pd.DataFrame, Any], float]:
    """A permutation-importance scorer of `metric` (greater is better) for the multiclass and regression tasks."""
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0

    def score(model: Any, rows: pd.DataFrame, y: Any) -> float:
        value = compute_metrics(np.asarray(y), model_scores(model, rows, task), task=task, classes=classes)[metric]
        return sign * value

    return score
