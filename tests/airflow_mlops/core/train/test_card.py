"""The model card and the evaluation plots."""

from __future__ import annotations

import io

from airflow_mlops.config import PipelineConfig
from airflow_mlops.core.train import card as cards
from airflow_mlops.core.train import evaluation as evals
from airflow_mlops.core.train import training as tr
from tests.fixtures.training_data import small_train_config as train_cfg

# Card and plots --------------------------------------------------------------------------------------------


def test_model_card_holds_lineage_metrics_gates_and_links(cfg: PipelineConfig, window: tr.TrainingData) -> None:
    split = tr.split_by_time(window.frame, 3, 4)
    spec = tr.feature_spec(cfg, window.frame)
    tc = train_cfg()
    fitted = tr.fit(split, tc, spec)
    challenger = evals.evaluate(fitted.model, split.holdout, tc, spec)
    champion = evals.evaluate(fitted.model, split.holdout, tc, spec, name="champion")
    force = evals.ForceRequest("bob", "demo")
    decision = evals.decide(challenger, champion, tc.gates.model_copy(update={"min_improvement": 0.5}), force)
    same = {
        "model_name": "flight_delays",
        "version": "7",
        "data": window.summary,
        "split": split.summary(),
        "estimator": tc.model.estimator,
        "params": fitted.params,
        "challenger": challenger,
        "champion": champion,
        "champion_version": "6",
        "decision": decision,
    }
    card = cards.model_card(
        **same,
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
    short = cards.model_card(**same, airflow_run_url=None, mlflow_run_url=None, max_chars=len(card) - 200)
    assert len(short) <= len(card) - 200 and window.content_hash in short and "## Gates" in short


def test_plots_are_png_images(cfg: PipelineConfig, window: tr.TrainingData) -> None:
    from matplotlib.image import imread

    split = tr.split_by_time(window.frame, 3, 4)
    spec = tr.feature_spec(cfg, window.frame)
    tc = train_cfg()
    model = tr.fit(split, tc, spec).model
    challenger = evals.evaluate(model, split.holdout, tc, spec)
    importance = evals.feature_importance(model, split.holdout, spec, "roc_auc", seed=0, sample_rows=600)
    # The planted signal (precipitation, evening hours, carrier B6) outranks pure noise columns.
    assert importance["precip"] > importance["visib"] and importance["hour"] > importance["dewp"]
    plots = cards.evaluation_plots(challenger, challenger, importance, 0.5)
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
