"""MLflow tracking and registry against a real `mlflow server`: lineage, gates, force, reruns, safe loading, outages."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from airflow_mlops.config import PipelineConfig
from airflow_mlops.config.train import TrainConfig
from airflow_mlops.core.lake.storage import open_lake
from airflow_mlops.core.registry.tracking import (
    CHALLENGER,
    CHAMPION,
    Lineage,
    LoggedModelInfo,
    RegisteredVersion,
    RetryPolicy,
    RunTags,
    Tracking,
    TrackingError,
    UnsafeModelError,
    client_columns,
    trusted_types,
)
from airflow_mlops.core.train import card as cards
from airflow_mlops.core.train import evaluation as evals
from airflow_mlops.core.train import training as tr
from tests.fixtures.mlflow_server import MlflowServer
from tests.fixtures.training_data import day_range, flight_config, synthetic_features, write_partitions

ROOT = Path(__file__).resolve().parents[4]


@dataclass
class Trained:
    cfg: PipelineConfig
    train: TrainConfig
    data: tr.TrainingData
    split: tr.Split
    spec: tr.FeatureSpec
    strong: tr.FitResult
    weak: tr.FitResult


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """A 20-day synthetic window, a model fitted on it, and a much weaker one (for champion comparisons)."""
    cfg = flight_config()
    lake = open_lake(str(tmp_path_factory.mktemp("lake")))
    write_partitions(lake, cfg, synthetic_features(cfg, day_range("2013-03-01", 20), rows_per_day=200, seed=7))
    train = TrainConfig.model_validate(
        {
            "window_days": 20,
            "validation_days": 3,
            "holdout_days": 4,
            "min_rows": 100,
            "model": {"params": {"max_iter": 15}},
            "gates": {"min_primary": 0.55, "slice_columns": ["carrier", "origin"], "min_slice_rows": 40},
        }
    )
    data = tr.load_window(lake, cfg, "2013-03-20", train.window_days, min_rows=train.min_rows)
    split = tr.split_by_time(data.frame, train.validation_days, train.holdout_days)
    spec = tr.feature_spec(cfg, data.frame)
    strong = tr.fit(split, train, spec)
    weak_cfg = train.model_copy(
        update={"model": train.model.model_copy(update={"params": {"max_iter": 1, "max_depth": 1}})}
    )
    weak = tr.fit(split, weak_cfg, spec)
    return Trained(cfg, train, data, split, spec, strong, weak)


@pytest.fixture()
def tracking(mlflow_server: str) -> Iterator[Tracking]:
    """The project's tracking client; MLflow's global URIs also point at the server for direct fluent calls."""
    old = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_registry_uri(mlflow_server)
    yield Tracking(mlflow_server)
    mlflow.set_tracking_uri(old[0])
    mlflow.set_registry_uri(old[1])


@pytest.fixture()
def model_name() -> str:
    """A registered model name of its own for each test (the session server is shared)."""
    return f"flights_{uuid.uuid4().hex[:8]}"


@dataclass
class Outcome:
    run_id: str
    model: LoggedModelInfo
    decision: evals.GateDecision
    version: RegisteredVersion
    card: str
    challenger: evals.Evaluation
    champion: evals.Evaluation | None


def train_flow(
    tracking: Tracking,
    trained: Trained,
    name: str,
    dag_run_id: str,
    fit: tr.FitResult | None = None,
    train: TrainConfig | None = None,
    force: evals.ForceRequest | None = None,
) -> Outcome:
    """What the three tasks of `<p>__train` do with these functions (train, evaluate, register)."""
    train = train or trained.train
    fit = fit or trained.strong
    tags = RunTags(dag_id=f"{name}__train", run_id=dag_run_id, logical_date="2013-03-20", task="train")
    # train
    run_id = tracking.start_or_resume_run(name, tags)
    tracking.log_training_data(run_id, trained.data, trained.spec)
    tracking.log_fit(run_id, fit, trained.split.summary(), train.model.estimator)
    logged = tracking.log_model(run_id, fit.model, trained.spec, trained.split.holdout)
    # evaluate: challenger and champion on the same holdout
    run_id = tracking.start_or_resume_run(name, RunTags(tags.dag_id, tags.run_id, tags.logical_date, "evaluate"))
    challenger_model = tracking.load_model(logged.model_uri)
    champion_loaded = tracking.load_champion(name)
    challenger = evals.evaluate(challenger_model, trained.split.holdout, train, trained.spec)
    champion = (
        evals.evaluate(
            champion_loaded.model,
            trained.split.holdout,
            train,
            trained.spec,
            name=f"champion v{champion_loaded.version}",
        )
        if champion_loaded
        else None
    )
    decision = evals.decide(challenger, champion, train.gates, force)
    tracking.log_evaluation(run_id, challenger, "holdout")
    if champion is not None:
        tracking.log_evaluation(run_id, champion, "champion.holdout")
    tracking.log_decision(run_id, decision)
    importance = evals.feature_importance(
        challenger_model, trained.split.holdout, trained.spec, "roc_auc", seed=0, sample_rows=300, n_repeats=1
    )
    tracking.log_files(run_id, cards.evaluation_plots(challenger, champion, importance, 0.5), "plots")
    # register
    airflow_url = f"http://airflow.local/dags/{tags.dag_id}/runs/{dag_run_id}"
    card = cards.model_card(
        model_name=name,
        version=None,
        data=trained.data.summary,
        split=trained.split.summary(),
        estimator=train.model.estimator,
        params=fit.params,
        challenger=challenger,
        champion=champion,
        champion_version=champion_loaded.version if champion_loaded else None,
        decision=decision,
        airflow_run_url=airflow_url,
        mlflow_run_url=tracking.run_url(run_id),
    )
    tracking.log_files(run_id, {"model_card.md": card})
    lineage = Lineage(name, tags.dag_id, dag_run_id, tags.logical_date, run_id, trained.data.summary, airflow_url)
    version = tracking.register(name, logged, decision, card, lineage)
    tracking.end_run(run_id)
    return Outcome(run_id, logged, decision, version, card, challenger, champion)


def make_champion(tracking: Tracking, name: str, version: str) -> None:
    tracking.client.set_registered_model_alias(name, CHAMPION, version)


def test_first_run_registers_a_challenger_with_lineage(tracking: Tracking, trained: Trained, model_name: str) -> None:
    out = train_flow(tracking, trained, model_name, "scheduled__2013-03-20T00:00:00+00:00")
    client = tracking.client
    assert out.decision.first_run and out.decision.outcome == "passed"
    assert out.version.created and out.version.version == "1" and out.version.aliases == [CHALLENGER]
    assert tracking.alias_version(model_name, CHALLENGER) == "1"

    mv = client.get_model_version(model_name, "1")
    summary = trained.data.summary
    assert mv.run_id == out.run_id
    assert mv.tags["mlops.partitions"] == ",".join(summary.partitions)
    assert mv.tags["mlops.partition_count"] == "20"
    assert mv.tags["mlops.content_hash"] == summary.content_hash
    assert mv.tags["mlops.dag_id"] == f"{model_name}__train"
    assert mv.tags["mlops.dag_run_id"] == "scheduled__2013-03-20T00:00:00+00:00"
    assert mv.tags["mlops.mlflow_run_id"] == out.run_id
    assert mv.tags["mlops.gate_outcome"] == "passed" and mv.tags["mlops.first_run"] == "true"
    assert mv.description == out.card and summary.content_hash in mv.description
    assert "mlops.not_promoted_reason" not in mv.tags

    run = client.get_run(out.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlops.dag_run_id"] == "scheduled__2013-03-20T00:00:00+00:00"
    assert run.data.tags["mlops.logical_date"] == "2013-03-20" and run.data.tags["mlops.task"] == "evaluate"
    assert run.data.params["model.max_iter"] == "15" and run.data.params["split.holdout.days"] == "4"
    assert run.data.metrics["holdout.roc_auc"] == pytest.approx(out.challenger.primary)
    assert any(k.startswith("holdout.slice.carrier.B6.") for k in run.data.metrics)
    assert run.inputs is not None
    (dataset_input,) = run.inputs.dataset_inputs
    input_tags = {t.key: t.value for t in dataset_input.tags}
    assert input_tags["mlops.content_hash"] == summary.content_hash and input_tags["mlflow.data.context"] == "training"
    assert json.loads(dataset_input.dataset.source)["uri"] == summary.source_uri
    artifacts = {a.path for a in client.list_artifacts(out.run_id)} | {
        a.path for a in client.list_artifacts(out.run_id, "plots")
    }
    assert {"model_card.md", "plots/roc.png", "plots/feature_importance.png", "plots/confusion_matrix.png"} <= artifacts
    partitions = json.loads(
        Path(
            mlflow.artifacts.download_artifacts(
                run_id=out.run_id, artifact_path="data/partitions.json", tracking_uri=tracking.tracking_uri
            )
        ).read_text()
    )
    assert partitions["partition_hashes"] == summary.partition_hashes


def test_rerun_of_the_same_dag_run_creates_no_second_run_or_version(
    tracking: Tracking, trained: Trained, model_name: str
) -> None:
    first = train_flow(tracking, trained, model_name, "manual__2013-03-20T06:00:00+00:00")
    again = train_flow(tracking, trained, model_name, "manual__2013-03-20T06:00:00+00:00")
    assert again.run_id == first.run_id
    assert again.model.model_id == first.model.model_id and again.model.reused
    assert again.version.version == first.version.version and not again.version.created
    assert [v.version for v in tracking.client.search_model_versions(f"name = '{model_name}'")] == ["1"]
    runs = tracking.client.search_runs([tracking.get_or_create_experiment(model_name)])
    assert [r.info.run_id for r in runs] == [first.run_id]
    # Another DAG run is another MLflow run and another version.
    other = train_flow(tracking, trained, model_name, "manual__2013-03-21T06:00:00+00:00")
    assert other.run_id != first.run_id and other.version.version == "2"


def test_challenger_failing_a_gate_gets_no_alias_and_says_why(
    tracking: Tracking, trained: Trained, model_name: str
) -> None:
    first = train_flow(tracking, trained, model_name, "run_1")
    make_champion(tracking, model_name, first.version.version)
    strict = trained.train.model_copy(update={"gates": trained.train.gates.model_copy(update={"min_improvement": 0.5})})
    out = train_flow(tracking, trained, model_name, "run_2", train=strict)
    assert out.champion is not None and not out.decision.first_run
    assert out.challenger.primary == pytest.approx(out.champion.primary)  # same model, same holdout
    assert out.decision.outcome == "failed"
    assert out.version.version == "2" and out.version.aliases == []
    assert tracking.alias_version(model_name, CHALLENGER) == first.version.version  # unchanged
    mv = tracking.client.get_model_version(model_name, "2")
    assert mv.tags["mlops.gate_outcome"] == "failed"
    assert "min_improvement" in mv.tags["mlops.not_promoted_reason"]
    gates = {g["name"]: g for g in json.loads(mv.tags["mlops.gates"])}
    assert gates["min_improvement"]["passed"] is False and gates["min_improvement"]["threshold"] == 0.5
    run = tracking.client.get_run(out.run_id)
    assert run.data.tags["mlops.gate_outcome"] == "failed"
    assert run.data.metrics["champion.holdout.roc_auc"] == pytest.approx(out.champion.primary)


def test_challenger_beating_the_champion_passes(tracking: Tracking, trained: Trained, model_name: str) -> None:
    weak = train_flow(tracking, trained, model_name, "weak_run", fit=trained.weak)
    make_champion(tracking, model_name, weak.version.version)
    gates = trained.train.gates.model_copy(update={"min_improvement": 0.02})
    out = train_flow(
        tracking, trained, model_name, "strong_run", train=trained.train.model_copy(update={"gates": gates})
    )
    improvement = next(g for g in out.decision.gates if g.name == "min_improvement")
    assert out.champion is not None and out.champion.name == f"champion v{weak.version.version}"
    assert improvement.observed == pytest.approx(out.challenger.primary - out.champion.primary)
    assert improvement.observed is not None and improvement.observed > 0.02 and out.decision.outcome == "passed"
    assert out.version.aliases == [CHALLENGER] and tracking.alias_version(model_name, CHAMPION) == weak.version.version


def test_force_is_recorded_with_who_and_why(tracking: Tracking, trained: Trained, model_name: str) -> None:
    first = train_flow(tracking, trained, model_name, "run_a")
    make_champion(tracking, model_name, first.version.version)
    strict = trained.train.model_copy(update={"gates": trained.train.gates.model_copy(update={"min_primary": 0.99})})
    force = evals.ForceRequest(by="carol@example.com", reason="ship the retrain before the holiday peak")
    out = train_flow(tracking, trained, model_name, "run_b", train=strict, force=force)
    assert out.decision.outcome == "forced" and out.version.aliases == [CHALLENGER]
    for tags in (
        tracking.client.get_model_version(model_name, out.version.version).tags,
        tracking.client.get_run(out.run_id).data.tags,
    ):
        assert tags["mlops.force_by"] == "carol@example.com"
        assert tags["mlops.force_reason"] == "ship the retrain before the holiday peak"
        assert tags["mlops.gate_outcome"] == "forced"
    assert "Forced by **carol@example.com**" in out.card


def test_logged_model_is_skops_and_loads_with_the_allow_list(
    tracking: Tracking, trained: Trained, model_name: str
) -> None:
    out = train_flow(tracking, trained, model_name, "run_skops")
    local = Path(
        mlflow.artifacts.download_artifacts(artifact_uri=out.model.model_uri, tracking_uri=tracking.tracking_uri)
    )
    import yaml

    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    assert mlmodel["flavors"]["sklearn"]["serialization_format"] == "skops"
    assert (
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"
        in mlmodel["flavors"]["sklearn"]["skops_trusted_types"]
    )
    inputs = {c["name"]: c for c in json.loads(mlmodel["signature"]["inputs"])}
    assert (
        inputs["carrier"]["type"] == "string" and inputs["temp"]["type"] == "double" and not inputs["temp"]["required"]
    )
    # The columns a client sends: no derived feature, but the source columns the derived ones are computed from.
    assert list(inputs) == [c for c, _ in client_columns(trained.spec)]
    assert inputs["time_hour"]["type"] == "string" and inputs["year"]["type"] == "double"
    assert not {"day_of_week", "plane_age", "sched_block_minutes"} & set(inputs)
    # Its own code ships with it, and it requires published packages only.
    assert (local / "code" / "airflow_mlops_model" / "steps.py").is_file()
    requirements = (local / "requirements.txt").read_text().split()
    assert not [r for r in requirements if "airflow" in r] and any(r.startswith("mlflow==") for r in requirements)
    loaded = tracking.load_model(f"models:/{model_name}/{out.version.version}")
    rows = trained.split.holdout[trained.spec.columns].head(50)
    assert np.allclose(tr.positive_scores(loaded, rows), tr.positive_scores(trained.strong.model, rows))
    make_champion(tracking, model_name, out.version.version)
    champion = tracking.load_champion(model_name)
    assert champion is not None and champion.version == out.version.version and champion.run_id == out.run_id
    assert tracking.load_champion(f"{model_name}_none") is None
    # MLflow's own pyfunc loader serves the same logged model from raw JSON-like rows of base columns.
    pyfunc = mlflow.pyfunc.load_model(out.model.model_uri)
    raw = [
        {
            **{c: None for c, _ in client_columns(trained.spec)},
            **{"carrier": "B6", "origin": "JFK", "dest": "ZZZ", "time_hour": "2013-03-01T10:00:00Z"},
        }
    ]
    import pandas as pd

    assert pyfunc.predict(pd.DataFrame(raw)).shape == (1, 2)


@pytest.mark.parametrize("fmt", ["pickle", "cloudpickle"])
def test_pickle_format_model_is_refused(tracking: Tracking, trained: Trained, fmt: str) -> None:
    experiment_id = tracking.get_or_create_experiment("unsafe-models")
    run = tracking.client.create_run(experiment_id)
    with mlflow.start_run(run_id=run.info.run_id):
        info = mlflow.sklearn.log_model(
            trained.weak.model, name="model", serialization_format=fmt, pip_requirements=["scikit-learn"]
        )
    with pytest.raises(UnsafeModelError, match=f"saved in '{fmt}' format; this project loads only skops models"):
        tracking.load_model(info.model_uri)


def _square(x: Any) -> Any:
    return x


def test_types_outside_the_allow_list_are_refused(tracking: Tracking, trained: Trained) -> None:
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    model = Pipeline([("own", FunctionTransformer(_square)), ("model", trained.strong.model)])
    experiment_id = tracking.get_or_create_experiment("unsafe-models")
    run_id = tracking.client.create_run(experiment_id).info.run_id
    with pytest.raises(UnsafeModelError, match=r"outside the allow-list: .*_square"):
        tracking.log_model(run_id, model, trained.spec, trained.split.holdout)
    # Logged around the project (trusting itself in its MLmodel file), it is still refused on load.
    untrusted = [f"{__name__}._square"]
    with mlflow.start_run(run_id=run_id):
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            serialization_format="skops",
            skops_trusted_types=[*untrusted, *trusted_types()],
            pip_requirements=["scikit-learn"],
        )
    with pytest.raises(UnsafeModelError, match=rf"outside the allow-list: {__name__.replace('.', '[.]')}[.]_square"):
        tracking.load_model(info.model_uri)


def test_filter_values_with_quotes_are_refused(tracking: Tracking) -> None:
    with pytest.raises(ValueError, match="single quote"):
        tracking.start_or_resume_run("quotes", RunTags("d", "run'1", "2013-01-01", "train"))


RACE = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from airflow_mlops.core.registry.tracking import RunTags, Tracking

    uri, barrier, me = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    tracking = Tracking(uri)
    (barrier / me).touch()
    while len(list(barrier.iterdir())) < 2:  # both imported mlflow: start together
        time.sleep(0.01)
    experiment = tracking.get_or_create_experiment("race")
    run = tracking.start_or_resume_run("race", RunTags("race__train", "manual__race", "2013-01-01", "train"))
    print(json.dumps({"experiment": experiment, "run": run}))
    """
)


