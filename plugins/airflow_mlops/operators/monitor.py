"""Operator of `<p>__monitor`: drift and quality of the champion in production, alerts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import Context

from airflow_mlops.lineage import lake_ref, version_ref
from airflow_mlops.links import DriftReportLink, MlflowRunLink
from airflow_mlops.operators.base import MlflowPipelineOperator, fail_without_retry, given
from airflow_mlops.operators.train import ScorePartitionsOperator

if TYPE_CHECKING:
    from airflow_mlops.config import PipelineConfig


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

    @staticmethod
    def train_active(context: Context, cfg: PipelineConfig) -> bool:
        """Whether a `<p>__train` run is queued or running (the monitor then asks for no retrain)."""
        ti = context["ti"]
        return bool(ti.get_dr_count(dag_id=cfg.dag_id("train"), states=["queued", "running"]))

    @fail_without_retry
    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.core.day_cache import monitor_fingerprint
        from airflow_mlops.core.lake import paths
        from airflow_mlops.core.monitor.current import window_days
        from airflow_mlops.core.monitor.monitor import monitor_step
        from airflow_mlops.core.registry.tracking import CHAMPION
        from airflow_mlops.links import airflow_ui_url, lake_file_url, lifecycle_url
        from airflow_mlops.notifiers import MonitorAlertNotifier

        cfg, lake = self.config_and_lake()
        self.ds = self.monitored_date(context)
        tracking = self.tracking()
        name, ds, tags = cfg.train.model_name(cfg.name), self.ds, self.run_tags(context)
        train_active = self.train_active(context, cfg)
        ti = context["ti"]
        links = {"DAG run": airflow_ui_url(ti.dag_id, ti.run_id), "Lifecycle": lifecycle_url(cfg.name)}
        days = window_days(ds, cfg.monitor.window_days)

        def fingerprint_of() -> str:
            return monitor_fingerprint(lake, cfg, ds, tracking.alias_version(name, CHAMPION), train_active)

        def outputs(result: dict[str, Any]) -> list[str]:
            return [result["report_uri"]] if result.get("report_uri") else []

        def run() -> dict[str, Any]:
            return monitor_step(lake, cfg, tracking, tags, ds, train_active, links)

        result = self.cached(context, lake, "monitor", fingerprint_of, outputs, run)
        self.mlflow_run_url = result.get("mlflow_run_url")
        self.step_lineage.inputs = [
            lake_ref(lake.uri(path))
            for path in (paths.predictions(cfg.name, d) for d in days)
            if lake.exists(lake.uri(path))
        ]
        if result.get("champion_version"):
            self.step_lineage.inputs.append(
                version_ref(self.tracking_uri, result["model_name"], result["champion_version"])
            )
        if result.get("report_uri"):
            self.step_lineage.outputs = [lake_ref(result["report_uri"])]
        if result.get("report_uri"):
            self.report_url = lake_file_url(paths.monitor_report(cfg.name, self.ds))
        self.log.info("Monitor of %s on %s: %s", cfg.name, self.ds, result["outcome"])
        for reason in result.get("reasons", []):
            self.log.info("  %s", reason)
        if result.get("alarms") and not self.cache_skipped:  # a skipped rerun: its earlier run alerted
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
