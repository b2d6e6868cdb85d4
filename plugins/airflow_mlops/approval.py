"""The deploy DAG's approval step: Airflow's HITL ApprovalOperator, asked when needed and kept as an audit record."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLOperator
from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

if TYPE_CHECKING:
    from airflow_mlops.config import PipelineConfig


class DeployApprovalOperator(ApprovalOperator):
    """Asks a human in Airflow (Required actions) to approve the version before it becomes champion.

    Whether to ask is decided at run time: always for a version registered with force (version tag
    `mlops.force_by`), whatever `deploy.approval.required` says, and for every version when that setting is
    on; otherwise the task skips and the promotion goes ahead. The user who forced the version cannot
    approve it: they are left out of the assigned users (`deploy.approval.approvers`), and an approval they
    give anyway (no approvers configured) is refused. An approval tags the version `mlops.approved_by` with
    the approver's user name; an approval, a rejection, a refused self-approval and an unanswered request
    (`deploy.approval.timeout_minutes`) are audit records on the registered model. Anything but an approval
    fails the task, without retries, so the deploy run ends failed and nothing is promoted.

    :param pipeline: pipeline name; its config is read at run time.
    :param check_task_id: task whose result names the version, its champion and who forced it.
    :param mlflow_conn_id: Airflow connection of the MLflow server; the deployment default if unset.
    """

    template_fields: Sequence[str] = ("subject", "body", "pipeline")

    def __init__(
        self,
        *,
        pipeline: str,
        check_task_id: str = "check_version",
        mlflow_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("retries", 0)  # a retry would ask again after a timeout: an unanswered request is a no
        super().__init__(**kwargs)
        self.pipeline = pipeline
        self.check_task_id = check_task_id
        self.mlflow_conn_id = mlflow_conn_id

    def _config(self) -> PipelineConfig:
        from airflow_mlops.config import pipeline_by_name

        return pipeline_by_name(self.pipeline)

    def _checked(self, context: Context) -> dict[str, Any]:
        return dict(context["ti"].xcom_pull(task_ids=self.check_task_id) or {})

    def execute(self, context: Context) -> Any:
        from airflow_mlops.core.deploy.steps import approval_reason, same_user

        cfg = self._config()
        checked = self._checked(context)
        forced_by = checked.get("forced_by")
        needed = approval_reason(cfg, forced_by)
        if needed is None:
            raise AirflowSkipException("no approval needed: the version passed its gates and approval is not required")
        configured = cfg.deploy.approval.approvers
        approvers = [user for user in configured if not same_user(user, forced_by)]
        if configured and not approvers:
            raise AirflowFailException(
                f"v{checked.get('version')} needs an approval ({needed}), but the only approver in "
                f"deploy.approval.approvers is {forced_by}, who forced it: add another user"
            )
        # Read at run time: the config may have changed since the DAG was parsed.
        self.assigned_users = [{"id": user, "name": user} for user in approvers] or None
        self.response_timeout = timedelta(minutes=cfg.deploy.approval.timeout_minutes)
        self.log.info("Asking for an approval of v%s: %s", checked.get("version"), needed)
        return super().execute(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        from airflow_mlops.core.deploy.steps import same_user
        from airflow_mlops.core.registry.promotion import record_decision
        from airflow_mlops.hooks import MlflowHook

        cfg = self._config()
        checked = self._checked(context)
        version, forced_by = str(checked["version"]), checked.get("forced_by")
        name = cfg.train.model_name(cfg.name)
        tracking = MlflowHook(self.mlflow_conn_id).get_tracking()
        run_id = context["ti"].run_id

        def refuse(who: str, why: str) -> AirflowFailException:
            record_decision(tracking, name, version, False, who=who, why=why, dag_run_id=run_id)
            return AirflowFailException(f"{name} v{version} not promoted: {why}")

        if event.get("error_type") == "timeout":
            minutes = cfg.deploy.approval.timeout_minutes
            raise refuse("nobody", f"the approval request was not answered within {minutes:g} minutes")
        answer = HITLOperator.execute_complete(self, context=context, event=event)  # validates; raises on errors
        user = answer.get("responded_by_user") or {}
        by, by_id = str(user.get("name") or ""), str(user.get("id") or "")
        approved = list(answer["chosen_options"]) == [self.APPROVE]
        self.hitl_summary_extra["approved"] = approved
        if not approved:
            raise refuse(by, f"rejected in Airflow by {by}")
        if not by:
            raise refuse("nobody", "the approval names no user")
        if same_user(by, forced_by) or same_user(by_id, forced_by):
            raise refuse(by, f"refused the approval of {by}, who forced v{version} past its gates: another user must")
        record_decision(tracking, name, version, True, who=by, why=f"approved in Airflow by {by}", dag_run_id=run_id)
        self.log.info("%s v%s approved by %s", name, version, by)
        return {"approved": True, "by": by, "by_id": by_id, "version": version}
