"""The steps of `<p>__ingest` on a lake: landing to raw, validation with quarantine, feature build."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from airflow_mlops.config import PipelineConfig, suite_path
from airflow_mlops.core.ingest.features import build_features
from airflow_mlops.core.ingest.labels import build_labels
from airflow_mlops.core.ingest.landing import LandingFileError, read_landing_csv
from airflow_mlops.core.lake import paths
from airflow_mlops.core.lake.hashing import frame_hash
from airflow_mlops.core.lake.storage import Lake
from airflow_mlops.core.report import render_error_html, render_validation_html


class BatchRejected(RuntimeError):
    """A batch failed its checks and was moved to quarantine; the message says why and where."""


@dataclass(frozen=True)
class PartitionResult:
    """What a step wrote: passed between tasks as a dict (URIs, never data)."""

    uri: str
    rows: int
    content_hash: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def landing_uri(lake: Lake, cfg: PipelineConfig, source: str, ds: str) -> str:
    return lake.uri(paths.landing(cfg.name, cfg.sources[source].landing_path(ds)))


def raw_uri(lake: Lake, cfg: PipelineConfig, source: str, ds: str) -> str:
    return lake.uri(paths.raw(cfg.name, source, ds))


def features_uri(lake: Lake, cfg: PipelineConfig, ds: str) -> str:
    return lake.uri(paths.features(cfg.name, ds))


def _reject(
    lake: Lake, cfg: PipelineConfig, source: str, ds: str, files: dict[str, bytes], reason: str
) -> BatchRejected:
    """Quarantine a batch, drop what was derived from it for that date, and build the error to raise.

    `files` ends with the reason file (error.json or validation.json): written last, it marks the quarantine
    complete. The order makes a task killed at any point safe: the date's features go first (nothing
    downstream reads the rejected date any more), the raw partition last (a retry still has its input).
    """
    lake.delete(lake.uri(paths.features_partition(cfg.name, ds)))
    lake.delete(lake.uri(paths.labels_partition(cfg.name, ds)))
    target = lake.uri(paths.quarantine(cfg.name, source, ds))
    lake.replace_partition(target, files)
    lake.delete(lake.uri(paths.raw_partition(cfg.name, source, ds)))
    report = lake.uri(paths.validation_report(cfg.name, source, ds))
    return BatchRejected(f"{reason}\nThe batch was quarantined in {target}; report: {report}")


def ingest_source(
    lake: Lake, cfg: PipelineConfig, source: str, ds: str, context: dict[str, str] | None = None
) -> PartitionResult:
    """Copy the landing file of one source and date into raw/ as typed Parquet."""
    src_uri = landing_uri(lake, cfg, source, ds)
    data = lake.read_bytes(src_uri)
    try:
        df = read_landing_csv(data, dict(cfg.sources[source].columns), src_uri)
    except LandingFileError as exc:
        ctx = {"pipeline": cfg.name, "source": source, "logical date": ds, "file": src_uri, **(context or {})}
        html = render_error_html(f"{cfg.name}: landing file of {source} rejected", ctx, str(exc))
        lake.write_text(lake.uri(paths.validation_report(cfg.name, source, ds)), html)
        error = {"file": src_uri, "error": str(exc), **ctx}
        files = {  # the reason file last: it marks the quarantine complete
            src_uri.rsplit("/", 1)[-1]: data,
            "report.html": html.encode(),
            "error.json": json.dumps(error, indent=2).encode(),
        }
        raise _reject(lake, cfg, source, ds, files, str(exc)) from exc
    uri = raw_uri(lake, cfg, source, ds)
    lake.write_parquet(uri, df)
    return PartitionResult(uri, len(df), frame_hash(df))


def validate_source(
    lake: Lake, cfg: PipelineConfig, source: str, ds: str, context: dict[str, str] | None = None
) -> dict[str, Any]:
    """Validate the raw partition with its Great Expectations suite; quarantine it if it fails."""
    # Great Expectations takes seconds to import: only the validation tasks pay for it.
    from airflow_mlops.core.ingest.validation import date_parameters, validate_frame

    uri = raw_uri(lake, cfg, source, ds)
    df = lake.read_parquet(uri)
    outcome = validate_frame(df, suite_path(cfg.sources[source].suite), date_parameters(ds))
    ctx = {"pipeline": cfg.name, "source": source, "logical date": ds, "file": uri, **(context or {})}
    html = render_validation_html(outcome, f"{cfg.name}: validation of {source} for {ds}", ctx)
    report_uri = lake.uri(paths.validation_report(cfg.name, source, ds))
    lake.write_text(report_uri, html)
    if not outcome.success:
        files = {  # the reason file last: it marks the quarantine complete
            f"{source}.parquet": lake.read_bytes(uri),
            "report.html": html.encode(),
            "validation.json": json.dumps(outcome.result, indent=2, default=str).encode(),
        }
        raise _reject(lake, cfg, source, ds, files, outcome.error_message(uri))
    return {"uri": uri, "rows": len(df), "report_uri": report_uri, "success": True}


def build_feature_partition(lake: Lake, cfg: PipelineConfig, ds: str) -> PartitionResult:
    """Build and write the features of one date from the validated raw partitions."""
    frames = {name: lake.read_parquet(raw_uri(lake, cfg, name, ds)) for name in cfg.feature_sources}
    df = build_features(cfg, ds, frames)
    uri = features_uri(lake, cfg, ds)
    lake.write_parquet(uri, df)
    return PartitionResult(uri, len(df), frame_hash(df))


def build_label_partition(lake: Lake, cfg: PipelineConfig, ds: str) -> PartitionResult | None:
    """Write the labels that landed on `ds` from the validated label source (None without a label source)."""
    if cfg.label_source is None:
        return None
    df = build_labels(cfg, lake.read_parquet(raw_uri(lake, cfg, cfg.label_source, ds)))
    uri = lake.uri(paths.labels(cfg.name, ds))
    lake.write_parquet(uri, df)
    return PartitionResult(uri, len(df), frame_hash(df))


def build_partitions(lake: Lake, cfg: PipelineConfig, ds: str) -> dict[str, Any]:
    """The features of `ds` and, with a label source, the labels that landed on `ds` (`labels`, else None)."""
    labels = build_label_partition(lake, cfg, ds)
    result = build_feature_partition(lake, cfg, ds).to_dict()
    return {**result, "labels": labels.to_dict() if labels is not None else None}


def ingest_day(lake: Lake, cfg: PipelineConfig, ds: str, context: dict[str, str] | None = None) -> PartitionResult:
    """What one `<p>__ingest` run does for a date, in this process: each source copied and validated, then the
    features (loading history in bulk; a rejected batch raises BatchRejected as the DAG's task would)."""
    for source in cfg.sources:
        ingest_source(lake, cfg, source, ds, context)
        validate_source(lake, cfg, source, ds, context)
    build_label_partition(lake, cfg, ds)
    return build_feature_partition(lake, cfg, ds)
