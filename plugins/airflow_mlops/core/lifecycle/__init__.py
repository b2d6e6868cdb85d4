"""The lifecycle of a pipeline as one view: versions, champion timeline, monitoring, validation (no Airflow)."""
