"""The local stack (`python -m airflow_mlops.stack`): Airflow, MLflow and the model server on loopback."""
