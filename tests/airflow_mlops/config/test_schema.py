"""Shared field checks: Airflow's own rules for connection ids and schedules."""

from __future__ import annotations

import pytest

from airflow_mlops.config.schema import CRON_PRESETS, check_conn_id, check_schedule


@pytest.mark.parametrize(
    "conn_id", ["mlops_storage", "http-alerts.v2", "a#b!c(d)e:f/g\\h", "x" * 250, "x" * 251, "with space", "a;b", ""]
)
def test_connection_ids_follow_airflow(conn_id: str) -> None:
    from airflow.models.connection import sanitize_conn_id

    airflow_accepts = sanitize_conn_id(conn_id) == conn_id and conn_id != ""
    try:
        ours = check_conn_id(conn_id) == conn_id
    except ValueError:
        ours = False
    assert ours == airflow_accepts


def test_presets_are_airflows() -> None:
    from airflow.utils.dates import cron_presets

    assert cron_presets == CRON_PRESETS


@pytest.mark.parametrize("value", ["@daily", "0 3 * * 1-5", "*/15 * * * *", None])
def test_schedules_accepted(value: str | None) -> None:
    assert check_schedule(value) == value


@pytest.mark.parametrize("value", ["@once", "@fortnightly", "0 25 * * *", "* * * *", "0 0 * * * *", "daily"])
def test_schedules_refused(value: str) -> None:
    with pytest.raises(ValueError):
        check_schedule(value)
