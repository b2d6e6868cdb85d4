"""Operators of `<p>__ingest`: landing to raw, validation with quarantine, the feature partition."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import Context

from airflow_mlops.lineage import lake_ref
from airflow_mlops.links import ValidationReportLink
from airflow_mlops.operators.base import PipelineOperator, SourceOperator, fail_without_retry

if TYPE_CHECKING:
    from airflow_mlops.config import PipelineConfig
    from airflow_mlops.core.lake.storage import Lake


class IngestSourceOperator(SourceOperator):
    """Copies the landing file of one source to raw/ as typed Parquet; an unreadable file is quarantined."""

    cache_step = "ingest"

    def input_uri(self, lake: Lake, cfg: PipelineConfig) -> str:
        from airflow_mlops.core.ingest.steps import landing_uri

        return landing_uri(lake, cfg, self.source, self.ds)

    @fail_without_retry
    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.core.ingest.steps import ingest_source

        result = self.run_step(ingest_source, context, lambda r: [r["uri"]])
        self.log.info("%s rows in %s (content hash %s)", result["rows"], result["uri"], result["content_hash"])
        self.step_lineage.outputs = [lake_ref(result["uri"], result["content_hash"])]
        return result


class ValidateSourceOperator(SourceOperator):
    """Validates the raw partition of one source with its Great Expectations suite.

    A failing batch is moved to quarantine/ with the result JSON and an HTML report, and the task
    fails naming every failed expectation. The task links to its report.
    """

    operator_extra_links = (ValidationReportLink(),)

    cache_step = "validate"

    def input_uri(self, lake: Lake, cfg: PipelineConfig) -> str:
        from airflow_mlops.core.ingest.steps import raw_uri

        return raw_uri(lake, cfg, self.source, self.ds)

    def fingerprint_extra(self, cfg: PipelineConfig) -> dict[str, Any]:
        """The suite (its file's content) and the date (the suite's date parameters)."""
        import hashlib

        from airflow_mlops.config import suite_path

        suite = suite_path(cfg.sources[self.source].suite)
        return {"suite": hashlib.sha256(suite.read_bytes()).hexdigest(), "ds": self.ds}

    @fail_without_retry
    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.core.ingest.steps import validate_source

        result = self.run_step(validate_source, context, lambda r: [r["uri"], r["report_uri"]])
        self.step_lineage.outputs = [lake_ref(result["report_uri"])]
        self.log.info("%s rows of %s passed validation; report: %s", result["rows"], self.source, result["report_uri"])
        return result


class BuildFeaturesOperator(PipelineOperator):
    """Builds the feature partition of the logical date (and the labels that landed that day, with a label source)
    and publishes it on the pipeline's features Asset.

    The asset event carries the partition, row count, content hash and URI.
    """

    @fail_without_retry
    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.core.cache import fingerprint
        from airflow_mlops.core.ingest.steps import build_partitions, raw_uri

        cfg, lake = self.config_and_lake()
        raw = [raw_uri(lake, cfg, name, self.ds) for name in cfg.sources]
        self.step_lineage.inputs = [lake_ref(uri) for uri in raw]
        section = {"features": cfg.features.model_dump(mode="json"),
                   "sources": {n: s.model_dump(mode="json") for n, s in cfg.sources.items()}}  # fmt: skip
        result = self.cached(
            context,
            lake,
            "features",
            lambda: fingerprint(lake, raw, section, {"ds": self.ds}),
            lambda r: [r["uri"], *([r["labels"]["uri"]] if r.get("labels") else [])],
            lambda: build_partitions(lake, cfg, self.ds),
        )
        labels = result.get("labels")
        self.step_lineage.outputs = [
            lake_ref(result["uri"], result["content_hash"]),
            *([lake_ref(labels["uri"], labels["content_hash"])] if labels else []),
        ]
        self.log.info("%s feature rows in %s (content hash %s)", result["rows"], result["uri"], result["content_hash"])
        if labels:
            self.log.info(
                "%s labels landed in %s (content hash %s)", labels["rows"], labels["uri"], labels["content_hash"]
            )
        for outlet in self.outlets:
            context["outlet_events"][outlet].extra = {"partition": self.ds, **result}
        return result
