"""Operators of the lifecycle: each calls one plain function of airflow_mlops.core on the lake."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops import settings
from airflow_mlops.links import ValidationReportLink

if TYPE_CHECKING:
    from airflow_mlops.config import PipelineConfig
    from airflow_mlops.core.storage import Lake


class PipelineOperator(BaseOperator):
    """Base of the operators working on one pipeline and logical date.

    :param pipeline: pipeline name; its config is read from include/pipelines at run time.
    :param ds: the logical date (YYYY-MM-DD) to work on (templated).
    :param lake_conn_id: Airflow connection of the lake; the deployment default if unset.
    """

    template_fields: Sequence[str] = ("pipeline", "ds")

    def __init__(self, *, pipeline: str, ds: str = "{{ ds }}", lake_conn_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pipeline = pipeline
        self.ds = ds
        self.lake_conn_id = lake_conn_id

    def config_and_lake(self) -> tuple[PipelineConfig, Lake]:
        from airflow_mlops.config import pipeline_by_name
        from airflow_mlops.hooks import LakeHook

        return pipeline_by_name(self.pipeline), LakeHook(
            lake_conn_id=self.lake_conn_id or settings.storage_conn_id()
        ).get_lake()

    @staticmethod
    def run_context(context: Context) -> dict[str, str]:
        """Who made an artefact: recorded in reports and quarantine."""
        ti = context["ti"]
        return {"dag_id": ti.dag_id, "run_id": ti.run_id, "task_id": ti.task_id, "try": str(ti.try_number)}


class IngestSourceOperator(PipelineOperator):
    """Copies the landing file of one source to raw/ as typed Parquet; an unreadable file is quarantined.

    :param source: source name in the pipeline config.
    """

    template_fields: Sequence[str] = ("pipeline", "source", "ds")

    def __init__(self, *, source: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.source = source

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.core.ingest_steps import BatchRejected, ingest_source

        cfg, lake = self.config_and_lake()
        try:
            result = ingest_source(lake, cfg, self.source, self.ds, self.run_context(context))
        except BatchRejected as exc:
            # Retrying cannot fix a bad file: fail now, loudly.
            raise AirflowFailException(str(exc)) from exc
        self.log.info("Wrote %s rows to %s (content hash %s)", result.rows, result.uri, result.content_hash)
        return result.to_dict()


class ValidateSourceOperator(PipelineOperator):
    """Validates the raw partition of one source with its Great Expectations suite.

    A failing batch is moved to quarantine/ with the result JSON and an HTML report, and the task
    fails naming every failed expectation. The task links to its report.

    :param source: source name in the pipeline config.
    """

    template_fields: Sequence[str] = ("pipeline", "source", "ds")
    operator_extra_links = (ValidationReportLink(),)

    def __init__(self, *, source: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.source = source

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.core.ingest_steps import BatchRejected, validate_source

        cfg, lake = self.config_and_lake()
        try:
            result = validate_source(lake, cfg, self.source, self.ds, self.run_context(context))
        except BatchRejected as exc:
            raise AirflowFailException(str(exc)) from exc
        self.log.info("%s rows of %s passed validation; report: %s", result["rows"], self.source, result["report_uri"])
        return result


class BuildFeaturesOperator(PipelineOperator):
    """Builds the feature partition of the logical date and publishes it on the pipeline's features Asset.

    The asset event carries the partition, row count, content hash and URI.
    """

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.core.ingest_steps import build_feature_partition

        cfg, lake = self.config_and_lake()
        result = build_feature_partition(lake, cfg, self.ds)
        self.log.info("Wrote %s feature rows to %s (content hash %s)", result.rows, result.uri, result.content_hash)
        for outlet in self.outlets:
            context["outlet_events"][outlet].extra = {"partition": self.ds, **result.to_dict()}
        return result.to_dict()
