"""Operators of the lifecycle: each calls one plain function of airflow_mlops.core on the lake."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from airflow.sdk import BaseOperator, BaseOperatorLink, Context
from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops import settings
from airflow_mlops.errors import PermanentError
from airflow_mlops.links import DriftReportLink, MlflowRunLink, ModelVersionLink, ValidationReportLink

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
        from airflow_mlops.core.ingest.steps import BatchRejected

        cfg, lake = self.config_and_lake()
        try:
            return step(lake, cfg, self.source, self.ds, self.run_context(context))
        except BatchRejected as exc:
            # Retrying cannot fix a bad batch: fail now, loudly.
            raise AirflowFailException(str(exc)) from exc


class IngestSourceOperator(SourceOperator):
    """Copies the landing file of one source to raw/ as typed Parquet; an unreadable file is quarantined."""

    @fail_without_retry
    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.core.ingest.steps import ingest_source

        result = self.run_step(ingest_source, context)
        self.log.info("Wrote %s rows to %s (content hash %s)", result.rows, result.uri, result.content_hash)
        return result.to_dict()


class ValidateSourceOperator(SourceOperator):
    """Validates the raw partition of one source with its Great Expectations suite.

    A failing batch is moved to quarantine/ with the result JSON and an HTML report, and the task
    fails naming every failed expectation. The task links to its report.
    """

    operator_extra_links = (ValidationReportLink(),)

    @fail_without_retry
    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.core.ingest.steps import validate_source

        result = self.run_step(validate_source, context)
        self.log.info("%s rows of %s passed validation; report: %s", result["rows"], self.source, result["report_uri"])
        return result


class BuildFeaturesOperator(PipelineOperator):
    """Builds the feature partition of the logical date and publishes it on the pipeline's features Asset.

    The asset event carries the partition, row count, content hash and URI.
    """

    @fail_without_retry
    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.core.ingest.steps import build_feature_partition

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
        from airflow_mlops.core.registry.tracking import RunTags

        ti = context["ti"]
        return RunTags(dag_id=ti.dag_id, run_id=ti.run_id, logical_date=self.ds, task=ti.task_id)


class TrainModelOperator(MlflowPipelineOperator):
    """Fits the pipeline's model on the training window and logs data, params and model to MLflow.

    :param end_ds: last day of the window (templated; default the run's date, at most the pipeline's end_date).
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

    @fail_without_retry
    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.core.train.steps import train_step

        cfg, lake = self.config_and_lake()
        window_days = int(str(self.window_days)) if given(self.window_days) else cfg.train.window_days
        end_ds = str(self.end_ds) if given(self.end_ds) else self.ds
        if not given(self.end_ds) and cfg.end_date is not None and end_ds > cfg.end_date.isoformat():
            # A run dated after the pipeline's end (the trigger form proposes now): no data comes after the end, so
            # the newest window is the one ending on the last day (the train DAG has no end_date: see factory).
            self.log.info("The run's date %s is after the pipeline's end_date: window up to %s", end_ds, cfg.end_date)
            end_ds = cfg.end_date.isoformat()
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
        from airflow_mlops.core.train.evaluation import ForceRequest

        if str(self.force).lower() not in ("true", "1", "yes"):
            return None
        if not given(self.force_reason) or not str(self.force_reason).strip():
            raise AirflowFailException("force is set but force_reason is empty: say why the gates are overridden")
        who = getattr(context.get("dag_run"), "triggering_user_name", None) or "unknown"
        return ForceRequest(by=str(who), reason=str(self.force_reason))

    @fail_without_retry
    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.core.train.steps import evaluate_step

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

    @fail_without_retry
    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.sdk import conf

        from airflow_mlops.core.train.steps import register_step

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
    """Writes the champion's batch predictions for feature partitions to predictions/, with the version, and
    publishes the newest partition on its outlets (the Asset `<p>.predictions`).

    Scores `ds` when it is set; otherwise every partition named by the asset events that triggered
    the run (several ingests may land in one asset-triggered run). No champion yet: the task skips.
    """

    @fail_without_retry
    def execute(self, context: Context) -> list[dict[str, Any]]:
        from airflow.sdk.exceptions import AirflowSkipException

        from airflow_mlops.core.score import NoChampion, score_partition

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
        for outlet in self.outlets:  # the monitor follows the newest scored partition
            extra: dict[str, Any] = {"partition": dates[-1], "partitions": dates}
            context["outlet_events"][outlet].extra = extra
        return results

    @staticmethod
    def triggered_partitions(context: Context) -> list[str]:
        events = context.get("triggering_asset_events") or {}
        return sorted(
            {str(e.extra["partition"]) for evs in events.values() for e in evs if "partition" in (e.extra or {})}
        )


