"""Deployment settings read from the environment, with the defaults of the embedded stack."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
"""The checkout this package lives in (plugins/airflow_mlops -> repo root)."""

ENV_LAKE_ROOT = "MLOPS_LAKE_ROOT"
ENV_PIPELINES_DIR = "MLOPS_PIPELINES_DIR"
ENV_EXPECTATIONS_DIR = "MLOPS_EXPECTATIONS_DIR"
ENV_STORAGE_CONN_ID = "MLOPS_STORAGE_CONN_ID"
ENV_MLFLOW_CONN_ID = "MLOPS_MLFLOW_CONN_ID"
ENV_REPORTS_BASE_URL = "MLOPS_REPORTS_BASE_URL"
ENV_MODEL_SERVER_CONN_ID = "MLOPS_MODEL_SERVER_CONN_ID"

DEFAULT_STORAGE_CONN_ID = "mlops_storage"
DEFAULT_MLFLOW_CONN_ID = "mlflow_default"
DEFAULT_MODEL_SERVER_CONN_ID = "mlops_model_server"


def include_dir() -> Path:
    """Folder holding pipeline configs, expectation suites and SQL."""
    return PROJECT_ROOT / "include"


def pipelines_dir() -> Path:
    """Folder scanned for `<name>.yaml` pipeline configs."""
    return Path(os.environ.get(ENV_PIPELINES_DIR) or include_dir() / "pipelines")


def expectations_dir() -> Path:
    """Folder holding Great Expectations suites as JSON."""
    return Path(os.environ.get(ENV_EXPECTATIONS_DIR) or include_dir() / "expectations")


def storage_conn_id() -> str:
    """Airflow connection holding the lake root and S3 endpoint and credentials."""
    return os.environ.get(ENV_STORAGE_CONN_ID) or DEFAULT_STORAGE_CONN_ID


def mlflow_conn_id() -> str:
    """Airflow connection of the MLflow tracking server."""
    return os.environ.get(ENV_MLFLOW_CONN_ID) or DEFAULT_MLFLOW_CONN_ID


def lake_root_from_env() -> str | None:
    """Lake root set for this deployment in the environment, if any."""
    return os.environ.get(ENV_LAKE_ROOT) or None


def reports_base_url() -> str:
    """Base URL under which the API server plugin serves lake reports (see plugin.py)."""
    return (os.environ.get(ENV_REPORTS_BASE_URL) or "/mlops").rstrip("/")


def model_server_conn_id() -> str:
    """Airflow connection of the model server (host, port; password = API token)."""
    return os.environ.get(ENV_MODEL_SERVER_CONN_ID) or DEFAULT_MODEL_SERVER_CONN_ID
