"""The Airflow plugin: routes on the API server, extra links."""
