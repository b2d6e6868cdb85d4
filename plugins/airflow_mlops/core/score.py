"""The step of `<p>__score`: the champion's batch predictions for one feature partition."""

from __future__ import annotations

from typing import Any

from airflow_mlops.config import PipelineConfig
from airflow_mlops.core.lake import paths
from airflow_mlops.core.lake.hashing import frame_hash
from airflow_mlops.core.lake.storage import Lake
from airflow_mlops.core.registry.tracking import Tracking
from airflow_mlops.core.train import training as tr


class NoChampion(RuntimeError):
    """No version has the `champion` alias yet: nothing to score with."""


def score_partition(lake: Lake, cfg: PipelineConfig, tracking: Tracking, ds: str) -> dict[str, Any]:
    """Write predictions/<p>/date=<ds>/ from the features of `ds`; a rerun replaces the partition."""
    name = cfg.train.model_name(cfg.name)
    loaded = tracking.load_champion(name, cfg.train.model.trusted_types)
    if loaded is None:
        raise NoChampion(f"model {name!r} has no champion yet: deploy a version before scoring")
    features = lake.read_parquet(lake.uri(paths.features(cfg.name, ds)))
    spec = tr.feature_spec(cfg, features)
    with tr.thread_limit(cfg.train.model.threads):
        scores = tr.positive_scores(loaded.model, features[spec.columns])
    out = features[["ds", *cfg.features.key, cfg.features.timestamp]].copy()
    out["prediction"] = scores
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
