"""airflow-mlops: the machine-learning lifecycle as Apache Airflow 3 DAGs."""

__version__ = "0.1.0"
