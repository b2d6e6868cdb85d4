"""What each component of the stack is: its command line and environment, and the connections it gets."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from airflow_mlops.stack.keys import ADMIN_USER, Secrets
from airflow_mlops.stack.settings import HOST, StackConfig, StackError, Worker

SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
STACK_MARKER = "MLOPS_STACK_DIR"
"""Set in every stack process: names the state folder the process belongs to."""

AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
SERVICES = ("mlflow", "model-server")
"""Components that are not Airflow: started first, checked by their own /health."""
COMPONENTS = (*SERVICES, *AIRFLOW_COMPONENTS)
"""The embedded profile's components in start order; `down` stops them in reverse."""
S3_SERVER = "s3"
"""The distributed profile's own S3 API (a moto server), unless MLOPS_S3_ENDPOINT_URL names another store."""
CELERY_CONFIG = "airflow_mlops.celery_config.CELERY_CONFIG"

FORKSERVER_PRELOAD = (
    "airflow.sdk.execution_time.task_runner",
    "airflow.dag_processing.dagbag",
    "airflow_mlops.preload",
)
"""Modules the scheduler's forkserver imports before it forks executor workers (see preload.py)."""


def components(cfg: StackConfig) -> tuple[str, ...]:
    """The components of the stack's profile, in start order; `down` stops them in reverse."""
    if not cfg.distributed:
        return COMPONENTS
    s3 = (S3_SERVER,) if cfg.s3_managed else ()
    workers = tuple(name for w in cfg.workers for name in (w.log_server, w.name))
    return (*s3, *SERVICES, *AIRFLOW_COMPONENTS, *workers)


def worker_of(cfg: StackConfig, name: str) -> Worker | None:
    """The Celery worker a component belongs to (the worker itself or its log server), if any."""
    return next((w for w in cfg.workers if name in (w.name, w.log_server)), None)


def s3_client_env(cfg: StackConfig) -> dict[str, str]:
    """boto3's default-chain variables for the lake's S3 (processes that get no Airflow connection)."""
    names = {
        "endpoint_url": "AWS_ENDPOINT_URL_S3",
        "aws_access_key_id": "AWS_ACCESS_KEY_ID",
        "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
    }
    if not cfg.lake_root.startswith("s3://"):
        return {}
    env = {names[k]: v for k, v in cfg.s3_settings().items()}
    env.setdefault("AWS_DEFAULT_REGION", cfg.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    return env


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
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "4",
            "AIRFLOW__CORE__MAX_ACTIVE_RUNS_PER_DAG": "4",
            "AIRFLOW__CORE__FERNET_KEY": keys.fernet_key,
            "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(
                f"{name}:{role}" for name, role in [(ADMIN_USER, "admin"), *cfg.airflow_users()]
            ),
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
                {"conn_type": "mlops_mlflow", "host": HOST, "port": cfg.mlflow_port, "schema": "http"}
            ),
            "AIRFLOW_CONN_MLOPS_STORAGE": json.dumps(storage_connection(cfg)),
            "AIRFLOW_CONN_MLOPS_MODEL_SERVER": json.dumps(
                {
                    "conn_type": "mlops_model_server",
                    "host": HOST,
                    "port": cfg.model_server_port,
                    "password": keys.model_server_token,
                    "extra": {"admin_token": keys.model_server_admin_token},
                }
            ),
            "MLOPS_MODEL_SERVER_TOKEN": keys.model_server_token,
            "MLOPS_MODEL_SERVER_ADMIN_TOKEN": keys.model_server_admin_token,
            "MLOPS_LAKE_ROOT": cfg.lake_root,
            "MLFLOW_TRACKING_URI": cfg.mlflow_url,
            # Download progress bars would land in task logs as stderr lines logged at error level.
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        }
    )
    if cfg.distributed:
        env.update(_distributed_env(cfg))
    else:
        # Executor workers come from a forkserver that imported the ML stack once, so a task is a fork
        # that starts warm instead of importing pandas, sklearn, MLflow, GX and Evidently again.
        env["AIRFLOW__SCHEDULER__MP_START_METHOD"] = "forkserver"
        env["AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD"] = ",".join(FORKSERVER_PRELOAD)
    env.update({k: v for k, v in cfg.settings.items() if k.startswith("AIRFLOW__")})
    return env