class DeployOperator(MlflowPipelineOperator):
    """Base of the `<p>__deploy` steps: the version comes from the `check_version` task.

    :param model_server_conn_id: Airflow connection of the model server; the deployment default if unset.
    :param check_task_id: task whose result names the version and the champion before the deployment.
    """

    operator_extra_links = (MlflowRunLink(), ModelVersionLink())

    def __init__(
        self, *, model_server_conn_id: str | None = None, check_task_id: str = "check_version", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.model_server_conn_id = model_server_conn_id
        self.check_task_id = check_task_id
        self.model_version_url: str | None = None

    def checked(self, context: Context) -> dict[str, Any]:
        """The `check_version` result: version, champion_before, evidence."""
        return dict(context["ti"].xcom_pull(task_ids=self.check_task_id))

    def server(self) -> Any:
        from airflow_mlops.hooks import ModelServerHook

        return ModelServerHook(self.model_server_conn_id)

    @staticmethod
    def who(context: Context) -> Any:
        """Who asked (the triggering user, or the DAG run that triggered this one), why, and this DAG run."""
        from airflow_mlops.core.deploy.steps import Who

        dag_run = context["dag_run"]
        conf = dict(getattr(dag_run, "conf", None) or {})
        who = getattr(dag_run, "triggering_user_name", None) or conf.get("requested_by") or "unknown"
        why = str(context["params"].get("reason") or conf.get("reason") or "manual")
        return Who(who=str(who), why=why, dag_run_id=context["ti"].run_id)


class CheckVersionOperator(DeployOperator):
    """Resolves the version to deploy (given, else the `challenger`), refuses one that must not go out, and
    gathers the evidence for the approval form (metrics against the champion, gates, links).

    :param version: model version to deploy (templated); empty: the current `challenger`.
    """

    template_fields: Sequence[str] = ("pipeline", "version")

    def __init__(self, *, version: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.version = version

    @fail_without_retry
    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.core.deploy.steps import DeployRefused, evidence, evidence_markdown
        from airflow_mlops.links import lake_file_url, lifecycle_url

        cfg, _ = self.config_and_lake()
        try:
            ev = evidence(self.tracking(), cfg, str(self.version) if given(self.version) else None)
        except DeployRefused as exc:
            raise AirflowFailException(str(exc)) from exc
        self.model_version_url, self.mlflow_run_url = ev["version_url"], ev["training_run_url"]
        drift = ev.get("drift_at_training") or {}
        ev["links"] = {"Lifecycle page": lifecycle_url(cfg.name)}
        if drift.get("report"):
            ev["links"]["Drift report before training"] = lake_file_url(drift["report"])
        self.log.info("Deploying %s v%s (champion now: %s)", ev["model_name"], ev["version"], ev["champion_before"])
        return {**ev, "markdown": evidence_markdown(ev)}


class PromoteModelOperator(DeployOperator):
    """Makes the version `champion` (the old champion becomes `previous`), records who and why on the
    registered model, and asks the model server to pick it up. A version that needs a human approval (forced,
    or `deploy.approval.required`) is refused unless the approval task approved it in this DAG run.

    :param approve_task_id: the approval task whose result names the approver.
    """

    def __init__(self, *, approve_task_id: str = "approve", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.approve_task_id = approve_task_id

    @fail_without_retry
    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.core.deploy.steps import Approval, DeployRefused, promote_step

        cfg, _ = self.config_and_lake()
        checked = self.checked(context)
        answer = context["ti"].xcom_pull(task_ids=self.approve_task_id) or {}
        approval = Approval(str(answer["by"]), str(answer.get("by_id") or "")) if answer.get("approved") else None
        try:
            result = promote_step(self.tracking(), cfg, checked["version"], self.who(context), approval)
        except DeployRefused as exc:
            raise AirflowFailException(str(exc)) from exc
        self.model_version_url = result["version_url"]
        self.log.info("%s v%s is champion (replaced: %s)", result["model_name"], result["version"], result["replaced"])
        try:
            self.server().reload()
        except Exception as exc:  # the server also polls the alias; the sensor decides
            self.log.warning("Could not ask the model server to reload now (%s); it picks the alias up on its own", exc)
        return result


class SmokeTestOperator(DeployOperator):
    """Sends holdout rows of the version's training window to the model server: the right version answers,
    one prediction per row equal to the offline one, single-row p99 within budget. Fails without retries."""

    @fail_without_retry
    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.core.deploy.steps import run_smoke_test, smoke_sample

        cfg, lake = self.config_and_lake()
        version = self.checked(context)["version"]
        sample = smoke_sample(lake, self.tracking(), cfg, version, cfg.deploy.smoke.rows)
        try:
            with self.server().predictor(cfg.name) as predict:
                result = run_smoke_test(sample, predict, version, cfg)
        except Exception as exc:  # a refused request is a failed smoke test, not a reason to retry
            raise AirflowFailException(f"smoke test of v{version} could not run: {exc}") from exc
        outcome = {"passed": result.passed, "summary": result.summary(), "p99_ms": result.p99_ms,
                   "max_abs_diff": result.max_abs_diff, "problems": result.problems}  # fmt: skip
        context["ti"].xcom_push(key="smoke", value=outcome)
        if not result.passed:
            raise AirflowFailException(result.summary())
        self.log.info("%s", result.summary())
        return outcome


class RollbackOperator(DeployOperator):
    """Runs when a deploy step failed: puts `champion` back on the version this run's promotion replaced, waits
    until the model server serves it again, records the rollback, and fails the run naming why."""

    @fail_without_retry
    def execute(self, context: Context) -> None:
        from airflow_mlops.core.deploy.steps import rollback_step
        from airflow_mlops.core.registry.tracking import CHAMPION

        cfg, _ = self.config_and_lake()
        checked = context["ti"].xcom_pull(task_ids=self.check_task_id)
        if not checked:
            raise AirflowFailException("deploy failed before a version was chosen: nothing was promoted")
        version, before = str(checked["version"]), checked["champion_before"]
        why = self.failure_reason(context, cfg.name, version)
        tracking = self.tracking()
        name = cfg.train.model_name(cfg.name)
        if tracking.alias_version(name, CHAMPION) != version:
            raise AirflowFailException(
                f"deploy of {name} v{version} failed before promotion ({why}); champion unchanged"
            )
        # The champion this run's promotion replaced (recorded then), else the one seen when the run started.
        restored = rollback_step(tracking, cfg, version, before, self.who_for(context, why))["champion"]
        served = self.wait_served(cfg, restored)
        raise AirflowFailException(
            f"deploy of {name} v{version} failed: {why}. Rolled back: champion is "
            f"{'v' + str(restored) if restored else 'unset'}, the model server serves {served or 'nothing'}"
        )

    def who_for(self, context: Context, why: str) -> Any:
        from dataclasses import replace

        return replace(self.who(context), why=why)

    def failure_reason(self, context: Context, pipeline: str, version: str) -> str:
        """Why the deployment failed: the smoke test's problems, the server's refusal, or the failed tasks."""
        smoke = context["ti"].xcom_pull(task_ids="smoke_test", key="smoke")
        if smoke and not smoke.get("passed"):
            return str(smoke["summary"])
        server = self.server()
        try:
            entry = server.pipeline_entry(server.request("GET", "/version"), pipeline)
        except Exception as exc:
            entry = {"error": f"model server unreachable: {exc}"}
        if str(entry.get("failed_version")) == version:
            return f"the model server refused v{version}: {entry.get('error')}"
        failed = self.failed_tasks(context)
        if str(entry.get("version")) != version:
            return f"the model server did not serve v{version} (serves {entry.get('version')}); failed: {failed}"
        return f"failed task(s): {failed}"

    def failed_tasks(self, context: Context) -> str:
        ti = context["ti"]
        try:
            states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id]).get(ti.run_id, {})
        except Exception:  # informative only
            return "see the task states"
        return ", ".join(sorted(t for t, s in states.items() if s in ("failed", "upstream_failed"))) or "unknown"

    def wait_served(self, cfg: PipelineConfig, version: str | None) -> str | None:
        """Ask the server to reload and wait (bounded) until it serves `version`; returns what it serves."""
        import time

        hook = self.server()
        deadline = time.monotonic() + cfg.deploy.serve_timeout_seconds
        served: str | None = None
        while True:
            try:
                served = hook.served_version(hook.reload(), cfg.name)
            except Exception as exc:
                self.log.warning("Model server: %s", exc)
            if version is None or served == str(version) or time.monotonic() > deadline:
                return served
            time.sleep(cfg.deploy.poke_interval_seconds)


class MonitorOperator(MlflowPipelineOperator):
    """Drift of recent production inputs against the champion's reference sample, quality on matured labels,
    an HTML report, figures in MLflow, an alert when a threshold is crossed; returns whether to retrain.

    Works on `ds` when set (the trigger form), else on the newest partition of the asset events that
    triggered the run, else the run's date. No retrain is asked for while a `<p>__train` run is active.
    """

    operator_extra_links = (MlflowRunLink(), DriftReportLink())

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.report_url: str | None = None

    def monitored_date(self, context: Context) -> str:
        if given(self.ds):
            return str(self.ds)
        partitions = ScorePartitionsOperator.triggered_partitions(context)
        if partitions:
            return partitions[-1]
        dag_run = context["dag_run"]
        when = getattr(dag_run, "logical_date", None) or dag_run.run_after
        return when.strftime("%Y-%m-%d")

    def train_active(self, context: Context, cfg: PipelineConfig) -> bool:
        ti = context["ti"]
        return bool(ti.get_dr_count(dag_id=cfg.dag_id("train"), states=["queued", "running"]))

    @fail_without_retry
    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.core.lake import paths
        from airflow_mlops.core.monitor.monitor import monitor_step
        from airflow_mlops.links import airflow_ui_url, lake_file_url, lifecycle_url
        from airflow_mlops.notifiers import MonitorAlertNotifier

        cfg, lake = self.config_and_lake()
        self.ds = self.monitored_date(context)
        tracking = self.tracking()
        ti = context["ti"]
        links = {"DAG run": airflow_ui_url(ti.dag_id, ti.run_id), "Lifecycle": lifecycle_url(cfg.name)}
        result = monitor_step(
            lake, cfg, tracking, self.run_tags(context), self.ds, self.train_active(context, cfg), links
        )
        self.mlflow_run_url = result.get("mlflow_run_url")
        if result.get("report_uri"):
            self.report_url = lake_file_url(paths.monitor_report(cfg.name, self.ds))
        self.log.info("Monitor of %s on %s: %s", cfg.name, self.ds, result["outcome"])
        for reason in result.get("reasons", []):
            self.log.info("  %s", reason)
        if result.get("alarms"):
            alerts = cfg.monitor.alerts
            alert = {key: result.get(key) for key in ("outcome", "reasons", "retrain", "champion_version")}
            notifier = MonitorAlertNotifier(
                pipeline=cfg.name,
                alert={**alert, "date": self.ds, "report_url": self.report_url},
                email=alerts.email,
                webhook_conn_id=alerts.webhook_conn_id,
            )
            notifier(context)
        return {**result, "date": self.ds, "report_url": self.report_url}
