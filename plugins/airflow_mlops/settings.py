"""Deployment settings: an MLOPS_* variable, else Airflow's [mlops] config section, else the default."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
"""The checkout this package lives in (plugins/airflow_mlops -> repo root); in an installed wheel, not one."""

SECTION = "mlops"
"""The section of Airflow's configuration (airflow.cfg, AIRFLOW__MLOPS__<KEY>) holding these settings."""


@dataclass(frozen=True)
class Setting:
    """One deployment setting: option `key` of the [mlops] section, or the variable MLOPS_<KEY>.

    :param default: the value when neither is set ("" = none, or derived: see the description).
    :param description: what it is, as `airflow config list` and the docs show it.
    """

    key: str
    default: str
    description: str

    @property
    def env(self) -> str:
        """The package's own variable, which wins over the [mlops] section."""
        return f"MLOPS_{self.key.upper()}"

    @property
    def airflow_env(self) -> str:
        """Airflow's variable for the option (same rank as airflow.cfg, above it)."""
        return f"AIRFLOW__{SECTION.upper()}__{self.key.upper()}"

    @property
    def hint(self) -> str:
        """How to set it, for error messages."""
        return f"set [{SECTION}] {self.key} in airflow.cfg, or {self.airflow_env} or {self.env} in the environment"


LAKE_ROOT = Setting(
    "lake_root",
    "",
    "The lake (a local folder or s3://bucket/prefix) when the storage connection has no `lake_root` extra or "
    "does not exist; the connection's extra wins when both are set.",
)
PIPELINES_DIR = Setting(
    "pipelines_dir",
    "",
    "Folder scanned for <name>.yaml pipeline files, at parse time and by every task. Default: include/pipelines "
    "of the checkout when the package runs from one, else $AIRFLOW_HOME/include/pipelines. A missing folder is "
    "an import error of the DAG file.",
)
EXPECTATIONS_DIR = Setting(
    "expectations_dir",
    "",
    "Folder of the Great Expectations suites (JSON) named by sources.<name>.suite. Default: include/expectations "
    "of the checkout when the package runs from one, else $AIRFLOW_HOME/include/expectations.",
)
STORAGE_CONN_ID = Setting(
    "storage_conn_id",
    "mlops_storage",
    "Airflow connection of the lake (type mlops_lake). Operators and sensors also take lake_conn_id=.",
)
MLFLOW_CONN_ID = Setting(
    "mlflow_conn_id", "mlflow_default", "Airflow connection of the MLflow tracking server (type mlops_mlflow)."
)
MODEL_SERVER_CONN_ID = Setting(
    "model_server_conn_id",
    "mlops_model_server",
    "Airflow connection of the model server (type mlops_model_server: host and port; the password is the API token).",
)
REPORTS_BASE_URL = Setting(
    "reports_base_url",
    "/mlops",
    "Base of the report links on tasks (<base>/lake/<path>). The plugin always mounts its routes at /mlops on "
    "the API server; set this when the API server is reached under a path prefix, e.g. /airflow/mlops.",
)
SETTINGS = (
    LAKE_ROOT,
    PIPELINES_DIR,
    EXPECTATIONS_DIR,
    STORAGE_CONN_ID,
    MLFLOW_CONN_ID,
    MODEL_SERVER_CONN_ID,
    REPORTS_BASE_URL,
)

# The MLOPS_* variable names, as the rest of the package and the docs name them.
ENV_LAKE_ROOT = LAKE_ROOT.env
ENV_PIPELINES_DIR = PIPELINES_DIR.env
ENV_EXPECTATIONS_DIR = EXPECTATIONS_DIR.env
DEFAULT_STORAGE_CONN_ID = STORAGE_CONN_ID.default
DEFAULT_MLFLOW_CONN_ID = MLFLOW_CONN_ID.default
DEFAULT_MODEL_SERVER_CONN_ID = MODEL_SERVER_CONN_ID.default


def _airflow_option(setting: Setting) -> str | None:
    # Every Airflow process (component or task) has imported Airflow's configuration, and so do the
    # `python -m airflow_mlops` commands: ask it, so airflow.cfg, AIRFLOW__MLOPS__* and its _cmd/_secret forms
    # all count. The model server does not import Airflow (seconds) to read a setting: there only Airflow's
    # environment variable counts.
    module = sys.modules.get("airflow.configuration")
    conf = getattr(module, "conf", None)
    if conf is None:
        return os.environ.get(setting.airflow_env) or None
    value = conf.get(SECTION, setting.key, fallback=None)
    return str(value) if value else None


def get(setting: Setting) -> str | None:
    """The setting's value: MLOPS_<KEY>, else [mlops] <key> (Airflow's config), else its default; None if empty."""
    return os.environ.get(setting.env) or _airflow_option(setting) or setting.default or None


def source(setting: Setting) -> str:
    """Where the value of `get(setting)` comes from, for messages."""
    if os.environ.get(setting.env):
        return setting.env
    if _airflow_option(setting):
        return f"[{SECTION}] {setting.key}"
    return "the default"


def airflow_home() -> Path:
    """Airflow's home folder, as Airflow finds it ($AIRFLOW_HOME, else ~/airflow)."""
    return Path(os.environ.get("AIRFLOW_HOME") or "~/airflow").expanduser()


def include_dir() -> Path:
    """Default home of the pipelines and expectations folders: the checkout's include/, else $AIRFLOW_HOME/include."""
    checkout = PROJECT_ROOT / "include"
    if (checkout / "pipelines").is_dir():
        return checkout
    return airflow_home() / "include"


def pipelines_dir() -> Path:
    """Folder scanned for `<name>.yaml` pipeline configs."""
    return Path(get(PIPELINES_DIR) or include_dir() / "pipelines").expanduser()


def expectations_dir() -> Path:
    """Folder holding Great Expectations suites as JSON."""
    return Path(get(EXPECTATIONS_DIR) or include_dir() / "expectations").expanduser()


def storage_conn_id() -> str:
    """Airflow connection holding the lake root and S3 endpoint and credentials."""
    return get(STORAGE_CONN_ID) or DEFAULT_STORAGE_CONN_ID


def mlflow_conn_id() -> str:
    """Airflow connection of the MLflow tracking server."""
    return get(MLFLOW_CONN_ID) or DEFAULT_MLFLOW_CONN_ID


def lake_root() -> str | None:
    """Lake root set for this deployment (not counting the storage connection's extra), if any."""
    return get(LAKE_ROOT)


def reports_base_url() -> str:
    """Base URL under which the API server plugin serves lake reports (see ui/plugin.py)."""
    return (get(REPORTS_BASE_URL) or REPORTS_BASE_URL.default).rstrip("/")


def model_server_conn_id() -> str:
    """Airflow connection of the model server (host, port; password = API token)."""
    return get(MODEL_SERVER_CONN_ID) or DEFAULT_MODEL_SERVER_CONN_ID
