"""Entry file Airflow loads from the plugins folder; everything lives in the airflow_mlops package."""

from airflow_mlops.ui.plugin import MlopsPlugin

__all__ = ["MlopsPlugin"]
