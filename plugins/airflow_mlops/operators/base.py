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
    :param force_rerun: run a cached step even when its inputs did not change (also the DAG param `force_rerun`).
    """

    template_fields: Sequence[str] = ("pipeline", "ds")

    def __init__(
        self,
        *,
        pipeline: str,
        ds: str = "{{ ds }}",
        lake_conn_id: str | None = None,
        force_rerun: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.force_rerun = force_rerun
        self.cache_skipped = False
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

    def cached(
        self,
        context: Context,
        lake: Lake,
        step: str,
        fingerprint_of: Callable[[], str],
        outputs: Callable[[dict[str, Any]], Sequence[str]],
        run: Callable[[], dict[str, Any]],
        ds: str | None = None,
    ) -> dict[str, Any]:
        """`run()`, unless the record of the last successful run of this step and date has the same input
        fingerprint and its outputs exist: then that run's result, said so in the log. The DAG param
        `force_rerun` (or `force_rerun=True` on the operator) runs it whatever the record says."""
        from airflow_mlops.core.cache import run_cached

        force = self.force_rerun or bool((context.get("params") or {}).get("force_rerun"))
        day = ds or self.ds
        done = run_cached(lake, self.pipeline, step, day, fingerprint_of, outputs, run, force=force)
        self.cache_skipped = done.skipped
        if done.skipped:
            self.log.info(
                "Skipped %s of %s: its inputs, config and package are those of the run recorded at %s (fingerprint "
                "%s); its output is still there. Trigger with force_rerun to run it anyway.",
                step,
                day,
                done.recorded_at,
                done.fingerprint[:16],
            )
        elif force:
            self.log.info("Ran %s of %s: force_rerun", step, day)
        return done.result

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
    cache_step = "step"
    """The step's name in its cache records (`steps/<p>/<cache_step>_<source>/`)."""

    def __init__(self, *, source: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.source = source

    def input_uri(self, lake: Lake, cfg: PipelineConfig) -> str:
        """The lake file the step reads (its OpenLineage input)."""
        raise NotImplementedError

    def step_fingerprint(self, lake: Lake, cfg: PipelineConfig) -> str:
        """The fingerprint of what the step's result depends on (core.day_cache: the step cache's check of a
        whole day computes the same)."""
        raise NotImplementedError

    def run_step(
        self, step: Callable[..., Any], context: Context, outputs: Callable[[dict[str, Any]], Sequence[str]]
    ) -> dict[str, Any]:
        """Run `step(lake, cfg, source, ds, run_context)` (cached on `step_fingerprint`); a quarantined batch
        fails the task at once."""
        from dataclasses import asdict, is_dataclass

        from airflow_mlops.core.ingest.steps import BatchRejected
        from airflow_mlops.core.lake import paths
        from airflow_mlops.lineage import lake_ref

        cfg, lake = self.config_and_lake()
        source_uri = self.input_uri(lake, cfg)
        self.step_lineage.inputs = [lake_ref(source_uri)]
        self.step_lineage.failed_outputs = [lake_ref(lake.uri(paths.quarantine(cfg.name, self.source, self.ds)))]

        def run() -> dict[str, Any]:
            result = step(lake, cfg, self.source, self.ds, self.run_context(context))
            return asdict(result) if is_dataclass(result) and not isinstance(result, type) else dict(result)

        try:
            step_name, fingerprint_of = f"{self.cache_step}_{self.source}", lambda: self.step_fingerprint(lake, cfg)
            return self.cached(context, lake, step_name, fingerprint_of, outputs, run)
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
