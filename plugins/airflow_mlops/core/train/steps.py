"""The steps of `<p>__train` on a lake and an MLflow server: train, evaluate against the champion, register.

Steps hand each other JSON-able dicts (URIs, ids, summaries), never data: evaluate reloads the same window,
which is deterministic, and checks its content hash against the one train recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from airflow_mlops.config import PipelineConfig
from airflow_mlops.core.lake.storage import Lake
from airflow_mlops.core.monitor.current import reference_sample
from airflow_mlops.core.monitor.estimate import holdout_estimates
from airflow_mlops.core.registry.tracking import Lineage, LoggedModelInfo, RunTags, Tracking, metric_key
from airflow_mlops.core.train import card as cards
from airflow_mlops.core.train import evaluation as evals
from airflow_mlops.core.train import training as tr


@dataclass(frozen=True)
class Window:
    data: tr.TrainingData
    split: tr.Split
    spec: tr.FeatureSpec


def load(lake: Lake, cfg: PipelineConfig, end_ds: str, window_days: int) -> Window:
    """The training window up to `end_ds`, split by time into train, validation and holdout."""
    data = tr.load_window(lake, cfg, end_ds, window_days, min_rows=cfg.train.min_rows)
    split = tr.split_by_time(data.frame, cfg.train.validation_days, cfg.train.holdout_days)
    return Window(data, split, tr.feature_spec(cfg, data.frame))


def experiment(cfg: PipelineConfig) -> str:
    """MLflow experiment of a pipeline's training runs."""
    return cfg.name


def train_step(
    lake: Lake, cfg: PipelineConfig, tracking: Tracking, tags: RunTags, end_ds: str, window_days: int, reason: str
) -> dict[str, Any]:
    """Fit the challenger on the window and log data, params and the model to the DAG run's MLflow run."""
    window = load(lake, cfg, end_ds, window_days)
    run_id = tracking.start_or_resume_run(experiment(cfg), tags)
    with tracking.failing_run(run_id):
        tracking.set_tags(run_id, {"mlops.reason": reason or "scheduled", "mlops.window_days": str(window_days)})
        tracking.log_training_data(run_id, window.data, window.spec)
        fit = tr.fit(window.split, cfg.train, window.spec)
        tracking.log_fit(run_id, fit, window.split.summary(), cfg.train.model.estimator)
        logged = tracking.log_model(
            run_id,
            fit.model,
            window.spec,
            window.split.holdout,
            extra_trusted=cfg.train.model.trusted_types,
            task=cfg.train.task,
        )
        reference = reference_sample(window.split, cfg, window.spec, fit.model)
        tracking.log_reference(run_id, reference)
    return {
        "mlflow_run_id": run_id,
        "mlflow_run_url": tracking.run_url(run_id),
        "model_uri": logged.model_uri,
        "model_id": logged.model_id,
        "end_ds": end_ds,
        "window_days": window_days,
        "data": window.data.summary.to_dict(),
        "split": window.split.summary(),
        "params": fit.params,
        "reference_rows": len(reference),
    }


def evaluate_step(
    lake: Lake,
    cfg: PipelineConfig,
    tracking: Tracking,
    tags: RunTags,
    trained: dict[str, Any],
    force: evals.ForceRequest | None,
) -> dict[str, Any]:
    """Score the challenger and the current champion on the same holdout and apply the gates."""
    run_id = tracking.start_or_resume_run(experiment(cfg), tags)
    with tracking.failing_run(run_id):
        return _evaluate(lake, cfg, tracking, run_id, trained, force)


