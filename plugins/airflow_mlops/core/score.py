"""The step of `<p>__score`: the champion's batch predictions for one feature partition."""

from __future__ import annotations

from typing import Any

from airflow_mlops.config import PipelineConfig
from airflow_mlops.core.lake import paths
from airflow_mlops.core.lake.hashing import frame_hash
from airflow_mlops.core.lake.storage import Lake
from airflow_mlops.core.registry.tracking import Tracking
from airflow_mlops.core.train import training as tr
from airflow_mlops.core.train.tasks import check_model, predict_frame


class NoChampion(RuntimeError):
    """No version has the `champion` alias yet: nothing to score with."""


def score_partition(lake: Lake, cfg: PipelineConfig, tracking: Tracking, ds: str) -> dict[str, Any]:
    """Write predictions/<p>/date=<ds>/ from the features of `ds`; a rerun replaces the partition.

    Columns: ds, key, timestamp, `prediction` (core.train.tasks.predict_frame: P(label true), the predicted
    class or value), for multiclass a `proba.<class>` column per class, model_name and model_version.
    """
    name = cfg.train.model_name(cfg.name)
    loaded = tracking.load_champion(name, cfg.train.model.trusted_types)
    if loaded is None:
        raise NoChampion(f"model {name!r} has no champion yet: deploy a version before scoring")
    features = lake.read_parquet(lake.uri(paths.features(cfg.name, ds)))
    spec = tr.feature_spec(cfg, features)
    task = cfg.train.task
    check_model(loaded.model, task)
    with tr.thread_limit(cfg.train.model.threads):
        predicted = predict_frame(loaded.model, features[spec.columns], task)
    out = features[["ds", *cfg.features.key, cfg.features.timestamp]].copy()
    for col in predicted.columns:  # prediction, and the class probabilities of a multiclass model
        out[col] = predicted[col].to_numpy()
    out["model_name"] = name
    out["model_version"] = loaded.version
    uri = lake.uri(paths.predictions(cfg.name, ds))
    lake.write_parquet(uri, out)
    return {
        "uri": uri,
        "rows": len(out),
        "model_version": loaded.version,
        "content_hash": frame_hash(out),
        "features_content_hash": frame_hash(features),  # lineage: which content of the partition was scored
    }
