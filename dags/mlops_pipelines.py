"""The DAGs of every valid pipeline in the [mlops] pipelines folder: one YAML file per pipeline, nothing else.

An invalid file is left out here and reported by mlops_pipeline_errors.py, so it breaks only its own pipeline.
"""

from airflow_mlops.factory import build_all

globals().update(build_all())
