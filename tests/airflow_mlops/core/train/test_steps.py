"""The train steps against a real MLflow server: the reference sample, the trusted types of the config, and a
failed step's run left FAILED."""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from airflow_mlops.config import PipelineConfig, parse_pipeline
from airflow_mlops.core.lake.storage import open_lake
from airflow_mlops.core.monitor.current import reference_sample
from airflow_mlops.core.registry.tracking import CHAMPION, RunTags, Tracking, UnsafeModelError
from airflow_mlops.core.score import score_partition
from airflow_mlops.core.train import training as tr
from airflow_mlops.core.train.steps import evaluate_step, load, register_step, train_step
from airflow_mlops.errors import PermanentError
from tests.fixtures.training_data import (
    FLIGHTS_YAML,
    day_range,
    small_flights_data,
    synthetic_features,
    write_partitions,
)

END = "2013-03-20"


def small_config(reference_rows: int = 20000, model: dict | None = None, name: str | None = None) -> PipelineConfig:
    data = small_flights_data(name or f"reference_{uuid.uuid4().hex[:8]}", model)
    data["monitor"]["reference_rows"] = reference_rows
    return parse_pipeline(yaml.safe_dump(data), str(FLIGHTS_YAML))


def forest(trusted: list[str]) -> dict:
    """A random forest: its fitted trees are `sklearn.tree._tree.Tree`, outside the project's own allow-list."""
    return {
        "estimator": "sklearn.ensemble.RandomForestClassifier",
        "params": {"n_estimators": 5, "max_depth": 5},
        "categorical": "ordinal",
        "trusted_types": trusted,
    }


def tags_of(cfg: PipelineConfig, task: str = "train") -> RunTags:
    return RunTags(f"{cfg.name}__train", f"manual__{uuid.uuid4().hex}", END, task)


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


def test_trusted_types_of_the_config_are_honoured_by_train_evaluate_and_score(mlflow_server: str, tmp_path) -> None:
    name = f"forest_{uuid.uuid4().hex[:8]}"
    listed = small_config(model=forest(["sklearn.tree._tree.Tree"]), name=name)
    lake = open_lake(str(tmp_path / "lake"))
    write_partitions(lake, listed, synthetic_features(listed, day_range("2013-03-01", 20), rows_per_day=200, seed=7))
    tracking = Tracking(mlflow_server)

    # Listed: trains, is logged, evaluated (loaded), registered, and scores as champion.
    tags = tags_of(listed)
    trained = train_step(lake, listed, tracking, tags, END, 20, "forest")
    evaluated = evaluate_step(lake, listed, tracking, tags, trained, None)
    registered = register_step(listed, tracking, tags, trained, evaluated, None)
    assert registered["version"] == "1"
    tracking.client.set_registered_model_alias(name, CHAMPION, "1")
    scored = score_partition(lake, listed, tracking, END)
    assert scored["model_version"] == "1" and scored["rows"] == 200
    # The next training loads that champion to compare with it.
    again = tags_of(listed)
    evaluated = evaluate_step(
        lake, listed, tracking, again, train_step(lake, listed, tracking, again, END, 20, ""), None
    )
    assert evaluated["champion_version"] == "1" and evaluated["champion"]["rows"] > 0

    # Not listed: refused with the type and the key to list it under; nothing scores with it either.
    unlisted = small_config(model=forest([]), name=name)
    refused = tags_of(unlisted)
    with pytest.raises(UnsafeModelError, match=r"sklearn\.tree\._tree\.Tree .*train\.model\.trusted_types"):
        train_step(lake, unlisted, tracking, refused, END, 20, "forest without trusted types")
    with pytest.raises(UnsafeModelError, match=r"models:/.*/1: model holds type\(s\) outside the allow-list"):
        score_partition(lake, unlisted, tracking, END)
    assert issubclass(UnsafeModelError, PermanentError)  # the operators fail such a task without retries

    # The refused training's MLflow run is FAILED, not left RUNNING.
    client = MlflowClient(mlflow_server)
    [run] = client.search_runs(
        [client.get_experiment_by_name(unlisted.name).experiment_id],
        filter_string=f"tags.`mlops.dag_run_id` = '{refused.run_id}'",
    )
    assert run.info.status == "FAILED"


def test_a_failing_fit_leaves_the_run_failed(mlflow_server: str, tmp_path) -> None:
    cfg = small_config(model={"params": {"max_iter": -1}})  # sklearn refuses it when fitting
    lake = open_lake(str(tmp_path / "lake"))
    write_partitions(lake, cfg, synthetic_features(cfg, day_range("2013-03-01", 20), rows_per_day=100, seed=3))
    tracking = Tracking(mlflow_server)
    tags = tags_of(cfg)
    with pytest.raises(ValueError, match="max_iter"):
        train_step(lake, cfg, tracking, tags, END, 20, "bad params")
    client = MlflowClient(mlflow_server)
    [run] = client.search_runs(
        [client.get_experiment_by_name(cfg.name).experiment_id],
        filter_string=f"tags.`mlops.dag_run_id` = '{tags.run_id}'",
    )
    assert run.info.status == "FAILED"


TASK_LABELS = {
    "regression": "arr_delay",
    "multiclass": "where(arr_delay > 60, 'late', where(arr_delay > 15, 'delayed', 'on_time'))",
}


