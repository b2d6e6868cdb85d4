"""Tests of the health rules: fresh heartbeats, answers from the services."""

from __future__ import annotations

import pytest

from airflow_mlops.stack.health import component_ready

HEALTH = {
    "metadatabase": {"status": "healthy"},
    "scheduler": {"status": "healthy", "latest_scheduler_heartbeat": "2026-01-01T10:00:05+00:00"},
    "triggerer": {"status": "unhealthy", "latest_triggerer_heartbeat": "2026-01-01T09:00:00+00:00"},
    "dag_processor": {"status": "healthy", "latest_dag_processor_heartbeat": "2026-01-01T09:59:00+00:00"},
}
STARTED = 1767261600.0  # 2026-01-01T10:00:00Z


@pytest.mark.parametrize(
    ("name", "ready"),
    [("api-server", True), ("scheduler", True), ("triggerer", False), ("dag-processor", False)],
)
def test_component_ready_needs_a_fresh_healthy_heartbeat(name: str, ready: bool) -> None:
    # dag-processor: healthy, but the heartbeat predates this start (a previous process's).
    assert component_ready(name, STARTED, HEALTH, mlflow_ok=False) is ready


def test_nothing_is_ready_without_answers() -> None:
    assert not component_ready("api-server", STARTED, None, mlflow_ok=True)
    assert not component_ready("scheduler", STARTED, None, mlflow_ok=True)
    assert component_ready("mlflow", STARTED, None, mlflow_ok=True)
    assert component_ready("model-server", STARTED, None, mlflow_ok=True, model_server_ok=True)
    assert not component_ready("model-server", STARTED, None, mlflow_ok=True, model_server_ok=False)