@pytest.mark.slow
def test_parallel_first_use_of_a_fresh_server(
    mlflow_server_factory: Callable[..., MlflowServer], tmp_path: Path
) -> None:
    server = mlflow_server_factory()
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACE, server.uri, str(barrier), str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for i in range(2)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert results[0] == results[1]
    client = MlflowClient(server.uri)
    experiments = [e for e in client.search_experiments() if e.name == "race"]
    assert len(experiments) == 1 and experiments[0].experiment_id == results[0]["experiment"]
    assert [r.info.run_id for r in client.search_runs([results[0]["experiment"]])] == [results[0]["run"]]


@pytest.mark.slow
def test_logging_survives_a_server_outage(
    mlflow_server_factory: Callable[..., MlflowServer], trained: Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    # MLflow's own per-request retries kept short so the project's retry loop is what carries the outage;
    # production keeps MLflow's defaults (7 retries, backoff 2: about 4 minutes) under a 300 s budget.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    server = mlflow_server_factory()
    tracking = Tracking(server.uri, retry=RetryPolicy(max_seconds=240, initial_backoff=1, max_backoff=4))
    run_id = tracking.start_or_resume_run("outage", RunTags("outage__train", "run_1", "2013-03-20", "train"))

    server.stop()
    impatient = Tracking(server.uri, retry=RetryPolicy(max_seconds=2, initial_backoff=1))
    with pytest.raises(TrackingError, match=f"MLflow server {server.uri} unreachable .* log 1 metrics"):
        impatient.log_metrics(run_id, {"x": 1.0})

    done: dict[str, Any] = {}

    def log_during_outage() -> None:
        started = time.monotonic()
        try:
            tracking.log_params(run_id, {"window_days": 20, "seed": 42})
            tracking.log_metrics(run_id, {"holdout.roc_auc": 0.71, "holdout.rows": 800})
            tracking.log_files(run_id, {"model_card.md": "# card"})
            done["model"] = tracking.log_model(run_id, trained.strong.model, trained.spec, trained.split.holdout)
        except Exception as exc:  # reported to the test thread below
            done["error"] = exc
        done["seconds"] = time.monotonic() - started

    worker = threading.Thread(target=log_during_outage)
    worker.start()
    downtime = 12.0
    time.sleep(downtime)
    assert worker.is_alive(), f"the calls should wait for the server, got {done}"
    server.start()  # same port, same database
    worker.join(timeout=300)
    assert not worker.is_alive()
    assert "error" not in done, done.get("error")
    assert done["seconds"] >= downtime
    run = tracking.client.get_run(run_id)
    assert run.data.params == {"window_days": "20", "seed": "42"}
    assert run.data.metrics == {"holdout.roc_auc": 0.71, "holdout.rows": 800.0}
    assert "model_card.md" in {a.path for a in tracking.client.list_artifacts(run_id)}
    assert tracking.load_model(done["model"].model_uri) is not None


def test_reference_sample_round_trips_with_its_dtypes(tracking: Tracking, trained: Trained) -> None:
    run_id = tracking.start_or_resume_run("reference", RunTags("reference__train", "run_1", "2013-03-20", "train"))
    assert tracking.load_reference(run_id) is None  # a run without one (e.g. trained before they were recorded)

    frame = trained.data.frame.head(300).copy()
    frame["delayed"] = frame["delayed"].astype("boolean").mask(frame.index % 7 == 0)  # unknown labels stay unknown
    frame["prediction"] = np.linspace(0, 1, len(frame))
    assert tracking.log_reference(run_id, frame) == "reference/reference.parquet"
    loaded = tracking.load_reference(run_id)
    assert loaded is not None
    pd.testing.assert_frame_equal(loaded, frame.reset_index(drop=True))

    tracking.log_reference(run_id, frame.head(10))  # a rerun of the training run replaces it
    again = tracking.load_reference(run_id)
    assert again is not None and len(again) == 10
