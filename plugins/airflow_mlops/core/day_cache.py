"""The step cache of one day of a pipeline: each step's fingerprint, and whether a rerun of the day has any work."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable

from airflow_mlops.config import PipelineConfig, suite_path
from airflow_mlops.core.cache import CachedStep, ChainCheck, check_chain, fingerprint
from airflow_mlops.core.lake import paths
from airflow_mlops.core.lake.storage import Lake

MONITORED_ZONES = ("predictions", "inference_log", "features", "labels")
"""The zones of the monitor's window whose files are its inputs."""


def source_section(cfg: PipelineConfig, source: str) -> dict[str, object]:
    return cfg.sources[source].model_dump(mode="json")


def ingest_fingerprint(lake: Lake, cfg: PipelineConfig, source: str, ds: str) -> str:
    """`ingest_<source>`: the landing file and the source's config."""
    from airflow_mlops.core.ingest.steps import landing_uri

    return fingerprint(lake, [landing_uri(lake, cfg, source, ds)], source_section(cfg, source), {})


def validate_fingerprint(lake: Lake, cfg: PipelineConfig, source: str, ds: str) -> str:
    """`validate_<source>`: the raw partition, the source's config, its suite file and the date (the suite's
    date parameters)."""
    from airflow_mlops.core.ingest.steps import raw_uri

    suite = hashlib.sha256(suite_path(cfg.sources[source].suite).read_bytes()).hexdigest()
    return fingerprint(lake, [raw_uri(lake, cfg, source, ds)], source_section(cfg, source), {"suite": suite, "ds": ds})


def features_fingerprint(lake: Lake, cfg: PipelineConfig, ds: str) -> str:
    """`features`: the raw partitions of every source, the features and sources config."""
    from airflow_mlops.core.ingest.steps import raw_uri

    raw = [raw_uri(lake, cfg, name, ds) for name in cfg.sources]
    section = {"features": cfg.features.model_dump(mode="json"),
               "sources": {n: s.model_dump(mode="json") for n, s in cfg.sources.items()}}  # fmt: skip
    return fingerprint(lake, raw, section, {"ds": ds})


def score_fingerprint(lake: Lake, cfg: PipelineConfig, ds: str, champion: str | None) -> str:
    """`score`: the feature partition, the train and features config, the champion version."""
    section = {"train": cfg.train.model_dump(mode="json"), "features": cfg.features.model_dump(mode="json")}
    name = cfg.train.model_name(cfg.name)
    return fingerprint(lake, [lake.uri(paths.features(cfg.name, ds))], section, {"champion": f"{name}/{champion}"})


def monitor_fingerprint(lake: Lake, cfg: PipelineConfig, ds: str, champion: str | None, train_active: bool) -> str:
    """`monitor`: every file of the window's predictions, inference log, features and labels, the monitor and train
    config, the champion version and whether a training run is active (it decides whether to ask for one)."""
    from airflow_mlops.core.monitor.current import window_days

    days = window_days(ds, cfg.monitor.window_days)
    folders = [lake.uri(zone, cfg.name, paths.partition(d)) for zone in MONITORED_ZONES for d in days]
    inputs = [uri for folder in folders for uri in lake.list(folder)]
    section = {"monitor": cfg.monitor.model_dump(mode="json"), "train": cfg.train.model_dump(mode="json")}
    return fingerprint(lake, inputs, section, {"champion": champion, "train_active": train_active})


def monitor_follows_the_day(cfg: PipelineConfig) -> bool:
    """Whether `<p>__monitor` runs because of the day's asset events (else it runs on a schedule of its own)."""
    return not cfg.monitor.schedule


def day_steps(
    lake: Lake, cfg: PipelineConfig, ds: str, champion: Callable[[], str | None], train_active: Callable[[], bool]
) -> list[CachedStep]:
    """The cached steps one run of `<p>__ingest` for `ds` sets going, in order: each source's ingest and
    validation, the feature partition, then what its asset events trigger: the score of the partition and the
    monitor of the window ending on `ds` (when it follows the events). The champion and whether a training run
    is active are looked up only when the chain gets that far (the first run of a day stops at its first step)."""
    steps: list[CachedStep] = []
    for source in cfg.sources:
        steps += [
            CachedStep(f"ingest_{source}", ds, functools.partial(ingest_fingerprint, lake, cfg, source, ds)),
            CachedStep(f"validate_{source}", ds, functools.partial(validate_fingerprint, lake, cfg, source, ds)),
        ]
    steps.append(CachedStep("features", ds, lambda: features_fingerprint(lake, cfg, ds)))
    steps.append(CachedStep("score", ds, lambda: score_fingerprint(lake, cfg, ds, champion())))
    if monitor_follows_the_day(cfg):
        steps.append(CachedStep("monitor", ds, lambda: monitor_fingerprint(lake, cfg, ds, champion(), train_active())))
    return steps


def check_day(
    lake: Lake, cfg: PipelineConfig, ds: str, champion: Callable[[], str | None], train_active: Callable[[], bool]
) -> ChainCheck:
    """Whether a rerun of `ds` has nothing to do: every step of `day_steps` finds its record (same fingerprint,
    outputs still there). A champion-less pipeline never qualifies (its score skipped, so it has no record)."""
    return check_chain(lake, cfg.name, day_steps(lake, cfg, ds, champion, train_active))
