"""What each component of the stack is: its command line and environment, and the connections it gets."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from airflow_mlops.stack.keys import ADMIN_USER, Secrets
from airflow_mlops.stack.settings import HOST, StackConfig, StackError

SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
STACK_MARKER = "MLOPS_STACK_DIR"
"""Set in every stack process: names the state folder the process belongs to."""

AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
SERVICES = ("mlflow", "model-server")
"""Components that are not Airflow: started first, checked by their own /health."""
COMPONENTS = (*SERVICES, *AIRFLOW_COMPONENTS)
"""Start order; `down` stops them in reverse."""

FORKSERVER_PRELOAD = (
    "airflow.sdk.execution_time.task_runner",
    "airflow.dag_processing.dagbag",
    "airflow_mlops.preload",
)
"""Modules the scheduler's forkserver imports before it forks executor workers (see preload.py)."""


def storage_connection(cfg: StackConfig) -> dict[str, Any]:
    """The lake's Airflow connection (see hooks.LakeHook): lake root, plus endpoint and keys for S3."""
    conn: dict[str, Any] = {"conn_type": "mlops_lake", "extra": {"lake_root": cfg.lake_root}}
    if cfg.lake_root.startswith("s3://"):
        s3 = cfg.s3_settings()
        if "aws_access_key_id" in s3:
            conn["login"] = s3["aws_access_key_id"]
        if "aws_secret_access_key" in s3:
            conn["password"] = s3["aws_secret_access_key"]
        if "endpoint_url" in s3:
            conn["extra"]["endpoint_url"] = s3["endpoint_url"]
    return conn


def stack_env(cfg: StackConfig, keys: Secrets) -> dict[str, str]:
    """Environment of every stack process: Airflow config, connections and the lake, all on loopback.

    Precedence: inherited environment < MLOPS_ settings < the stack's own values < AIRFLOW__ settings
    (from mlops.env or the environment), so any Airflow option can still be overridden.
    """
    bin_dir = str(Path(sys.executable).parent)
    home = cfg.airflow_home
    env = dict(cfg.environ)
    env.update({k: v for k, v in cfg.settings.items() if k.startswith("MLOPS_")})
    env.update(
        {
            STACK_MARKER: str(cfg.state_dir),
            "PATH": os.pathsep.join([bin_dir, cfg.environ.get("PATH", os.defpath)]),
            "PYTHONUNBUFFERED": "1",
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(cfg.repo_root / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(cfg.repo_root / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "4",
            "AIRFLOW__CORE__MAX_ACTIVE_RUNS_PER_DAG": "4",
            # Executor workers come from a forkserver that imported the ML stack once, so a task is a fork
            # that starts warm instead of importing pandas, sklearn, MLflow, GX and Evidently again.
            "AIRFLOW__SCHEDULER__MP_START_METHOD": "forkserver",
            "AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD": ",".join(FORKSERVER_PRELOAD),
            "AIRFLOW__CORE__FERNET_KEY": keys.fernet_key,
            "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(cfg.passwords_file),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{cfg.airflow_url}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__API__HOST": HOST,
            "AIRFLOW__API__PORT": str(cfg.airflow_port),
            "AIRFLOW__API__BASE_URL": cfg.airflow_url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": keys.api_secret_key,
            "AIRFLOW__API_AUTH__JWT_SECRET": keys.jwt_secret,
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(cfg.logs_dir / "airflow"),
            "AIRFLOW__LOGGING__DAG_PROCESSOR_CHILD_PROCESS_LOG_DIRECTORY": str(
                cfg.logs_dir / "airflow" / "dag_processor"
            ),
            "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps(
                {"conn_type": "http", "host": HOST, "port": cfg.mlflow_port, "schema": "http"}
            ),
            "AIRFLOW_CONN_MLOPS_STORAGE": json.dumps(storage_connection(cfg)),
            "AIRFLOW_CONN_MLOPS_MODEL_SERVER": json.dumps(
                {"conn_type": "http", "host": HOST, "port": cfg.model_server_port, "password": keys.model_server_token}
            ),
            "MLOPS_MODEL_SERVER_TOKEN": keys.model_server_token,
            "MLOPS_LAKE_ROOT": cfg.lake_root,
            "MLFLOW_TRACKING_URI": cfg.mlflow_url,
            # Download progress bars would land in task logs as stderr lines logged at error level.
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        }
    )
    env.update({k: v for k, v in cfg.settings.items() if k.startswith("AIRFLOW__")})
    return env


def component_argv(cfg: StackConfig, name: str) -> list[str]:
    """Command line of one component (run with the stack's environment)."""
    bin_dir = Path(sys.executable).parent
    airflow = str(bin_dir / "airflow")
    if name == "mlflow":
        return [
            str(bin_dir / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{cfg.mlflow_dir / 'mlflow.db'}",
            "--serve-artifacts",
            "--artifacts-destination",
            str(cfg.mlflow_dir / "artifacts"),
            "--host",
            HOST,
            "--port",
            str(cfg.mlflow_port),
            "--workers",
            "1",
        ]
    if name == "model-server":
        return [sys.executable, "-m", "airflow_mlops.serving", "--host", HOST, "--port", str(cfg.model_server_port),
                "--tracking-uri", cfg.mlflow_url, "--lake-root", cfg.lake_root]  # fmt: skip
    if name == "api-server":
        return [airflow, "api-server", "--host", HOST, "--port", str(cfg.airflow_port), "--workers", "1"]
    if name in ("scheduler", "triggerer"):
        # Task logs are local files the API server reads directly: no log-serving side processes (and ports).
        return [airflow, name, "--skip-serve-logs"]
    if name == "dag-processor":
        return [airflow, name]
    raise StackError(f"unknown component {name!r}; components are {', '.join(COMPONENTS)}")


def component_env(cfg: StackConfig, name: str, env: Mapping[str, str]) -> dict[str, str]:
    """The stack environment adjusted for one component."""
    out = dict(env)
    if name == "mlflow":
        # Job execution serves GenAI features only; it would add a worker pool (and memory) we never use.
        out.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    return out
