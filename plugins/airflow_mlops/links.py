"""Extra links from tasks to the reports they wrote in the lake, served by the plugin's API route."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlparse

from airflow.sdk import BaseOperatorLink

from airflow_mlops import settings
from airflow_mlops.core.lake import paths

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey


def lake_file_url(path: str) -> str:
    """URL under which the API server plugin serves a lake file (path relative to the lake root)."""
    return f"{settings.reports_base_url()}/lake/{path.lstrip('/')}"


def lifecycle_url(pipeline: str) -> str:
    """URL of the pipeline's lifecycle page (served by the API server plugin)."""
    return f"{settings.reports_base_url()}/lifecycle/{quote(pipeline, safe='')}"


def airflow_ui_url(dag_id: str, run_id: str) -> str:
    """The DAG run's page in the Airflow UI, under the API server's base URL path."""
    from airflow.sdk import conf

    base = urlparse(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")
    return f"{base}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


class ValidationReportLink(BaseOperatorLink):
    """The Great Expectations report of a validation task (pass or fail)."""

    name = "Validation report"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        op: Any = operator
        return lake_file_url(paths.validation_report(op.pipeline, op.source, op.ds))


class MlflowRunLink(BaseOperatorLink):
    """The MLflow run a training task logged to."""

    name = "MLflow run"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        # Set by the task while it runs; the worker stores the link when the task ends.
        return str(getattr(operator, "mlflow_run_url", None) or "")


class ModelVersionLink(BaseOperatorLink):
    """The model version a registration task created or found."""

    name = "Model version"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return str(getattr(operator, "model_version_url", None) or "")


class DriftReportLink(BaseOperatorLink):
    """The drift and quality report a monitor task wrote (its date is known only once the task ran)."""

    name = "Drift report"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return str(getattr(operator, "report_url", None) or "")
