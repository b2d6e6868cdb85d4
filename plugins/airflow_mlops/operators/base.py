"""Bases of the lifecycle operators: one pipeline and logical date, the lake, MLflow, permanent errors."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from airflow.sdk import BaseOperator, BaseOperatorLink, Context
from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops import settings
from airflow_mlops.errors import PermanentError
from airflow_mlops.lineage import StepLineage
from airflow_mlops.links import MlflowRunLink

T = TypeVar("T")

if TYPE_CHECKING:
    from airflow_mlops.config import PipelineConfig
    from airflow_mlops.core.lake.storage import Lake
    from airflow_mlops.core.registry.tracking import RunTags, Tracking


E = TypeVar("E", bound=Callable[..., Any])


def fail_without_retry(execute: E) -> E:
    """Wrap an `execute`: an error a retry cannot fix (PermanentError: a config or expression error, a feature
    build error, an unsafe or untrusted model type) fails the task at once instead of spending its retries."""

    @functools.wraps(execute)
    def wrapper(self: BaseOperator, context: Context, *args: Any, **kwargs: Any) -> Any:
        try:
            return execute(self, context, *args, **kwargs)
        except PermanentError as exc:
            raise AirflowFailException(f"{exc}\n(not retried: a retry cannot fix this)") from exc

    return wrapper  # type: ignore[return-value]


def given(value: Any) -> bool:
    """Whether a templated argument was set: an empty form field renders as None, or as '' / 'None' as text."""
    return value not in (None, "", "None")


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
        self.step_lineage = StepLineage()

    # Called by the OpenLineage provider's listener (when installed and configured) once the task ended.
    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """The datasets this run read and wrote (`step_lineage`, filled in by `execute`)."""
        return self.step_lineage.operator_lineage()

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        """What a failed run read, and what it left instead of its output (a quarantined batch, a rollback)."""
        return self.step_lineage.operator_lineage(failed=True)

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


class SourceOperator(PipelineOperator):
    """Base of the operators working on one source; a rejected batch fails the task without retries.

    :param source: source name in the pipeline config.
    """

    template_fields: Sequence[str] = ("pipeline", "source", "ds")

    def __init__(self, *, source: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.source = source

    def input_uri(self, lake: Lake, cfg: PipelineConfig) -> str:
        """The lake file the step reads (its OpenLineage input)."""
        raise NotImplementedError

    def run_step(self, step: Callable[..., T], context: Context) -> T:
        """Run `step(lake, cfg, source, ds, run_context)`; a quarantined batch fails the task at once."""
        from airflow_mlops.core.ingest.steps import BatchRejected
        from airflow_mlops.core.lake import paths
        from airflow_mlops.lineage import lake_ref

        cfg, lake = self.config_and_lake()
        self.step_lineage.inputs = [lake_ref(self.input_uri(lake, cfg))]
        self.step_lineage.failed_outputs = [lake_ref(lake.uri(paths.quarantine(cfg.name, self.source, self.ds)))]
        try:
            return step(lake, cfg, self.source, self.ds, self.run_context(context))
        except BatchRejected as exc:
            # Retrying cannot fix a bad batch: fail now, loudly.
            raise AirflowFailException(str(exc)) from exc


class MlflowPipelineOperator(PipelineOperator):
    """Base of the operators that log to MLflow: one MLflow run per DAG run.

    :param mlflow_conn_id: Airflow connection of the MLflow server; the deployment default if unset.
    """

    operator_extra_links: tuple[BaseOperatorLink, ...] = (MlflowRunLink(),)

    def __init__(self, *, mlflow_conn_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mlflow_conn_id = mlflow_conn_id
        self.mlflow_run_url: str | None = None
        self.tracking_uri = ""

    def tracking(self) -> Tracking:
        from airflow_mlops.hooks import MlflowHook

        tracking = MlflowHook(mlflow_conn_id=self.mlflow_conn_id).get_tracking()
        self.tracking_uri = tracking.tracking_uri  # the namespace of this run's model datasets
        return tracking

    def run_tags(self, context: Context) -> RunTags:
        from airflow_mlops.core.registry.tracking import RunTags

        ti = context["ti"]
        return RunTags(dag_id=ti.dag_id, run_id=ti.run_id, logical_date=self.ds, task=ti.task_id)