def _distributed_env(cfg: StackConfig) -> dict[str, str]:
    """What the distributed profile changes: PostgreSQL, the CeleryExecutor on Redis, workers' log servers.

    No forkserver preload here: tasks run in the Celery workers, which preload the ML stack themselves
    (celery_config.py), and the scheduler forks no executor workers.
    """
    airflow_db = cfg.database_url("MLOPS_AIRFLOW_DB", "postgresql+psycopg2")
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_db,
        "AIRFLOW__CELERY__BROKER_URL": cfg.settings["MLOPS_REDIS_URL"],
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{airflow_db}",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": cfg.settings["MLOPS_CELERY_WORKER_CONCURRENCY"],
        "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": CELERY_CONFIG,
        # Said explicitly (it is the provider's default) so every process does not warn about it.
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "86400",
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": cfg.celery_queue,
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(cfg.port_setting("MLOPS_WORKER_LOG_SERVER_PORT")),
    }


def component_argv(cfg: StackConfig, name: str) -> list[str]:
    """Command line of one component (run with the stack's environment)."""
    bin_dir = Path(sys.executable).parent
    airflow = str(bin_dir / "airflow")
    worker = worker_of(cfg, name)
    if worker is not None:
        return _worker_argv(cfg, worker, name, airflow)
    if name == S3_SERVER and cfg.s3_managed:
        return [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(cfg.s3_port)]
    if name == "mlflow":
        backend = (
            cfg.database_url("MLOPS_MLFLOW_DB") if cfg.distributed else f"sqlite:///{cfg.mlflow_dir / 'mlflow.db'}"
        )
        return [
            str(bin_dir / "mlflow"),
            "server",
            "--backend-store-uri",
            backend,
            "--serve-artifacts",
            "--artifacts-destination",
            cfg.mlflow_artifacts,
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
    raise StackError(f"unknown component {name!r}; components are {', '.join(components(cfg))}")


def _worker_argv(cfg: StackConfig, worker: Worker, name: str, airflow: str) -> list[str]:
    if name == worker.log_server:
        # Airflow's log server app, bound to the worker's own address (`airflow celery worker` would bind
        # every interface, and two workers on one machine could not share the port the API server asks).
        port = str(cfg.port_setting("MLOPS_WORKER_LOG_SERVER_PORT"))
        return [sys.executable, "-m", "uvicorn", "airflow.utils.serve_logs.log_server:get_app", "--factory",
                "--host", worker.address, "--port", port, "--no-access-log", "--log-level", "warning"]  # fmt: skip
    return [airflow, "celery", "worker", "--celery-hostname", f"{worker.name}@%h", "--queues", cfg.celery_queue,
            "--concurrency", cfg.settings["MLOPS_CELERY_WORKER_CONCURRENCY"], "--skip-serve-logs",
            "--without-mingle", "--without-gossip"]  # fmt: skip


def worker_home(cfg: StackConfig, worker: Worker) -> Path:
    """A worker's own folder: its Airflow home, with its task logs in logs/."""
    return cfg.workers_dir / worker.name


def component_env(cfg: StackConfig, name: str, env: Mapping[str, str]) -> dict[str, str]:
    """The stack environment adjusted for one component."""
    out = dict(env)
    if name == "mlflow":
        # Job execution serves GenAI features only; it would add a worker pool (and memory) we never use.
        out.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
        if cfg.distributed:
            s3 = s3_client_env(cfg)
            out.update(s3)
            if "AWS_ENDPOINT_URL_S3" in s3:
                out["MLFLOW_S3_ENDPOINT_URL"] = s3["AWS_ENDPOINT_URL_S3"]
    if name == "model-server":
        # The server opens the lake with boto3's default chain (its inference log goes there).
        out.update(s3_client_env(cfg))
    worker = worker_of(cfg, name)
    if worker is not None:
        home = worker_home(cfg, worker)
        out.update(
            {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "airflow_mlops.stack.worker.hostname",
                "MLOPS_WORKER_HOSTNAME": worker.address,
            }
        )
    return out
