"""Tests of the run summaries the REST client's callers print."""

from __future__ import annotations

from airflow_mlops.stack.airflow_api import run_days, summarize_runs


def test_run_summaries() -> None:
    runs = [
        {"state": "success", "logical_date": "2013-01-01T00:00:00Z"},
        {"state": "failed", "logical_date": "2013-01-02T00:00:00Z"},
        {"state": "success", "logical_date": "2013-01-03T00:00:00Z"},
    ]
    assert summarize_runs(runs) == {"failed": 1, "success": 2}
    assert run_days(runs) == {"2013-01-01": "success", "2013-01-02": "failed", "2013-01-03": "success"}
