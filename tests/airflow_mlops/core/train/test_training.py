"""Training functions on feature-store partitions: window, split, model, fit, evaluation, gates, card, plots."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from airflow_mlops.config import PipelineConfig
from airflow_mlops.config.train import GatesConfig, ModelConfig, TrainConfig
from airflow_mlops.core.lake.hashing import frame_hash
from airflow_mlops.core.lake.storage import Lake, open_lake
from airflow_mlops.core.train import training as tr
from tests.fixtures.training_data import build_features, day_range, flight_config, synthetic_features, write_partitions

SMALL_MODEL = {"params": {"max_iter": 15}}


@pytest.fixture(scope="module")
def cfg() -> PipelineConfig:
    return flight_config()


@pytest.fixture()
def lake(tmp_path: Path) -> Lake:
    return open_lake(str(tmp_path / "lake"))


def train_cfg(**overrides: object) -> TrainConfig:
    base: dict[str, object] = {
        "window_days": 20,
        "validation_days": 3,
        "holdout_days": 4,
        "min_rows": 100,
        "model": SMALL_MODEL,
        "gates": {"slice_columns": ["carrier", "origin"], "min_slice_rows": 50},
    }
    base.update(overrides)
    return TrainConfig.model_validate(base)


@pytest.fixture(scope="module")
def window(cfg: PipelineConfig, tmp_path_factory: pytest.TempPathFactory) -> tr.TrainingData:
    """20 days of synthetic features in a lake, loaded as a window."""
    lake = open_lake(str(tmp_path_factory.mktemp("window-lake")))
    write_partitions(lake, cfg, synthetic_features(cfg, day_range("2013-03-01", 20), rows_per_day=250, seed=1))
    return tr.load_window(lake, cfg, "2013-03-20", 20)


# Window ----------------------------------------------------------------------------------------------------


def test_window_reads_existing_partitions_in_range_and_drops_unknown_labels(cfg: PipelineConfig, lake: Lake) -> None:
    features = synthetic_features(cfg, day_range("2013-02-25", 10), rows_per_day=50, seed=2)
    written = write_partitions(lake, cfg, features[features["ds"] != "2013-03-01"])  # a missing day
    data = tr.load_window(lake, cfg, "2013-03-04", 7)
    assert data.summary.window_start == "2013-02-26" and data.summary.window_end == "2013-03-04"
    expected_days = [d for d in written if "2013-02-26" <= d <= "2013-03-04"]
    assert data.partitions == expected_days and "2013-03-01" not in data.partitions
    in_window = features[features["ds"].isin(expected_days)]
    assert data.summary.rows_read == len(in_window)
    assert len(data.frame) == int(in_window["delayed"].notna().sum()) == data.summary.rows_labelled
    assert data.frame["delayed"].dtype == "int8" and set(data.frame["delayed"].unique()) <= {0, 1}
    assert sorted(data.frame["ds"].unique()) == expected_days
    assert data.summary.partition_uris == [
        lake.partition_uri("features", cfg.name, "", d, "features.parquet") for d in expected_days
    ]


def test_content_hash_is_over_partition_contents_and_order_stable(cfg: PipelineConfig, lake: Lake) -> None:
    features = synthetic_features(cfg, day_range("2013-03-01", 4), rows_per_day=40, seed=3)
    write_partitions(lake, cfg, features)
    first = tr.load_window(lake, cfg, "2013-03-04", 4).summary
    part = features[features["ds"] == "2013-03-02"].reset_index(drop=True)
    assert first.partition_hashes["2013-03-02"] == frame_hash(part)
    assert first.content_hash == tr.content_hash(dict(reversed(list(first.partition_hashes.items()))))
    # Rewriting the same rows gives the same hash; changing one value changes it.
    write_partitions(lake, cfg, features)
    assert tr.load_window(lake, cfg, "2013-03-04", 4).summary.content_hash == first.content_hash
    changed = part.copy()
    changed.loc[0, "temp"] = 123.0
    lake.write_parquet(lake.partition_uri("features", cfg.name, "", "2013-03-02", "features.parquet"), changed)
    again = tr.load_window(lake, cfg, "2013-03-04", 4).summary
    assert again.content_hash != first.content_hash
    assert {d for d in again.partition_hashes if again.partition_hashes[d] != first.partition_hashes[d]} == {
        "2013-03-02"
    }


def test_window_errors_name_the_problem(cfg: PipelineConfig, lake: Lake) -> None:
    with pytest.raises(
        tr.TrainingDataError, match=r"window 2013-03-01..2013-03-04 has 0 feature partition\(s\), at least 1"
    ):
        tr.load_window(lake, cfg, "2013-03-04", 4)
    features = synthetic_features(cfg, day_range("2013-03-01", 2), rows_per_day=30, seed=4)
    write_partitions(lake, cfg, features)
    with pytest.raises(tr.TrainingDataError, match=r"has 2 feature partition\(s\), at least 3 needed"):
        tr.load_window(lake, cfg, "2013-03-04", 4, min_partitions=3)
    with pytest.raises(tr.TrainingDataError, match=r"labelled row\(s\) in 2 partition\(s\); train.min_rows is 1000"):
        tr.load_window(lake, cfg, "2013-03-04", 4, min_rows=1000)
    uri = lake.partition_uri("features", cfg.name, "", "2013-03-02", "features.parquet")
    lake.write_parquet(uri, features[features["ds"] == "2013-03-02"].drop(columns=["plane_age"]))
    with pytest.raises(tr.TrainingDataError, match=rf"{uri}: missing column\(s\) plane_age"):
        tr.load_window(lake, cfg, "2013-03-04", 4)


def test_label_must_be_boolean(cfg: PipelineConfig, lake: Lake) -> None:
    features = synthetic_features(cfg, ["2013-03-01"], rows_per_day=20, seed=5)
    features["delayed"] = np.arange(len(features)) % 3
    write_partitions(lake, cfg, features)
    with pytest.raises(tr.TrainingDataError, match="label column 'delayed' must be boolean"):
        tr.load_window(lake, cfg, "2013-03-01", 1)


def test_partition_ranges() -> None:
    days = ["2013-01-03", "2013-01-01", "2013-01-02", "2013-01-05", "2013-01-07", "2013-01-08"]
    assert tr.partition_ranges(days) == "2013-01-01..2013-01-03, 2013-01-05, 2013-01-07..2013-01-08"


# Split -----------------------------------------------------------------------------------------------------


def test_split_by_time_puts_latest_days_in_holdout(window: tr.TrainingData) -> None:
    split = tr.split_by_time(window.frame, validation_days=3, holdout_days=4)
    days = window.partitions
    assert split.holdout_days == days[-4:] and split.validation_days == days[-7:-4] and split.train_days == days[:-7]
    assert (
        split.train["ds"].max()
        < split.validation["ds"].min()
        <= split.validation["ds"].max()
        < split.holdout["ds"].min()
    )
    assert len(split.train) + len(split.validation) + len(split.holdout) == len(window.frame)
    assert split.summary()["holdout"] == {"start": days[-4], "end": days[-1], "days": 4, "rows": len(split.holdout)}


def test_split_without_validation_and_too_few_days(window: tr.TrainingData) -> None:
    split = tr.split_by_time(window.frame, validation_days=0, holdout_days=2)
    assert split.validation.empty and split.validation_days == []
    assert split.train["ds"].max() < split.holdout["ds"].min()
    with pytest.raises(
        tr.TrainingDataError, match=r"20 day\(s\) of data .* cannot give holdout_days=10, validation_days=10"
    ):
        tr.split_by_time(window.frame, validation_days=10, holdout_days=10)


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
        ({"estimator": "nosuchpackage.Model"}, "cannot import module 'nosuchpackage'"),
        ({"estimator": "sklearn.linear_model.LinearRegression"}, "is not a classifier with predict_proba"),
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


# Evaluation and gates --------------------------------------------------------------------------------------


def test_evaluate_slices_and_disparity(cfg: PipelineConfig, window: tr.TrainingData) -> None:
    split = tr.split_by_time(window.frame, 3, 4)
    spec = tr.feature_spec(cfg, window.frame)
    tc = train_cfg()
    model = tr.fit(split, tc, spec).model
    ev = tr.evaluate(model, split.holdout, tc, spec)
    scores = tr.positive_scores(model, split.holdout)
    assert ev.rows == len(split.holdout) and ev.positives == int(split.holdout["delayed"].sum())
    assert ev.primary == pytest.approx(roc_auc_score(split.holdout["delayed"], scores))
    gated: dict[str, list[float]] = {}
    for s in ev.slices:
        rows = split.holdout[split.holdout[s.column].astype(str) == s.value]
        assert s.rows == len(rows)
        assert s.primary == pytest.approx(roc_auc_score(rows["delayed"], scores[rows.index]))
        assert s.gated == (s.rows >= 50)
        if s.gated and s.primary is not None:
            gated.setdefault(s.column, []).append(s.primary)
    for col, values in gated.items():
        assert ev.disparity[col] == pytest.approx(max(values) - min(values))
    assert ev.max_disparity == pytest.approx(max(v for v in ev.disparity.values() if v is not None))
    again = tr.Evaluation.from_dict(ev.to_dict())
    assert again.metrics == ev.metrics and again.slices == ev.slices


def evaluation(
    primary: float, disparity: float | None = 0.05, metric: str = "roc_auc", name: str = "challenger"
) -> tr.Evaluation:
    metrics = dict.fromkeys(tr.compute_metrics(np.array([0, 1]), np.array([0.1, 0.9]), 0.5), 0.5)
    metrics[metric] = primary
    return tr.Evaluation(name, metric, metrics, 1000, 300, [], {"carrier": disparity}, disparity)


GATES = GatesConfig(min_primary=0.6, min_improvement=0.01, max_slice_disparity=0.2, slice_columns=["carrier"])


def test_first_run_is_explicit() -> None:
    decision = tr.decide(evaluation(0.7), None, GATES)
    assert decision.outcome == "passed" and decision.first_run and decision.promote
    assert decision.reason.startswith("first run: no champion to compare")
    improvement = next(g for g in decision.gates if g.name == "min_improvement")
    assert improvement.passed and improvement.observed is None and "first run" in improvement.detail


def test_gates_pass_and_fail_against_champion() -> None:
    passed = tr.decide(evaluation(0.72), evaluation(0.70, name="champion"), GATES)
    assert passed.outcome == "passed" and not passed.first_run
    gain = next(g for g in passed.gates if g.name == "min_improvement")
    assert gain.observed == pytest.approx(0.02) and gain.threshold == 0.01 and gain.passed

    failed = tr.decide(evaluation(0.55, disparity=0.3), evaluation(0.70, name="champion"), GATES)
    assert failed.outcome == "failed" and not failed.promote
    assert {g.name for g in failed.gates if not g.passed} == {"min_primary", "min_improvement", "max_slice_disparity"}
    assert "min_primary: observed 0.5500, threshold 0.6000" in failed.reason
    assert "max_slice_disparity: observed 0.3000, threshold 0.2000" in failed.reason


def test_lower_is_better_metric_flips_the_gates() -> None:
    gates = GatesConfig(min_primary=0.5, min_improvement=0.0, max_slice_disparity=None)
    ok = tr.decide(evaluation(0.40, metric="log_loss"), evaluation(0.45, metric="log_loss"), gates)
    assert ok.outcome == "passed"
    assert next(g for g in ok.gates if g.name == "min_improvement").observed == pytest.approx(0.05)
    worse = tr.decide(evaluation(0.55, metric="log_loss"), evaluation(0.45, metric="log_loss"), gates)
    assert {g.name for g in worse.gates if not g.passed} == {"min_primary", "min_improvement"}


def test_force_records_who_and_why() -> None:
    force = tr.ForceRequest(by="alice", reason="hotfix for the new carrier")
    forced = tr.decide(evaluation(0.5), evaluation(0.7), GATES, force)
    assert forced.outcome == "forced" and forced.promote and not forced.passed
    assert forced.force == force and "forced by alice: hotfix for the new carrier" in forced.reason
    unneeded = tr.decide(evaluation(0.8), evaluation(0.7), GATES, force)
    assert unneeded.outcome == "passed" and "was not needed" in unneeded.reason
    assert tr.GateDecision.from_dict(forced.to_dict()) == forced
    with pytest.raises(ValueError, match="who"):
        tr.ForceRequest(by=" ", reason="x")


def test_disabled_gates_and_no_gated_slices() -> None:
    decision = tr.decide(
        evaluation(math.nan, disparity=None), None, GatesConfig(min_primary=None, min_improvement=None)
    )
    assert decision.outcome == "passed"
    details = {g.name: g.detail for g in decision.gates}
    assert details["min_primary"] == "disabled" and details["min_improvement"] == "disabled"
    assert "no slice column had two slices" in details["max_slice_disparity"]
    undefined = tr.decide(evaluation(math.nan), None, GATES)
    assert undefined.outcome == "failed" and "observed n/a" in undefined.reason


# Card and plots --------------------------------------------------------------------------------------------


def test_model_card_holds_lineage_metrics_gates_and_links(cfg: PipelineConfig, window: tr.TrainingData) -> None:
    split = tr.split_by_time(window.frame, 3, 4)
    spec = tr.feature_spec(cfg, window.frame)
    tc = train_cfg()
    fitted = tr.fit(split, tc, spec)
    challenger = tr.evaluate(fitted.model, split.holdout, tc, spec)
    champion = tr.evaluate(fitted.model, split.holdout, tc, spec, name="champion")
    force = tr.ForceRequest("bob", "demo")
    decision = tr.decide(challenger, champion, tc.gates.model_copy(update={"min_improvement": 0.5}), force)
    card = tr.model_card(
        model_name="flight_delays",
        version="7",
        data=window.summary,
        split=split.summary(),
        estimator=tc.model.estimator,
        params=fitted.params,
        challenger=challenger,
        champion=champion,
        champion_version="6",
        decision=decision,
        airflow_run_url="http://airflow/dags/flight_delays__train/runs/r1",
        mlflow_run_url="http://mlflow/#/experiments/1/runs/abc",
    )
    assert card.startswith("# flight_delays v7")
    assert "**Outcome: forced**" in card and "Forced by **bob**: demo" in card
    assert "window 2013-03-01 .. 2013-03-20" in card and "2013-03-01..2013-03-20" in card
    assert window.content_hash in card
    assert "| **roc_auc** |" in card and "champion v6" in card and "| 0.0000 |" in card  # same model: delta 0
    assert "| min_improvement | 0.5000 | 0.0000 | FAIL |" in card
    assert "| carrier | B6 |" in card
    assert (
        "http://airflow/dags/flight_delays__train/runs/r1" in card and "http://mlflow/#/experiments/1/runs/abc" in card
    )
    short = tr.model_card(
        model_name="flight_delays",
        version="7",
        data=window.summary,
        split=split.summary(),
        estimator=tc.model.estimator,
        params=fitted.params,
        challenger=challenger,
        champion=champion,
        champion_version="6",
        decision=decision,
        airflow_run_url=None,
        mlflow_run_url=None,
        max_chars=len(card) - 200,
    )
    assert len(short) <= len(card) - 200 and window.content_hash in short and "## Gates" in short


def test_plots_are_png_images(cfg: PipelineConfig, window: tr.TrainingData) -> None:
    from matplotlib.image import imread

    split = tr.split_by_time(window.frame, 3, 4)
    spec = tr.feature_spec(cfg, window.frame)
    tc = train_cfg()
    model = tr.fit(split, tc, spec).model
    challenger = tr.evaluate(model, split.holdout, tc, spec)
    importance = tr.feature_importance(model, split.holdout, spec, "roc_auc", seed=0, sample_rows=600)
    # The planted signal (precipitation, evening hours, carrier B6) outranks pure noise columns.
    assert importance["precip"] > importance["visib"] and importance["hour"] > importance["dewp"]
    plots = tr.evaluation_plots(challenger, challenger, importance, 0.5)
    assert set(plots) == {
        "roc.png",
        "precision_recall.png",
        "calibration.png",
        "confusion_matrix.png",
        "feature_importance.png",
    }
    for name, data in plots.items():
        image = imread(io.BytesIO(data), format="png")
        assert image.shape[0] > 100 and image.shape[1] > 100, name


@pytest.mark.slow
def test_real_flights_window_trains(cfg: PipelineConfig, lake: Lake) -> None:
    """Two weeks of the real 2013 flights, built as the config says, train a better-than-chance model."""
    write_partitions(lake, cfg, build_features(cfg, "2013-06-01", "2013-06-14"))
    data = tr.load_window(lake, cfg, "2013-06-14", 14, min_rows=5000)
    split = tr.split_by_time(data.frame, 2, 3)
    spec = tr.feature_spec(cfg, data.frame)
    tc = train_cfg(window_days=14, validation_days=2, holdout_days=3)
    result = tr.fit(split, tc, spec)
    ev = tr.evaluate(result.model, split.holdout, tc, spec)
    assert ev.primary > 0.6
    assert {s.value for s in ev.slices if s.column == "origin"} == {"EWR", "JFK", "LGA"}
