"""Tests of the Celery settings: Airflow's defaults, and the ML stack imported by a worker before its pool forks."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from airflow_mlops.celery_config import CELERY_CONFIG, PRELOAD


def test_airflow_defaults_are_kept_and_the_preload_is_added() -> None:
    from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

    assert {k: v for k, v in CELERY_CONFIG.items() if k != "imports"} == {
        k: v for k, v in DEFAULT_CELERY_CONFIG.items() if k != "imports"
    }
    assert CELERY_CONFIG["imports"][-1] == PRELOAD == "airflow_mlops.preload"


@pytest.mark.slow
def test_a_worker_imports_the_ml_stack_at_start_and_nothing_else_does() -> None:
    """What `airflow celery worker` does before it starts its prefork pool: build Airflow's Celery app (which
    reads `[celery] celery_config_options`, as the scheduler does too) and call the loader's init_worker."""
    probe = (
        "import sys\n"
        "from airflow.providers.celery.executors.celery_executor_utils import app\n"
        "before = 'sklearn' in sys.modules or 'airflow_mlops.preload' in sys.modules\n"
        "app.loader.init_worker()\n"
        "after = [m for m in ('airflow_mlops.preload', 'sklearn', 'mlflow', 'great_expectations', 'evidently')\n"
        "         if m not in sys.modules]\n"
        "print('RESULT', before, after)\n"
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__CELERY")},
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": "airflow_mlops.celery_config.CELERY_CONFIG",
        "AIRFLOW__CELERY__BROKER_URL": "redis://127.0.0.1:1/0",  # never reached: nothing is sent
    }
    proc = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    assert lines == ["RESULT False []"], proc.stderr[-3000:]
