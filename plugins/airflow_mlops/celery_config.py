"""Celery settings for Airflow's CeleryExecutor: Airflow's defaults, plus the ML stack imported once per worker."""

# Point Airflow at it with `[celery] celery_config_options = airflow_mlops.celery_config.CELERY_CONFIG`
# (AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS). A Celery worker imports the modules named by `imports` in its
# main process when it starts (celery's loader.init_worker), before its prefork pool forks the pool
# processes; each task is then forked by a pool process (Airflow's supervisor), so every task starts with
# pandas, scikit-learn, MLflow, skops, GX and Evidently already imported instead of paying 15-30 s for them.
# Elsewhere (scheduler, API server) this is only a dict: `imports` is read by workers alone.

from __future__ import annotations

from typing import Any

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

PRELOAD = "airflow_mlops.preload"

CELERY_CONFIG: dict[str, Any] = {
    **DEFAULT_CELERY_CONFIG,
    "imports": (*DEFAULT_CELERY_CONFIG.get("imports", ()), PRELOAD),
}
