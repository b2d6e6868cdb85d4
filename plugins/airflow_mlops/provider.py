"""Provider info for Airflow (entry point `apache_airflow_provider`): connection types, their forms, [mlops]."""

from __future__ import annotations

from typing import Any

from airflow_mlops import __version__, settings

PACKAGE_NAME = "airflow-mlops"

_TEXT = {"type": ["string", "null"]}
_SECRET = {"type": ["string", "null"], "format": "password"}

# Airflow (3.2 and later) builds each connection form from these declarations without importing the hook:
# `ui-field-behaviour` hides or relabels the standard fields, `conn-fields` adds fields stored in the extra
# under their own names, which is where the hooks read them.
CONNECTION_TYPES: list[dict[str, Any]] = [
    {
        "connection-type": "mlops_lake",
        "hook-class-name": "airflow_mlops.hooks.LakeHook",
        "hook-name": "MLOps lake (local folder or S3)",
        "ui-field-behaviour": {
            "hidden-fields": ["host", "schema", "port"],
            "relabeling": {"login": "AWS access key ID", "password": "AWS secret access key"},
            "placeholders": {
                "login": "empty: a local lake, or boto3's default credentials",
            },
        },
        "conn-fields": {
            "lake_root": {
                "label": "Lake root",
                "description": f"A local folder or s3://bucket/prefix. Empty: [{settings.SECTION}] lake_root.",
                "schema": _TEXT,
            },
            "endpoint_url": {
                "label": "S3 endpoint URL",
                "description": "An S3-compatible store, e.g. http://minio:9000. Empty: AWS S3.",
                "schema": _TEXT,
            },
            "region_name": {"label": "S3 region", "description": "e.g. us-east-1", "schema": _TEXT},
            "aws_session_token": {"label": "AWS session token", "schema": _SECRET},
        },
    },
    {
        "connection-type": "mlops_mlflow",
        "hook-class-name": "airflow_mlops.hooks.MlflowHook",
        "hook-name": "MLflow tracking server (airflow-mlops)",
        "ui-field-behaviour": {
            "hidden-fields": [],
            "relabeling": {"schema": "Scheme (http or https)", "login": "Username", "password": "Password"},
            "placeholders": {
                "host": "mlflow.example.com",
                "port": "5000",
                "schema": "http",
                "login": "empty: no basic auth",
            },
        },
        "conn-fields": {
            "tracking_uri": {
                "label": "Tracking URI",
                "description": "The whole URI, e.g. https://mlflow.example.com/prefix; wins over host, port and "
                "scheme.",
                "schema": _TEXT,
            },
            "registry_uri": {
                "label": "Registry URI",
                "description": "When the model registry is not the tracking server.",
                "schema": _TEXT,
            },
            "ui_url": {
                "label": "UI URL",
                "description": "Base URL of the MLflow UI for task links, when browsers reach it at another address.",
                "schema": _TEXT,
            },
            "token": {"label": "Bearer token", "schema": _SECRET},
            "insecure_tls": {"label": "Skip TLS verification", "schema": {"type": ["boolean", "null"]}},
        },
    },
    {
        "connection-type": "mlops_model_server",
        "hook-class-name": "airflow_mlops.hooks.ModelServerHook",
        "hook-name": "Model server (airflow-mlops)",
        "ui-field-behaviour": {
            "hidden-fields": ["login"],
            "relabeling": {"schema": "Scheme (http or https)", "password": "API token"},
            "placeholders": {"host": "model-server.example.com", "port": "8000", "schema": "http"},
        },
    },
]


EXAMPLES = {
    "lake_root": "s3://my-bucket/lake",
    "pipelines_dir": "/opt/airflow/include/pipelines",
    "expectations_dir": "/opt/airflow/include/expectations",
    "reports_base_url": "/airflow/mlops",
}
"""Example values shown by `airflow config list`."""


def config_section() -> dict[str, Any]:
    """The [mlops] section as Airflow's config (airflow config list) shows it, from settings.SETTINGS."""
    options = {
        s.key: {
            "description": f"{s.description} The variable {s.env} wins over this option.",
            "version_added": "0.1.0",
            "type": "string",
            "example": EXAMPLES.get(s.key),
            "default": s.default or None,
        }
        for s in settings.SETTINGS
    }
    return {
        settings.SECTION: {
            "description": "Deployment settings of airflow-mlops (its pipelines, lake and connections).",
            "options": options,
        }
    }


def get_provider_info() -> dict[str, Any]:
    """What Airflow's ProvidersManager reads from the package (validated against its provider_info schema)."""
    return {
        "package-name": PACKAGE_NAME,
        "name": "airflow-mlops",
        "description": "The machine-learning lifecycle as Airflow DAGs from one YAML file per pipeline: the lake, "
        "MLflow and model server hooks, operators, sensors and the reports plugin.",
        "versions": [__version__],
        "connection-types": CONNECTION_TYPES,
        "config": config_section(),
    }
