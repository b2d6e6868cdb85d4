"""The DAGs of every pipeline in the [mlops] pipelines folder: one YAML file per pipeline, nothing else."""

from airflow_mlops.factory import build_all

globals().update(build_all())
