"""The Airflow plugin: report routes on the API server and the package's extra links."""

from __future__ import annotations

from functools import cache
from typing import Any

from airflow.plugins_manager import AirflowPlugin

from airflow_mlops.links import DriftReportLink, MlflowRunLink, ModelVersionLink, ValidationReportLink


@cache
def _fastapi_apps() -> list[dict[str, Any]]:
    from airflow_mlops.ui.api import create_app

    return [{"app": create_app(), "url_prefix": "/mlops", "name": "airflow-mlops reports"}]


class MlopsPlugin(AirflowPlugin):
    """airflow-mlops: serves lake reports under /mlops and registers the operators' extra links."""

    name = "airflow_mlops"
    # The lifecycle pages in Airflow's navigation and as a tab of every DAG (the page of the DAG's pipeline).
    external_views = [
        {
            "name": "ML lifecycle",
            "href": "/mlops/lifecycle/",
            "destination": "nav",
            "url_route": "ml-lifecycle",
            "category": "browse",
        },
        {
            "name": "ML lifecycle",
            "href": "/mlops/lifecycle/dag/{DAG_ID}",
            "destination": "dag",
            "url_route": "ml-lifecycle-dag",
        },
    ]
    operator_extra_links = [ValidationReportLink(), MlflowRunLink(), ModelVersionLink(), DriftReportLink()]

    # Every task process loads plugins (for macros): build the FastAPI app only when the API server asks.
    @property
    def fastapi_apps(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return _fastapi_apps()
