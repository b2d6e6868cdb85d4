"""Tests of the host name the stack's Celery workers give Airflow."""

from __future__ import annotations

import pytest

from airflow_mlops.stack.worker import ENV_HOSTNAME, hostname


def test_a_worker_names_itself_by_its_address_else_airflow_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.utils.net import getfqdn

    monkeypatch.setenv(ENV_HOSTNAME, "127.0.0.12")
    assert hostname() == "127.0.0.12"
    monkeypatch.delenv(ENV_HOSTNAME)
    assert hostname() == getfqdn()
