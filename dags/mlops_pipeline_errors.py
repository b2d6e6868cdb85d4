"""Invalid pipeline files of the [mlops] pipelines folder, shown as this DAG file's import error in the Airflow UI.

Each problem reads `file:line: key: message`. The valid pipelines' DAGs come from mlops_pipelines.py and keep
updating: an import error there would mark all of them stale, so the errors are raised here, from a file
that defines no DAG.
"""

from airflow_mlops.factory import raise_pipeline_problems

raise_pipeline_problems()
