"""docker/init-env, run for real: it writes every variable docker/compose.yaml requires, once."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

from cryptography.fernet import Fernet

from tests.docker import native

SCRIPT = native.DOCKER / "init-env"


def _run(out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), str(out)], capture_output=True, text=True, timeout=60)


def test_it_writes_every_required_variable_of_the_compose_file(tmp_path: Path) -> None:
    out = tmp_path / ".env"
    assert _run(out).returncode == 0
    values = dict(ln.split("=", 1) for ln in out.read_text().splitlines() if ln and not ln.startswith("#"))
    required = {name for name, op, _ in native.variables((native.DOCKER / "compose.yaml").read_text()) if op == ":?"}
    assert set(values) == required
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    Fernet(values["AIRFLOW__CORE__FERNET_KEY"].encode())  # a valid key, or Airflow cannot start
    assert all(v.replace("-", "").isalnum() for k, v in values.items() if k != "AIRFLOW__CORE__FERNET_KEY")
    assert len(set(values.values())) == len(values)


def test_it_keeps_an_existing_file(tmp_path: Path) -> None:
    out = tmp_path / ".env"
    out.write_text("MLOPS_POSTGRES_PASSWORD=chosen\n")
    proc = _run(out)
    assert proc.returncode == 1 and "keeping it" in proc.stderr
    assert out.read_text() == "MLOPS_POSTGRES_PASSWORD=chosen\n"
