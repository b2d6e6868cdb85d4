"""Tests of the stack's command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from airflow_mlops.stack.cli import main
from airflow_mlops.stack.components import COMPONENTS


def test_status_of_a_stopped_stack(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--state-dir", str(tmp_path / "state"), "status"]) == 0
    out = capsys.readouterr().out
    rows = out.splitlines()[1 : 1 + len(COMPONENTS)]
    assert [line.split()[:2] for line in rows] == [[n, "stopped"] for n in COMPONENTS]


def test_bad_cli_date_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["demo", "--start", "2013-13-01"])
    assert "not a date (YYYY-MM-DD): '2013-13-01'" in capsys.readouterr().err


def test_the_package_runs_as_a_module(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "airflow_mlops.stack", "--state-dir", str(tmp_path), "env"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert f"export AIRFLOW_HOME='{tmp_path / 'airflow'}'" in proc.stdout.splitlines()
