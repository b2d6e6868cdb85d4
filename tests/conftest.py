"""Test set-up: an isolated Airflow home (SQLite) and a per-test lake, before Airflow is imported."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEST_HOME = ROOT / ".local" / "test-airflow"

# Airflow reads its configuration when first imported: set it before any test module imports it.
os.environ.update(
    {
        "AIRFLOW_HOME": str(TEST_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{TEST_HOME / 'airflow.db'}",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(TEST_HOME / "logs"),
        "AIRFLOW__API_AUTH__JWT_SECRET": "test-secret-not-for-production-0123456789abcdef0123456789abcdef0123",
        "AIRFLOW__API__SECRET_KEY": "test-secret-not-for-production-0123456789abcdef0123456789abcdef0123",
        "AIRFLOW_CONN_MLOPS_STORAGE": '{"conn_type": "generic"}',
    }
)
TEST_HOME.mkdir(parents=True, exist_ok=True)

pytest_plugins = [
    "tests.fixtures.s3",
    "tests.fixtures.airflow_db",
    "tests.fixtures.airflow_api",
    "tests.fixtures.flights",
    "tests.fixtures.mlflow_server",
    "tests.fixtures.model_server",
]


@pytest.fixture()
def lake_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh local lake for one test, also set as the deployment's lake root."""
    root = tmp_path / "lake"
    root.mkdir()
    monkeypatch.setenv("MLOPS_LAKE_ROOT", str(root))
    yield root


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run a command with this interpreter's venv on PATH, failing with its output."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc
