"""Tests of the health rules: fresh heartbeats, answers from the services."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_mlops.stack.health import component_ready, worker_ready
from tests.airflow_mlops.stack.helpers import make_cfg

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
    assert component_ready(name, STARTED, HEALTH, {"mlflow": False}) is ready


def test_nothing_is_ready_without_answers() -> None:
    assert not component_ready("api-server", STARTED, None, {"mlflow": True})
    assert not component_ready("scheduler", STARTED, None, {"mlflow": True})
    assert component_ready("mlflow", STARTED, None, {"mlflow": True})
    assert component_ready("model-server", STARTED, None, {"mlflow": True, "model-server": True})
    assert not component_ready("model-server", STARTED, None, {"mlflow": True, "model-server": False})
    assert not component_ready("worker-1", STARTED, HEALTH, {})


def test_a_worker_is_ready_once_it_said_so_since_its_last_start(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, MLOPS_STACK_PROFILE="distributed")
    cfg.logs_dir.mkdir(parents=True)
    log = cfg.logs_dir / "worker-1.log"
    assert not worker_ready(cfg, "worker-1")
    log.write_text(
        "=== 2026-01-01T10:00:00 starting worker-1 ===\n"
        "2026-01-01T10:00:09Z [info     ] worker-1@vm ready.             [celery.apps.worker]\n"
        "=== 2026-01-01T11:00:00 starting worker-1 ===\n"
        "2026-01-01T11:00:03Z [info     ] Connected to redis://127.0.0.1:6379/0 [celery.worker.consumer]\n"
    )
    assert not worker_ready(cfg, "worker-1")  # the ready line is the previous process's
    with log.open("a") as fh:
        fh.write("2026-01-01T11:00:09Z [info     ] worker-1@vm ready.             [celery.apps.worker]\n")
    assert worker_ready(cfg, "worker-1")
    assert not worker_ready(cfg, "worker-2")
