"""Tests of the components' command lines, environment and connections."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_mlops.stack.components import (
    COMPONENTS,
    FORKSERVER_PRELOAD,
    STACK_MARKER,
    component_argv,
    component_env,
    components,
    stack_env,
    storage_connection,
)
from airflow_mlops.stack.keys import ensure_secrets
from airflow_mlops.stack.settings import StackConfig, StackError
from tests.airflow_mlops.stack.helpers import make_cfg


def test_stack_env_configures_airflow_for_the_state_folder(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, MLOPS_AIRFLOW_PORT="18080", MLOPS_MLFLOW_PORT="15000")
    keys = ensure_secrets(cfg)
    env = stack_env(cfg, keys)
    assert env["AIRFLOW_HOME"] == str(cfg.state_dir / "airflow")
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(tmp_path / "repo" / "dags")
    assert "AIRFLOW__CORE__PLUGINS_FOLDER" not in env  # the plugin comes from the package's entry point
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert int(env["AIRFLOW__CORE__PARALLELISM"]) <= 4
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{cfg.state_dir / 'airflow' / 'airflow.db'}"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18080/execution/"
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == keys.jwt_secret
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] == str(cfg.passwords_file)
    assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:15000"
    assert env["MLOPS_LAKE_ROOT"] == str(cfg.state_dir / "lake")
    assert env[STACK_MARKER] == str(cfg.state_dir)
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)


def test_the_model_server_gets_an_admin_token_of_its_own(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path)
    keys = ensure_secrets(cfg)
    env = stack_env(cfg, keys)
    assert env["MLOPS_MODEL_SERVER_ADMIN_TOKEN"] == keys.model_server_admin_token != keys.model_server_token
    conn = json.loads(env["AIRFLOW_CONN_MLOPS_MODEL_SERVER"])
    assert conn["password"] == keys.model_server_token
    assert conn["extra"] == {"admin_token": keys.model_server_admin_token}


def test_airflow_settings_win_over_the_stack_values(tmp_path: Path) -> None:
    cfg = make_cfg(
        tmp_path,
        environ={"PATH": "/bin", "AIRFLOW__CORE__PARALLELISM": "2", "UNRELATED": "kept"},
        AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="30",
    )
    env = stack_env(cfg, ensure_secrets(cfg))
    assert env["AIRFLOW__CORE__PARALLELISM"] == "2"
    assert env["AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL"] == "30"
    assert env["UNRELATED"] == "kept"


def test_executor_workers_preload_the_ml_stack_unless_told_otherwise(tmp_path: Path) -> None:
    env = stack_env(make_cfg(tmp_path), ensure_secrets(make_cfg(tmp_path)))
    assert env["AIRFLOW__SCHEDULER__MP_START_METHOD"] == "forkserver"
    assert env["AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD"].split(",") == list(FORKSERVER_PRELOAD)
    assert "airflow_mlops.preload" in FORKSERVER_PRELOAD

    cfg = make_cfg(tmp_path, AIRFLOW__SCHEDULER__MP_START_METHOD="fork")
    assert stack_env(cfg, ensure_secrets(cfg))["AIRFLOW__SCHEDULER__MP_START_METHOD"] == "fork"


@pytest.mark.slow
def test_the_preload_imports_everything_and_leaves_a_forkable_process() -> None:
    """The forkserver imports these, then forks workers (which fork tasks): a thread started at import would
    be copied half-alive into every task, and a module that fails to import would be silently skipped."""
    probe = (
        "import importlib, sys, threading\n"
        f"for name in {list(FORKSERVER_PRELOAD)!r}: importlib.import_module(name)\n"
        "from airflow_mlops import preload\n"
        "missing = [m for m in preload.MODULES if m not in sys.modules]\n"
        "heavy = [m for m in ('pandas', 'sklearn', 'mlflow', 'skops', 'great_expectations', 'evidently')\n"
        "         if m not in sys.modules]\n"
        "print('RESULT', threading.active_count(), missing, heavy)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
    proc = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=600, check=True
    )
    (result,) = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    assert result == "RESULT 1 [] []", proc.stderr[-3000:]
    # skops walks sys.modules with getattr and hits Airflow's deprecated-import shims: silenced, not flooded.
    assert proc.stderr.count("DeprecatedImportWarning") == 0


def test_connections_are_read_by_airflow_and_the_lake_hook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.models.connection import Connection

    from airflow_mlops.hooks import LakeHook, MlflowHook

    cfg = make_cfg(
        tmp_path,
        MLOPS_LAKE_ROOT="s3://lake/demo",
        MLOPS_S3_ENDPOINT_URL="http://127.0.0.1:9000",
        MLOPS_S3_ACCESS_KEY_ID="key-id",
        MLOPS_S3_SECRET_ACCESS_KEY="secret",
        MLOPS_MLFLOW_PORT="15000",
    )
    env = stack_env(cfg, ensure_secrets(cfg))
    mlflow = Connection.from_json(env["AIRFLOW_CONN_MLFLOW_DEFAULT"], conn_id="mlflow_default")
    assert (mlflow.conn_type, mlflow.host, mlflow.port, mlflow.schema) == ("mlops_mlflow", "127.0.0.1", 15000, "http")

    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", env["AIRFLOW_CONN_MLFLOW_DEFAULT"])
    assert MlflowHook().get_tracking_uri() == env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:15000"

    monkeypatch.setenv("AIRFLOW_CONN_MLOPS_STORAGE", env["AIRFLOW_CONN_MLOPS_STORAGE"])
    hook = LakeHook()
    assert hook.lake_root() == "s3://lake/demo"
    assert hook.s3_client_kwargs(hook.get_connection("mlops_storage")) == {
        "aws_access_key_id": "key-id",
        "aws_secret_access_key": "secret",
        "endpoint_url": "http://127.0.0.1:9000",
    }


def test_local_lake_connection_has_no_credentials(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, MLOPS_S3_ACCESS_KEY_ID="ignored")
    assert storage_connection(cfg) == {"conn_type": "mlops_lake", "extra": {"lake_root": cfg.lake_root}}


def test_every_component_listens_on_loopback_only(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, MLOPS_AIRFLOW_PORT="18080", MLOPS_MLFLOW_PORT="15000")
    api = component_argv(cfg, "api-server")
    assert api[api.index("--host") + 1] == "127.0.0.1" and api[api.index("--port") + 1] == "18080"
    mlflow = component_argv(cfg, "mlflow")
    assert mlflow[mlflow.index("--host") + 1] == "127.0.0.1" and mlflow[mlflow.index("--port") + 1] == "15000"
    assert mlflow[mlflow.index("--backend-store-uri") + 1].startswith("sqlite:///")
    assert "--serve-artifacts" in mlflow
    for name in ("scheduler", "triggerer"):
        assert "--skip-serve-logs" in component_argv(cfg, name)
    with pytest.raises(StackError, match="unknown component 'webserver'"):
        component_argv(cfg, "webserver")


# The distributed profile --------------------------------------------------------------------


def _distributed(tmp_path: Path, **settings: str) -> StackConfig:
    return make_cfg(
        tmp_path,
        MLOPS_STACK_PROFILE="distributed",
        MLOPS_AIRFLOW_DB="af_db",
        MLOPS_MLFLOW_DB="ml_db",
        MLOPS_REDIS_URL="redis://127.0.0.1:6379/5",
        MLOPS_CELERY_QUEUE="q1",
        MLOPS_S3_PORT="19000",
        MLOPS_WORKER_LOG_SERVER_PORT="18793",
        **settings,
    )


def test_distributed_components_in_start_order(tmp_path: Path) -> None:
    assert components(make_cfg(tmp_path)) == COMPONENTS
    assert components(_distributed(tmp_path)) == (
        "s3", "mlflow", "model-server", "api-server", "scheduler", "dag-processor", "triggerer",
        "worker-1-logs", "worker-1", "worker-2-logs", "worker-2",
    )  # fmt: skip
    own_s3 = _distributed(tmp_path, MLOPS_S3_ENDPOINT_URL="http://127.0.0.1:9000")
    assert components(own_s3)[0] == "mlflow"


def test_distributed_env_runs_celery_on_redis_and_airflow_on_postgres(tmp_path: Path) -> None:
    cfg = _distributed(tmp_path)
    env = stack_env(cfg, ensure_secrets(cfg))
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == "postgresql+psycopg2://postgres@127.0.0.1:5432/af_db"
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == "db+postgresql+psycopg2://postgres@127.0.0.1:5432/af_db"
    assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://127.0.0.1:6379/5"
    assert env["AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS"] == "airflow_mlops.celery_config.CELERY_CONFIG"
    assert env["AIRFLOW__OPERATORS__DEFAULT_QUEUE"] == "q1"
    assert env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] == "18793"
    assert "AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD" not in env  # the workers preload, not the scheduler
    lake = json.loads(env["AIRFLOW_CONN_MLOPS_STORAGE"])
    assert lake == {
        "conn_type": "mlops_lake",
        "login": "mlops-local",
        "password": "mlops-local-secret",
        "extra": {"lake_root": "s3://mlops/lake", "endpoint_url": "http://127.0.0.1:19000"},
    }


def test_each_worker_has_its_own_home_logs_and_host_name(tmp_path: Path) -> None:
    cfg = _distributed(tmp_path)
    env = stack_env(cfg, ensure_secrets(cfg))
    homes = set()
    for worker in cfg.workers:
        for name in (worker.name, worker.log_server):
            wenv = component_env(cfg, name, env)
            assert wenv["AIRFLOW_HOME"] == str(cfg.state_dir / "workers" / worker.name)
            assert wenv["AIRFLOW__LOGGING__BASE_LOG_FOLDER"] == str(cfg.state_dir / "workers" / worker.name / "logs")
            assert wenv["AIRFLOW__CORE__HOSTNAME_CALLABLE"] == "airflow_mlops.stack.worker.hostname"
            assert wenv["MLOPS_WORKER_HOSTNAME"] == worker.address
            homes.add(wenv["AIRFLOW_HOME"])
        argv = component_argv(cfg, worker.name)
        assert argv[1:3] == ["celery", "worker"]
        assert argv[argv.index("--celery-hostname") + 1] == f"{worker.name}@%h"
        assert argv[argv.index("--queues") + 1] == "q1"
        assert argv[argv.index("--concurrency") + 1] == "2"
        assert "--skip-serve-logs" in argv  # its log server is a component of its own, on its own address
        logs = component_argv(cfg, worker.log_server)
        assert "airflow.utils.serve_logs.log_server:get_app" in logs
        assert logs[logs.index("--host") + 1] == worker.address and logs[logs.index("--port") + 1] == "18793"
    assert len(homes) == 2
    assert "MLOPS_WORKER_HOSTNAME" not in component_env(cfg, "scheduler", env)


def test_mlflow_on_postgres_with_artifacts_in_s3(tmp_path: Path) -> None:
    cfg = _distributed(tmp_path)
    argv = component_argv(cfg, "mlflow")
    assert argv[argv.index("--backend-store-uri") + 1] == "postgresql://postgres@127.0.0.1:5432/ml_db"
    assert argv[argv.index("--artifacts-destination") + 1] == "s3://mlops/mlflow"
    env = component_env(cfg, "mlflow", stack_env(cfg, ensure_secrets(cfg)))
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://127.0.0.1:19000"
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == ("mlops-local", "mlops-local-secret")


def test_model_server_reads_the_s3_lake_with_the_default_chain(tmp_path: Path) -> None:
    cfg = _distributed(tmp_path)
    argv = component_argv(cfg, "model-server")
    assert argv[argv.index("--lake-root") + 1] == "s3://mlops/lake"
    env = component_env(cfg, "model-server", stack_env(cfg, ensure_secrets(cfg)))
    assert env["AWS_ENDPOINT_URL_S3"] == "http://127.0.0.1:19000" and env["AWS_DEFAULT_REGION"] == "us-east-1"
    assert "AWS_ENDPOINT_URL_S3" not in component_env(make_cfg(tmp_path), "model-server", {})


def test_the_s3_server_listens_on_loopback(tmp_path: Path) -> None:
    argv = component_argv(_distributed(tmp_path), "s3")
    assert argv[1:3] == ["-m", "moto.server"]
    assert argv[argv.index("-H") + 1] == "127.0.0.1" and argv[argv.index("-p") + 1] == "19000"
    with pytest.raises(StackError, match="unknown component 's3'"):
        component_argv(_distributed(tmp_path, MLOPS_S3_ENDPOINT_URL="http://127.0.0.1:9000"), "s3")
