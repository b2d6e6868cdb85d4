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


def test_backends_creates_the_databases_and_the_bucket_once(tmp_path: Path, s3_server: str) -> None:
    """What the compose stack's airflow-init runs: settings from the environment only, as in a container."""
    import uuid

    import boto3

    from airflow_mlops.stack import backends
    from airflow_mlops.stack.settings import StackConfig
    from tests.fixtures.s3 import FAKE_CREDENTIALS, s3_client_kwargs

    tag = uuid.uuid4().hex[:10]
    settings = {
        "MLOPS_STACK_PROFILE": "distributed",
        "MLOPS_AIRFLOW_DB": f"containers_{tag}_af",
        "MLOPS_MLFLOW_DB": f"containers_{tag}_ml",
        "MLOPS_S3_BUCKET": f"containers-{tag}",
        "MLOPS_S3_ENDPOINT_URL": s3_server,
        "MLOPS_S3_ACCESS_KEY_ID": FAKE_CREDENTIALS["aws_access_key_id"],
        "MLOPS_S3_SECRET_ACCESS_KEY": FAKE_CREDENTIALS["aws_secret_access_key"],
    }
    env = {"PATH": "/usr/bin", **settings}
    cmd = [sys.executable, "-m", "airflow_mlops.stack", "--settings", str(tmp_path / "none.env"), "backends"]
    cfg = StackConfig.load(tmp_path / "none.env", environ=env)
    try:
        first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert first.returncode == 0, first.stderr
        assert first.stdout.strip() == (
            f"backends: created database containers_{tag}_af, database containers_{tag}_ml, bucket containers-{tag}"
        )
        assert backends.existing_databases(cfg) == [f"containers_{tag}_af", f"containers_{tag}_ml"]
        boto3.client("s3", **s3_client_kwargs(s3_server)).head_bucket(Bucket=f"containers-{tag}")
        again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=True)
        assert again.stdout.strip() == "backends: all present"
    finally:
        backends.drop_databases(cfg)


def test_backends_refuses_the_embedded_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--settings", str(tmp_path / "none.env"), "backends"]) == 1
    assert "distributed profile" in capsys.readouterr().err
