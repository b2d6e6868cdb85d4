"""Operators of `<p>__deploy`: check the version, promote, smoke-test, roll back."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops.lineage import alias_ref, version_ref
from airflow_mlops.links import MlflowRunLink, ModelVersionLink
from airflow_mlops.operators.base import MlflowPipelineOperator, fail_without_retry, given

if TYPE_CHECKING:
    from airflow_mlops.config import PipelineConfig


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
        self.step_lineage.inputs = [version_ref(self.tracking_uri, ev["model_name"], ev["version"])]
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
        from airflow_mlops.core.registry.tracking import CHAMPION

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
        name, version = result["model_name"], str(result["version"])
        self.step_lineage.inputs = [version_ref(self.tracking_uri, name, version)]
        self.step_lineage.outputs = [alias_ref(self.tracking_uri, name, CHAMPION, version)]
        for outlet in self.outlets:  # the Asset `<p>.champion`
            context["outlet_events"][outlet].extra = champion_event(result, checked, context["ti"].run_id)
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
        tracking = self.tracking()
        self.step_lineage.inputs = [version_ref(self.tracking_uri, cfg.train.model_name(cfg.name), version)]
        sample = smoke_sample(lake, tracking, cfg, version, cfg.deploy.smoke.rows)
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
    until the model server serves it again and records the rollback. It succeeds, so that its event of the
    Asset `<p>.champion` (the restored version) is emitted; `deploy_failed` then fails the run naming why. A
    deployment that failed before its promotion changed nothing: this task fails at once."""

    @fail_without_retry
    def execute(self, context: Context) -> dict[str, Any]:
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
        rolled = rollback_step(tracking, cfg, version, before, self.who_for(context, why))
        restored = rolled["champion"]
        self.step_lineage.inputs = [version_ref(self.tracking_uri, name, version)]
        self.step_lineage.outputs = [alias_ref(self.tracking_uri, name, CHAMPION, restored)]
        served = self.wait_served(cfg, restored)
        message = (
            f"deploy of {name} v{version} failed: {why}. Rolled back: champion is "
            f"{'v' + str(restored) if restored else 'unset'}, the model server serves {served or 'nothing'}"
        )
        replaced = {"model_name": name, "version": restored, "replaced": version}
        for outlet in self.outlets:  # the Asset `<p>.champion`: what serves now
            event = champion_event(replaced, rolled["lineage"], context["ti"].run_id)
            context["outlet_events"][outlet].extra = event | {"rolled_back": version}
        self.log.error("%s", message)
        return {"message": message, "failed": version, "champion": restored}

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


def champion_event(promoted: dict[str, Any], checked: dict[str, Any], dag_run_id: str) -> dict[str, Any]:
    """The extra of an event of the Asset `<p>.champion`: the version (None: no champion any more), what it
    replaced, its data and runs."""
    version = promoted["version"]
    return {
        "model_name": promoted["model_name"],
        "version": str(version) if version is not None else None,
        "model_uri": f"models:/{promoted['model_name']}/{version}" if version is not None else None,
        "replaced": promoted["replaced"],
        "content_hash": checked.get("content_hash"),
        "window": checked.get("window"),
        "partitions": checked.get("partitions"),
        "mlflow_run_id": checked.get("mlflow_run_id"),
        "train_dag_run_id": checked.get("train_dag_run_id"),
        "dag_run_id": dag_run_id,
    }


class DeployFailedOperator(BaseOperator):
    """Fails the `<p>__deploy` run after a rollback, with the rollback's account of why (never retried).

    :param rollback_task_id: the rollback task whose result holds the message.
    """

    def __init__(self, *, rollback_task_id: str = "rollback", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rollback_task_id = rollback_task_id

    def execute(self, context: Context) -> None:
        rolled = context["ti"].xcom_pull(task_ids=self.rollback_task_id) or {}
        raise AirflowFailException(str(rolled.get("message") or "the deployment failed and was rolled back"))