def task_features(cfg: PipelineConfig, task: str) -> pd.DataFrame:
    """Synthetic feature rows whose label (known where the binary one is) suits `task`."""
    frame = synthetic_features(cfg, day_range("2013-03-01", 20), rows_per_day=150, seed=11)
    known = frame["delayed"].notna().to_numpy()
    late = frame["delayed"].fillna(False).to_numpy(dtype=bool)
    if task == "regression":
        minutes = np.where(late, 30.0 + frame["hour"].to_numpy(), 5.0) + 100 * frame["precip"].to_numpy()
        frame["delayed"] = pd.array(np.where(known, minutes, np.nan), dtype="Float64")
    else:
        classes = np.where(late, np.where(frame["hour"].to_numpy() >= 17, "late", "delayed"), "on_time")
        frame["delayed"] = pd.array(np.where(known, classes, None), dtype="string")
    return frame


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_each_task_trains_evaluates_registers_scores_and_is_monitored(mlflow_server: str, tmp_path, task: str) -> None:
    from airflow_mlops.config.train import TASK_METRICS
    from airflow_mlops.core.deploy.steps import smoke_sample
    from airflow_mlops.core.lake import paths
    from airflow_mlops.core.monitor.current import load_current
    from airflow_mlops.core.monitor.prediction import detect_prediction_drift
    from airflow_mlops.core.monitor.quality import assess_quality
    from airflow_mlops.core.train import tasks

    data = yaml.safe_load(FLIGHTS_YAML.read_text(encoding="utf-8"))
    data["features"]["label"]["expr"] = TASK_LABELS[task]
    data["train"] = {
        "task": task,
        "window_days": 20,
        "validation_days": 3,
        "holdout_days": 4,
        "min_rows": 100,
        "registered_model_name": f"{task}_{uuid.uuid4().hex[:8]}",
        "model": {"params": {"max_iter": 15}},
        "gates": {"min_primary": None, "slice_columns": ["origin"], "min_slice_rows": 50},
    }
    data["monitor"]["quality"].update(min_rows=50, label_delay_days=0)
    cfg = parse_pipeline(yaml.safe_dump(data), str(FLIGHTS_YAML))
    assert cfg.train.model.estimator.endswith("Regressor" if task == "regression" else "Classifier")
    lake = open_lake(str(tmp_path / "lake"))
    write_partitions(lake, cfg, task_features(cfg, task))
    tracking = Tracking(mlflow_server)
    tags = tags_of(cfg)
    name = cfg.train.model_name(cfg.name)

    trained = train_step(lake, cfg, tracking, tags, END, 20, task)
    evaluated = evaluate_step(lake, cfg, tracking, tags, trained, None)
    registered = register_step(cfg, tracking, tags, trained, evaluated, None)
    challenger = evaluated["challenger"]
    assert list(challenger["metrics"]) == list(TASK_METRICS[task]) and challenger["task"] == task
    assert challenger["primary_metric"] == cfg.train.metric.primary == ("r2" if task == "regression" else "roc_auc_ovr")
    assert all(s["primary"] is not None for s in challenger["slices"])
    assert registered["promoted"], registered["reason"]
    plots = {f.path for f in tracking.client.list_artifacts(trained["mlflow_run_id"], "plots")}
    wanted = {"regression": {"residuals.png", "predicted_actual.png"}, "multiclass": {"confusion_matrix.png"}}[task]
    assert plots == {f"plots/{p}" for p in {*wanted, "feature_importance.png"}}
    version = tracking.client.get_model_version(name, registered["version"])
    assert f"- Task: {task}" in version.tags["mlops.model_card"]

    # As champion it scores, its smoke sample expects what the server must answer, and the monitor judges it.
    tracking.client.set_registered_model_alias(name, CHAMPION, registered["version"])
    for ds in day_range("2013-03-14", 7):
        score_partition(lake, cfg, tracking, ds)
    predictions = lake.read_parquet(lake.uri(paths.predictions(cfg.name, END)))
    model = tracking.load_model(trained["model_uri"])
    if task == "multiclass":
        probabilities = [c for c in predictions.columns if c.startswith("proba.")]
        assert probabilities == ["proba.delayed", "proba.late", "proba.on_time"]
        assert set(predictions["prediction"]) <= {"delayed", "late", "on_time"}
    else:
        assert predictions["prediction"].dtype == "float64"
    sample = smoke_sample(lake, tracking, cfg, registered["version"], 5)
    window = load(lake, cfg, END, 20)
    assert sample.expected == tasks.served_predictions(model, pd.DataFrame(sample.rows)[window.spec.columns], task)

    spec = window.spec
    current = load_current(lake, cfg, END, spec.numeric, spec.categorical, registered["version"])
    baselines = {k: v for k, v in challenger["metrics"].items() if v is not None}
    quality = assess_quality(current.quality, cfg, baselines, registered["version"], current.matured_days)
    assert quality.metric == cfg.train.metric.primary and quality.rows == len(current.quality) > 50
    assert list(quality.metrics) == list(TASK_METRICS[task])
    # The holdout days are among the scored ones: the monitored figure is close to the holdout one.
    assert abs(quality.value - quality.baseline) < 0.2
    # The same model on rows like its training rows: its outputs match those on its reference sample.
    reference = tracking.load_reference(trained["mlflow_run_id"])
    assert reference is not None
    outputs = detect_prediction_drift(reference, current.rows, task, registered["version"], min_rows=100)
    wanted_outputs = ["proba.delayed", "proba.late", "proba.on_time", "prediction"]
    assert list(outputs.drift.columns) == (wanted_outputs if task == "multiclass" else ["prediction"])
    assert not outputs.drifted and outputs.drift.rows_current == len(current.rows), outputs.to_dict()
