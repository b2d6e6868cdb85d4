"""Operators of the lifecycle: each calls one plain function of airflow_mlops.core on the lake."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from airflow.sdk import BaseOperator, BaseOperatorLink, Context
from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops import settings
from airflow_mlops.links import MlflowRunLink, ModelVersionLink, ValidationReportLink

T = TypeVar("T")

if TYPE_CHECKING:
    from airflow_mlops.config import PipelineConfig
    from airflow_mlops.core.storage import Lake
    from airflow_mlops.core.tracking import RunTags, Tracking


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

    def run_step(self, step: Callable[..., T], context: Context) -> T:
        """Run `step(lake, cfg, source, ds, run_context)`; a quarantined batch fails the task at once."""
        from airflow_mlops.core.ingest_steps import BatchRejected

        cfg, lake = self.config_and_lake()
        try:
            return step(lake, cfg, self.source, self.ds, self.run_context(context))
        except BatchRejected as exc:
            # Retrying cannot fix a bad batch: fail now, loudly.
            raise AirflowFailException(str(exc)) from exc


class IngestSourceOperator(SourceOperator):
    """Copies the landing file of one source to raw/ as typed Parquet; an unreadable file is quarantined."""

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.core.ingest_steps import ingest_source

        result = self.run_step(ingest_source, context)
        self.log.info("Wrote %s rows to %s (content hash %s)", result.rows, result.uri, result.content_hash)
        return result.to_dict()


class ValidateSourceOperator(SourceOperator):
    """Validates the raw partition of one source with its Great Expectations suite.

    A failing batch is moved to quarantine/ with the result JSON and an HTML report, and the task
    fails naming every failed expectation. The task links to its report.
    """

    operator_extra_links = (ValidationReportLink(),)

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.core.ingest_steps import validate_source

        result = self.run_step(validate_source, context)
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


class MlflowPipelineOperator(PipelineOperator):
    """Base of the operators that log to MLflow: one MLflow run per DAG run.

    :param mlflow_conn_id: Airflow connection of the MLflow server; the deployment default if unset.
    """

    operator_extra_links: tuple[BaseOperatorLink, ...] = (MlflowRunLink(),)

    def __init__(self, *, mlflow_conn_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mlflow_conn_id = mlflow_conn_id
        self.mlflow_run_url: str | None = None

    def tracking(self) -> Tracking:
        from airflow_mlops.hooks import MlflowHook

        return MlflowHook(mlflow_conn_id=self.mlflow_conn_id).get_tracking()

    def run_tags(self, context: Context) -> RunTags:
        from airflow_mlops.core.tracking import RunTags

        ti = context["ti"]
        return RunTags(dag_id=ti.dag_id, run_id=ti.run_id, logical_date=self.ds, task=ti.task_id)


class TrainModelOperator(MlflowPipelineOperator):
    """Fits the pipeline's model on the training window and logs data, params and model to MLflow.

    :param end_ds: last day of the window (templated; default the logical date).
    :param window_days: days of features up to end_ds (templated; default the config's train.window_days).
    :param reason: why this training runs, recorded on the MLflow run (templated).
    """

    template_fields: Sequence[str] = ("pipeline", "ds", "end_ds", "window_days", "reason")

    def __init__(
        self, *, end_ds: str | None = None, window_days: int | str | None = None, reason: str = "", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.end_ds = end_ds
        self.window_days = window_days
        self.reason = reason

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.core.train_steps import train_step

        cfg, lake = self.config_and_lake()
        window_days = int(str(self.window_days)) if given(self.window_days) else cfg.train.window_days
        end_ds = str(self.end_ds) if given(self.end_ds) else self.ds
        tracking = self.tracking()
        result = train_step(lake, cfg, tracking, self.run_tags(context), end_ds, window_days, str(self.reason or ""))
        self.mlflow_run_url = result["mlflow_run_url"]
        self.log.info(
            "Trained on %s (%s days up to %s): %s",
            result["data"]["content_hash"],
            window_days,
            end_ds,
            result["model_uri"],
        )
        return result


class EvaluateModelOperator(MlflowPipelineOperator):
    """Scores the challenger and the current champion on the same holdout and applies the gates.

    :param train_task_id: task whose result names the model and the window.
    :param force: register the challenger as `challenger` whatever the gates say (templated).
    :param force_reason: why; required with force, recorded with who triggered the run (templated).
    """

    template_fields: Sequence[str] = ("pipeline", "ds", "force", "force_reason")

    def __init__(
        self, *, train_task_id: str = "train", force: bool | str = False, force_reason: str = "", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.train_task_id = train_task_id
        self.force = force
        self.force_reason = force_reason

    def force_request(self, context: Context) -> Any:
        from airflow_mlops.core.training import ForceRequest

        if str(self.force).lower() not in ("true", "1", "yes"):
            return None
        if not str(self.force_reason or "").strip():
            raise AirflowFailException("force is set but force_reason is empty: say why the gates are overridden")
        who = getattr(context.get("dag_run"), "triggering_user_name", None) or "unknown"
        return ForceRequest(by=str(who), reason=str(self.force_reason))

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.core.train_steps import evaluate_step

        cfg, lake = self.config_and_lake()
        trained = context["ti"].xcom_pull(task_ids=self.train_task_id)
        result = evaluate_step(lake, cfg, self.tracking(), self.run_tags(context), trained, self.force_request(context))
        self.mlflow_run_url = result["mlflow_run_url"]
        decision = result["decision"]
        self.log.info("Gate outcome: %s (%s)", decision["outcome"], decision["reason"])
        return result


class RegisterModelOperator(MlflowPipelineOperator):
    """Registers the model version with its model card and lineage; alias `challenger` only if it passed.

    A version that fails a gate is registered without alias and tagged with why; the task succeeds and
    returns `promoted: false`, so nothing downstream deploys it.

    :param train_task_id: task whose result names the model and the window.
    :param evaluate_task_id: task whose result holds the evaluations and the gate decision.
    """

    operator_extra_links = (MlflowRunLink(), ModelVersionLink())

    def __init__(self, *, train_task_id: str = "train", evaluate_task_id: str = "evaluate", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.train_task_id = train_task_id
        self.evaluate_task_id = evaluate_task_id
        self.model_version_url: str | None = None

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.sdk import conf

        from airflow_mlops.core.train_steps import register_step

        cfg, _ = self.config_and_lake()
        ti = context["ti"]
        trained = ti.xcom_pull(task_ids=self.train_task_id)
        evaluated = ti.xcom_pull(task_ids=self.evaluate_task_id)
        base = conf.get("api", "base_url", fallback="http://localhost:8080").rstrip("/")
        airflow_url = f"{base}/dags/{ti.dag_id}/runs/{ti.run_id}"
        result = register_step(cfg, self.tracking(), self.run_tags(context), trained, evaluated, airflow_url)
        self.mlflow_run_url, self.model_version_url = result["mlflow_run_url"], result["version_url"]
        self.log.info(
            "Model %s version %s (%s): %s", result["model_name"], result["version"], result["outcome"], result["reason"]
        )
        return result


class ScorePartitionsOperator(MlflowPipelineOperator):
    """Writes the champion's batch predictions for feature partitions to predictions/, with the version.

    Scores `ds` when it is set; otherwise every partition named by the asset events that triggered
    the run (several ingests may land in one asset-triggered run). No champion yet: the task skips.
    """

    def execute(self, context: Context) -> list[dict[str, Any]]:
        from airflow.sdk.exceptions import AirflowSkipException

        from airflow_mlops.core.score_steps import NoChampion, score_partition

        dates = [str(self.ds)] if given(self.ds) else self.triggered_partitions(context)
        if not dates:
            raise AirflowFailException("nothing to score: no `partition` given and no features asset event")
        cfg, lake = self.config_and_lake()
        tracking = self.tracking()
        results = []
        for ds in dates:
            try:
                result = score_partition(lake, cfg, tracking, ds)
            except NoChampion as exc:
                raise AirflowSkipException(str(exc)) from exc
            self.log.info(
                "Scored %s rows of %s with version %s: %s", result["rows"], ds, result["model_version"], result["uri"]
            )
            results.append(result)
        return results

    @staticmethod
    def triggered_partitions(context: Context) -> list[str]:
        events = context.get("triggering_asset_events") or {}
        return sorted(
            {str(e.extra["partition"]) for evs in events.values() for e in evs if "partition" in (e.extra or {})}
        )
