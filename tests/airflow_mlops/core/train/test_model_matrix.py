"""Every model configuration of each task type (estimator x categorical encoding x imputation) through fit ->
log to a real MLflow server -> load with the project's loader -> predict, on tiny frames.

A configuration either fails before anything is logged, with a ModelConfigError naming the key, or goes all
the way and predicts after loading exactly what it predicted in memory."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.config.train import TASK_METRICS, TrainConfig
from airflow_mlops.core.registry.tracking import Tracking
from airflow_mlops.core.train import tasks
from airflow_mlops.core.train import training as tr
from tests.fixtures.mlflow_server import MlflowServer

ESTIMATORS = {
    "binary": ["HistGradientBoostingClassifier", "LogisticRegression", "RandomForestClassifier"],
    "multiclass": ["HistGradientBoostingClassifier", "LogisticRegression", "RandomForestClassifier"],
    "regression": ["HistGradientBoostingRegressor", "Ridge", "RandomForestRegressor"],
}
MODULES = {"HistGradientBoosting": "sklearn.ensemble", "RandomForest": "sklearn.ensemble"}
PARAMS = {"HistGradientBoosting": {"max_iter": 5}, "RandomForest": {"n_estimators": 3, "max_depth": 3}}
ENCODINGS = ["native", "ordinal", "onehot"]
IMPUTATIONS = ["none", "median", "mean"]  # median also scales the numbers (the linear-model set-up)
NATIVE_NAN = ("HistGradientBoosting", "RandomForest")  # estimators that take missing numbers themselves
SPEC = tr.FeatureSpec(numeric=["distance", "temp"], categorical=["carrier", "origin"], label="label")
TREE = "sklearn.tree._tree.Tree"  # what a random forest keeps: outside the project's allow-list, trusted by config
CASES = [
    (task, estimator, encoding, impute)
    for task in ESTIMATORS
    for estimator, encoding, impute in itertools.product(ESTIMATORS[task], ENCODINGS, IMPUTATIONS)
    # mean differs from median only in SimpleImputer's strategy: tried with the linear models, which need it
    if impute != "mean" or not estimator.startswith(NATIVE_NAN)
]


def estimator_path(name: str) -> str:
    family = next((f for f in MODULES if name.startswith(f)), "")
    return f"{MODULES.get(family, 'sklearn.linear_model')}.{name}"


def params_of(name: str) -> dict[str, object]:
    return next((p for f, p in PARAMS.items() if name.startswith(f)), {})


def tiny_frame(task: str, rows: int = 150, seed: int = 0) -> pd.DataFrame:
    """Feature rows with missing numbers and categories, and a label of the task that depends on them."""
    rng = np.random.default_rng(seed)
    carrier = rng.choice(["AA", "B6", "DL", "UA"], rows).astype(object)
    carrier[rng.random(rows) < 0.05] = None
    distance = rng.uniform(100, 2500, rows)
    temp = rng.uniform(10, 90, rows)
    temp[rng.random(rows) < 0.1] = np.nan
    signal = distance / 1000 + (carrier == "B6") * 1.5 + rng.normal(0, 0.5, rows)
    frame = pd.DataFrame(
        {
            "carrier": pd.array(carrier, dtype="string"),
            "origin": pd.array(rng.choice(["EWR", "JFK", "LGA"], rows), dtype="string"),
            "distance": distance,
            "temp": temp,
        }
    )
    if task == "binary":
        frame["label"] = (signal > np.median(signal)).astype("int8")
    elif task == "multiclass":
        frame["label"] = np.array(["early", "on_time", "late"], dtype=object)[np.digitize(signal, [1.0, 2.0])]
    else:
        frame["label"] = signal * 10.0
    return frame


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tracking]:
    """One real MLflow server for this module."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-matrix"))
    server.start()
    try:
        yield Tracking(server.uri)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def run_id(tracking: Tracking) -> str:
    experiment = tracking.get_or_create_experiment("matrix")
    return str(tracking.client.create_run(experiment).info.run_id)


def config(task: str, estimator: str, encoding: str, impute: str) -> TrainConfig:
    model = {
        "estimator": estimator_path(estimator),
        "params": params_of(estimator),
        "categorical": encoding,
        "numeric_impute": impute,
        "scale_numeric": impute == "median",
        "trusted_types": [TREE] if estimator.startswith("RandomForest") else [],
    }
    return TrainConfig.model_validate({"task": task, "model": model})


