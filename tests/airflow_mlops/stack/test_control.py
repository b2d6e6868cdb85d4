"""Tests of bringing the stack up: a port taken by another program stops it before anything starts."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from airflow_mlops.stack.control import up
from airflow_mlops.stack.settings import StackError
from airflow_mlops.stack.supervisor import free_port
from tests.airflow_mlops.stack.helpers import make_cfg


def test_up_refuses_a_port_taken_by_another_program(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        cfg = make_cfg(tmp_path, MLOPS_AIRFLOW_PORT=str(port), MLOPS_MLFLOW_PORT=str(free_port()))
        with pytest.raises(StackError, match=f"port {port} \\(api-server, 127.0.0.1\\) is in use.*MLOPS_AIRFLOW_PORT"):
            up(cfg)
    assert list(cfg.run_dir.iterdir()) == []


def test_a_running_stack_of_the_other_profile_must_be_stopped_first(tmp_path: Path) -> None:
    import subprocess
    import sys

    from airflow_mlops.stack.control import known_components, status
    from airflow_mlops.stack.supervisor import pid_file, stop

    embedded = make_cfg(tmp_path)
    embedded.run_dir.mkdir(parents=True)
    leader = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        pid_file(embedded, "scheduler").write_text(f"{leader.pid}\n")
        distributed = make_cfg(tmp_path, MLOPS_STACK_PROFILE="distributed")
        with pytest.raises(StackError, match=r"runs the embedded profile \(scheduler\).*down"):
            up(distributed)
        # Another profile's component still shows up, and is stopped by `down` whatever the profile.
        assert "scheduler" in known_components(distributed)
        assert [r.name for r in status(distributed) if r.pid] == ["scheduler"]
    finally:
        stop(embedded, ["scheduler"], grace=5, quiet=True)
        leader.wait(timeout=10)
