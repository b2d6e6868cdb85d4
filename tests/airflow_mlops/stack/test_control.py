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
        with pytest.raises(StackError, match=f"port {port} \\(api-server\\) is in use.*MLOPS_AIRFLOW_PORT"):
            up(cfg)
    assert list(cfg.run_dir.iterdir()) == []