@pytest.mark.parametrize(("task", "estimator", "encoding", "impute"), CASES, ids=["-".join(c) for c in CASES])
def test_a_model_configuration_trains_logs_loads_and_predicts(
    tracking: Tracking, run_id: str, task: str, estimator: str, encoding: str, impute: str
) -> None:
    cfg = config(task, estimator, encoding, impute)
    train = tiny_frame(task)
    rows = tiny_frame(task, rows=40, seed=1)
    rows.loc[0, "carrier"] = "ZZ"  # a category never seen in training
    label = tasks.label_values(train["label"], task, "label", "tiny frame").to_numpy()

    refused = None
    if encoding == "native" and not estimator.startswith("HistGradientBoosting"):
        refused = "train.model.categorical"
    elif impute == "none" and not estimator.startswith(NATIVE_NAN):
        refused = "numeric_impute"
    if refused is not None:  # refused before anything is logged, naming the key to change
        with pytest.raises(tr.ModelConfigError, match=refused):
            tr._fit_one(cfg.model, SPEC, 0, {}, train[SPEC.columns], label, task)
        return

    model = tr._fit_one(cfg.model, SPEC, 0, {}, train[SPEC.columns], label, task)
    name = f"m_{uuid.uuid4().hex[:10]}"
    trusted = cfg.model.trusted_types
    logged = tracking.log_model(run_id, model, SPEC, rows, extra_trusted=trusted, name=name, task=task)
    loaded = tracking.load_model(logged.model_uri, trusted)

    expected = tasks.predict_frame(model, rows[SPEC.columns], task)
    got = tasks.predict_frame(loaded, rows[SPEC.columns], task)
    pd.testing.assert_frame_equal(got, expected)
    assert got.columns[0] == tasks.PREDICTION
    if task == "multiclass":
        assert sorted(got.columns[1:]) == ["proba.early", "proba.late", "proba.on_time"]
        np.testing.assert_allclose(got.iloc[:, 1:].sum(axis=1), 1.0)
    served = tasks.served_predictions(loaded, rows[SPEC.columns], task)
    offline = tasks.served_predictions(model, rows[SPEC.columns], task)
    assert max(tasks.prediction_difference(s, o) for s, o in zip(served, offline, strict=True)) == 0.0
    scores = tasks.model_scores(loaded, rows[SPEC.columns], task)
    y = tasks.label_values(rows["label"], task, "label", "rows").to_numpy()
    metrics = tasks.compute_metrics(y, scores, 0.5, task, tasks.model_classes(loaded))
    assert list(metrics) == list(TASK_METRICS[task])
    assert not np.isnan(metrics[cfg.metric.primary])


@pytest.mark.parametrize("task", list(ESTIMATORS))
def test_mlflow_pyfunc_serves_the_logged_model_of_each_task(tracking: Tracking, run_id: str, task: str) -> None:
    """The signature and predict function MLflow records fit the model: MLflow's own pyfunc answers rows."""
    import mlflow

    from airflow_mlops.core.registry.models import mlflow_uris, raw_rows

    cfg = config(task, ESTIMATORS[task][1], "onehot", "median")
    train = tiny_frame(task)
    label = tasks.label_values(train["label"], task, "label", "tiny frame").to_numpy()
    model = tr._fit_one(cfg.model, SPEC, 0, {}, train[SPEC.columns], label, task)
    logged = tracking.log_model(run_id, model, SPEC, train, name=f"pyfunc_{task}", task=task)
    rows = raw_rows(tiny_frame(task, rows=10, seed=2), SPEC)
    with mlflow_uris(tracking.tracking_uri, tracking.registry_uri):
        pyfunc = mlflow.pyfunc.load_model(logged.model_uri)
        got = np.asarray(pyfunc.predict(rows))
    want = model.predict(rows) if task == "regression" else model.predict_proba(rows)
    np.testing.assert_allclose(got, want)
    outputs = pyfunc.metadata.get_output_schema().inputs[0]
    assert outputs.shape == ((-1,) if task == "regression" else (-1, len(tasks.model_classes(model))))


def test_a_model_of_another_task_is_refused_at_logging(tracking: Tracking, run_id: str) -> None:
    cfg = config("regression", "Ridge", "onehot", "median")
    train = tiny_frame("regression")
    model = tr._fit_one(cfg.model, SPEC, 0, {}, train[SPEC.columns], train["label"].to_numpy(), "regression")
    with pytest.raises(tasks.TaskMismatch, match=r"no class probabilities, but train\.task is binary"):
        tracking.log_model(run_id, model, SPEC, train, name="wrong_task", task="binary")
