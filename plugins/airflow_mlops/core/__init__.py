"""Lifecycle logic as plain functions: no Airflow in here, testable on their own."""
