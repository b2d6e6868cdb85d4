"""Health of the stack's components: Airflow's heartbeats and the services' /health answers."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from airflow_mlops.stack.components import S3_SERVER, worker_of
from airflow_mlops.stack.settings import StackConfig, StackError
from airflow_mlops.stack.supervisor import log_file, log_tail, running_pid

HEARTBEAT_KEYS = {
    "scheduler": ("scheduler", "latest_scheduler_heartbeat"),
    "dag-processor": ("dag_processor", "latest_dag_processor_heartbeat"),
    "triggerer": ("triggerer", "latest_triggerer_heartbeat"),
}
"""Component -> (section, heartbeat field) of Airflow's /api/v2/monitor/health answer."""


def http_json(url: str, timeout: float = 5.0) -> tuple[int, Any]:
    """GET a URL: status and parsed JSON body (None when not JSON); (0, None) when unreachable."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback http by design)
            body = resp.read()
            status = int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code), None
    except (OSError, ValueError):
        return 0, None
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


def _parse_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def worker_ready(cfg: StackConfig, name: str) -> bool:
    """Whether a Celery worker logged that it is ready since it was last started (`<name>@<host> ready.`)."""
    try:
        text = log_file(cfg, name).read_text(errors="replace")
    except FileNotFoundError:
        return False
    since_start = text.rsplit(f" starting {name} ===", 1)[-1]
    return any(f"{name}@" in line and " ready." in line for line in since_start.splitlines())


def probe(cfg: StackConfig, name: str) -> bool:
    """Whether a component that is not part of Airflow's own health answer is ready."""
    if name == "mlflow":
        return http_json(f"{cfg.mlflow_url}/health")[0] == 200
    if name == "model-server":
        return http_json(f"{cfg.model_server_url}/health")[0] == 200
    if name == S3_SERVER:
        return http_json(f"{cfg.s3_settings()['endpoint_url']}/moto-api/")[0] == 200
    worker = worker_of(cfg, name)
    if worker is not None and name == worker.log_server:
        port = cfg.port_setting("MLOPS_WORKER_LOG_SERVER_PORT")
        return http_json(f"http://{worker.address}:{port}/")[0] != 0  # any HTTP answer: it listens
    if worker is not None:
        return worker_ready(cfg, name)
    raise StackError(f"no health check for component {name!r}")


def component_ready(name: str, started_at: float, airflow_health: Any, answers: Mapping[str, bool]) -> bool:
    """Whether one component passes its health check, given the latest health answers.

    A heartbeat must be from this process (not older than its start), not a predecessor's.

    :param started_at: epoch seconds when the component was started.
    :param airflow_health: parsed /api/v2/monitor/health answer, None when the API server doesn't answer.
    :param answers: component -> whether its own check passed (see probe), for components outside Airflow's answer.
    """
    if name != "api-server" and name not in HEARTBEAT_KEYS:
        return answers.get(name, False)
    if not isinstance(airflow_health, dict):
        return False
    if name == "api-server":
        return bool(airflow_health.get("metadatabase", {}).get("status") == "healthy")
    section, key = HEARTBEAT_KEYS[name]
    info = airflow_health.get(section) or {}
    beat = _parse_time(info.get(key))
    return info.get("status") == "healthy" and beat is not None and beat >= started_at - 2


def wait_healthy(cfg: StackConfig, started: Mapping[str, float], timeout: float) -> None:
    """Wait until every component passes its health check; StackError with the logs of those that don't.

    :param started: component -> epoch seconds when it was started.
    """
    pending = set(started)
    deadline = time.monotonic() + timeout
    health: Any = None
    while pending:
        for name in sorted(pending):
            if running_pid(cfg, name) is None:
                raise StackError(f"{name} exited during start-up\n{log_tail(log_file(cfg, name))}")
        status, health = http_json(f"{cfg.airflow_url}/api/v2/monitor/health")
        airflow_health = health if status == 200 else None
        answers = {n: probe(cfg, n) for n in pending if n != "api-server" and n not in HEARTBEAT_KEYS}
        for name in list(pending):
            if component_ready(name, started[name], airflow_health, answers):
                pending.discard(name)
                print(f"  {name}: healthy")
        if not pending:
            return
        if time.monotonic() > deadline:
            tails = "\n".join(log_tail(log_file(cfg, n)) for n in sorted(pending))
            raise StackError(
                f"timed out after {timeout:.0f}s waiting for {', '.join(sorted(pending))} to become healthy "
                f"(last Airflow health answer: {json.dumps(health)})\n{tails}"
            )
        time.sleep(1)
