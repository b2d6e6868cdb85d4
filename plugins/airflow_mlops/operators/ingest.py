"""Operators of `<p>__ingest`: landing to raw, validation with quarantine, the feature partition."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import Context

from airflow_mlops.lineage import lake_ref
from airflow_mlops.links import ValidationReportLink
from airflow_mlops.operators.base import MlflowPipelineOperator, PipelineOperator, SourceOperator, fail_without_retry

if TYPE_CHECKING:
    from airflow_mlops.config import PipelineConfig
    from airflow_mlops.core.lake.storage import Lake


class IngestSourceOperator(SourceOperator):
    """Copies the landing file of one source to raw/ as typed Parquet; an unreadable file is quarantined."""

    cache_step = "ingest"

    def input_uri(self, lake: Lake, cfg: PipelineConfig) -> str:
        from airflow_mlops.core.ingest.steps import landing_uri

        return landing_uri(lake, cfg, self.source, self.ds)

    def step_fingerprint(self, lake: Lake, cfg: PipelineConfig) -> str:
        from airflow_mlops.core.day_cache import ingest_fingerprint

        return ingest_fingerprint(lake, cfg, self.source, self.ds)

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

    def step_fingerprint(self, lake: Lake, cfg: PipelineConfig) -> str:
        from airflow_mlops.core.day_cache import validate_fingerprint

        return validate_fingerprint(lake, cfg, self.source, self.ds)

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
        from airflow_mlops.core.day_cache import features_fingerprint
        from airflow_mlops.core.ingest.steps import build_partitions, raw_uri

        cfg, lake = self.config_and_lake()
        self.step_lineage.inputs = [lake_ref(raw_uri(lake, cfg, name, self.ds)) for name in cfg.sources]
        result = self.cached(
            context,
            lake,
            "features",
            lambda: features_fingerprint(lake, cfg, self.ds),
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


class CachedDayOperator(MlflowPipelineOperator):
    """First task of `<p>__ingest`: when a rerun of the logical date has nothing to do, the run ends here.

    In process, it looks up the step records of everything one run of the date sets going (each source's ingest
    and validation, the feature partition, the score and the monitor its asset events trigger; core.day_cache),
    each fingerprint computed as that step would compute it. When all of them are hits and the run is not
    forced, every other task of the run is skipped without starting: the earlier outputs stand (listed in the
    log and in this task's XCom), and, as `build_features` does not run, no asset event triggers score and
    monitor again. Otherwise the tasks run, and each consults its own record. A check that cannot decide (say
    MLflow is down) lets them run.
    """

    operator_extra_links = ()  # it logs to no MLflow run (MLflow only answers which version is champion)

    @fail_without_retry
    def execute(self, context: Context) -> dict[str, Any]:
        import functools

        from airflow.sdk.exceptions import DownstreamTasksSkipped

        from airflow_mlops.core.day_cache import check_day
        from airflow_mlops.core.registry.tracking import CHAMPION
        from airflow_mlops.operators.monitor import MonitorOperator

        if self.force_rerun or bool((context.get("params") or {}).get("force_rerun")):
            self.log.info("force_rerun: every step of %s runs, whatever its record says", self.ds)
            return {"cached": False, "first_to_run": None, "why": "force_rerun", "steps": []}
        cfg, lake = self.config_and_lake()

        @functools.cache
        def champion() -> str | None:
            return self.tracking().alias_version(cfg.train.model_name(cfg.name), CHAMPION)

        check = check_day(lake, cfg, self.ds, champion, lambda: MonitorOperator.train_active(context, cfg))
        summary = check.summary()
        if not check.all_hit:
            self.log.info(
                "The run of %s has work: %s runs (%s); %d step(s) before it skip themselves from their records.",
                self.ds,
                check.miss,
                check.reason,
                len(check.hits),
            )
            return summary
        for hit in check.hits:
            self.log.info(
                "Cached: %s of %s, run at %s (fingerprint %s): %s",
                hit.step,
                hit.ds,
                hit.recorded_at,
                hit.fingerprint[:16],
                ", ".join(hit.outputs) or "no output file",
            )
        skipped = sorted(self.get_flat_relative_ids(upstream=False))
        self.log.info(
            "Every step of %s is cached (same inputs, config and package; outputs there): skipping %s. "
            "No asset event: score and monitor do not run again. Trigger with force_rerun to run them anyway.",
            self.ds,
            ", ".join(skipped),
        )
        # The return value of a task that skips its downstream is not pushed: push it here, for the UI's XCom tab.
        context["ti"].xcom_push(key="return_value", value=summary)
        raise DownstreamTasksSkipped(tasks=skipped)  # type: ignore[no-untyped-call]  # untyped in the SDK
