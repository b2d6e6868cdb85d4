"""The heavy modules every task would otherwise import again, imported once by the executor's forkserver."""

# The local stack runs LocalExecutor workers from a forkserver that imports this module first
# (AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD), so each task process is a fork that already holds
# pandas, scikit-learn, MLflow, skops, GX and Evidently: a task costs its work, not 15-30 s of imports.
# Import only: nothing here may start a thread, open a connection or read a setting.

import importlib

import matplotlib

MODULES = (
    "airflow_mlops.core.registry.tracking",  # first: it silences skops' warning flood before skops is imported
    "pyarrow.parquet",
    "sklearn.ensemble",
    "skops.io",
    "mlflow.sklearn",
    "evidently.presets",
    "airflow_mlops.core.ingest.validation",  # great_expectations
    "airflow_mlops.core.ingest.steps",
    "airflow_mlops.core.train.steps",
    "airflow_mlops.core.score",
    "airflow_mlops.core.deploy.steps",
    "airflow_mlops.core.monitor.monitor",
    "airflow_mlops.factory",
    "airflow_mlops.operators",
    "airflow_mlops.sensors",
)
"""In import order."""

matplotlib.use("Agg")  # tasks have no display; before any pyplot import
for _name in MODULES:
    importlib.import_module(_name)