def _evaluate(
    lake: Lake,
    cfg: PipelineConfig,
    tracking: Tracking,
    run_id: str,
    trained: dict[str, Any],
    force: evals.ForceRequest | None,
) -> dict[str, Any]:
    window = load(lake, cfg, trained["end_ds"], trained["window_days"])
    if window.data.summary.content_hash != trained["data"]["content_hash"]:
        raise tr.TrainingDataError(
            f"the features of {trained['end_ds']} (window {trained['window_days']} days) changed between train and "
            "evaluate: rerun the whole DAG run"
        )
    name = cfg.train.model_name(cfg.name)
    holdout, spec = window.split.holdout, window.spec
    trusted = cfg.train.model.trusted_types
    challenger_model = tracking.load_model(trained["model_uri"], trusted)
    champion_loaded = tracking.load_champion(name, trusted)
    challenger = evals.evaluate(challenger_model, holdout, cfg.train, spec)
    champion = None
    if champion_loaded is not None:
        champion = evals.evaluate(
            champion_loaded.model, holdout, cfg.train, spec, name=f"champion v{champion_loaded.version}"
        )
    importance = evals.feature_importance(
        challenger_model,
        holdout,
        spec,
        cfg.train.metric.primary,
        seed=cfg.train.seed,
        threads=cfg.train.model.threads,
        task=cfg.train.task,
    )
    decision = evals.decide(challenger, champion, cfg.train.gates, force)
    # For the monitor, once this version is champion: how much it leans on each column (monitor.drift.weighting)
    # and its metric as estimated from its own probabilities on this holdout (monitor.estimated_quality).
    for_monitor = {evals.IMPORTANCE_PREFIX + metric_key(c): v for c, v in importance.items()}
    for_monitor |= holdout_estimates(challenger_model, holdout, spec.columns, cfg)
    tracking.log_metrics(run_id, for_monitor)
    tracking.log_evaluation(run_id, challenger, "holdout")
    if champion is not None:
        tracking.log_evaluation(run_id, champion, "champion.holdout")
    tracking.log_decision(run_id, decision)
    tracking.log_files(
        run_id, cards.evaluation_plots(challenger, champion, importance, cfg.train.metric.threshold), "plots"
    )
    return {
        "mlflow_run_id": run_id,
        "mlflow_run_url": tracking.run_url(run_id),
        "challenger": challenger.to_dict(),
        "champion": champion.to_dict() if champion is not None else None,
        "champion_version": champion_loaded.version if champion_loaded is not None else None,
        "decision": decision.to_dict(),
    }


def register_step(
    cfg: PipelineConfig,
    tracking: Tracking,
    tags: RunTags,
    trained: dict[str, Any],
    evaluated: dict[str, Any],
    airflow_run_url: str | None,
) -> dict[str, Any]:
    """Register the model version with its card and lineage; alias `challenger` only if the gates passed."""
    name = cfg.train.model_name(cfg.name)
    run_id = trained["mlflow_run_id"]
    with tracking.failing_run(run_id):
        data = tr.DataSummary.from_dict(trained["data"])
        decision = evals.GateDecision.from_dict(evaluated["decision"])
        champion = evaluated["champion"]
        card = cards.model_card(
            model_name=name,
            version=None,
            data=data,
            split=trained["split"],
            estimator=cfg.train.model.estimator,
            params=trained["params"],
            challenger=evals.Evaluation.from_dict(evaluated["challenger"]),
            champion=evals.Evaluation.from_dict(champion) if champion is not None else None,
            champion_version=evaluated["champion_version"],
            decision=decision,
            airflow_run_url=airflow_run_url,
            mlflow_run_url=tracking.run_url(run_id),
        )
        tracking.log_files(run_id, {"model_card.md": card})
        logged = LoggedModelInfo(trained["model_id"], trained["model_uri"], run_id, reused=True)
        lineage = Lineage(cfg.name, tags.dag_id, tags.run_id, tags.logical_date, run_id, data, airflow_run_url)
        version = tracking.register(name, logged, decision, card, lineage)
    tracking.end_run(run_id)
    return {
        "model_name": name,
        "version": version.version,
        "aliases": version.aliases,
        "created": version.created,
        "version_url": version.url,
        "mlflow_run_url": tracking.run_url(run_id),
        "promoted": decision.promote,
        "outcome": decision.outcome,
        "reason": decision.reason,
    }
