"""LakeHook against real Airflow connections (AIRFLOW_CONN_* JSON) for a local lake and the moto S3 server."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from airflow_mlops.core.lake.storage import Lake, LocalLake, S3Lake
from airflow_mlops.hooks import LakeConfigError, LakeHook


def set_conn(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields: Any) -> None:
    """Define an Airflow connection the way a deployment can: an AIRFLOW_CONN_<ID> JSON variable."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))


def s3_conn(s3_lake_root: tuple[str, dict[str, Any]], **extra: Any) -> dict[str, Any]:
    root, kwargs = s3_lake_root
    return {
        "conn_type": "mlops_lake",
        "login": kwargs["aws_access_key_id"],
        "password": kwargs["aws_secret_access_key"],
        "extra": {
            "lake_root": root,
            "endpoint_url": kwargs["endpoint_url"],
            "region_name": kwargs["region_name"],
            **extra,
        },
    }


@pytest.fixture()
def no_aws_env(s3_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """No credentials or endpoint in the environment: whatever reaches S3 got them from the connection."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)


def test_local_lake_root_from_connection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLOPS_LAKE_ROOT", raising=False)
    set_conn(monkeypatch, "my_lake", conn_type="mlops_lake", extra={"lake_root": str(tmp_path / "lake")})
    hook = LakeHook(lake_conn_id="my_lake")
    lake = hook.get_lake()
    assert isinstance(lake, LocalLake)
    assert lake.root == str(tmp_path / "lake")
    assert hook.get_lake() is lake
    assert hook.get_conn() is lake
    lake.write_text(lake.uri("landing", "p", "x.csv"), "a\n1\n")
    assert (tmp_path / "lake" / "landing" / "p" / "x.csv").read_text() == "a\n1\n"
    ok, message = hook.test_connection()
    assert ok, message
    assert str(tmp_path / "lake") in message


def test_default_connection_without_root_uses_env(lake_root: Path) -> None:
    # tests/conftest.py defines mlops_storage as a bare generic connection; lake_root sets MLOPS_LAKE_ROOT.
    hook = LakeHook()
    assert hook.lake_conn_id == "mlops_storage"
    assert hook.get_lake().root == str(lake_root)


def test_connection_root_wins_over_env(lake_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch, "mlops_storage", conn_type="generic", extra={"lake_root": str(tmp_path / "other")})
    assert LakeHook().get_lake().root == str(tmp_path / "other")


def test_conn_id_from_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_STORAGE_CONN_ID", "team_lake")
    set_conn(monkeypatch, "team_lake", conn_type="generic", extra={"lake_root": str(tmp_path)})
    hook = LakeHook()
    assert hook.lake_conn_id == "team_lake"
    assert hook.get_lake().root == str(tmp_path)


def test_missing_default_connection_falls_back_to_env(lake_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    default = f"undefined_{uuid.uuid4().hex}"
    monkeypatch.setenv("MLOPS_STORAGE_CONN_ID", default)
    assert LakeHook().get_lake().root == str(lake_root)
    # Operators pass the default id explicitly: same behaviour.
    assert LakeHook(lake_conn_id=default).get_lake().root == str(lake_root)
    assert asyncio.run(LakeHook().aget_lake()).root == str(lake_root)


def test_aget_lake_in_an_event_loop(
    s3_lake_root: tuple[str, dict[str, Any]], no_aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_conn(monkeypatch, "s3_lake", **s3_conn(s3_lake_root))

    async def probe() -> tuple[Lake, bool, bool]:
        hook = LakeHook(lake_conn_id="s3_lake")
        lake = await hook.aget_lake()
        uri = lake.uri("landing", "p", "f.csv")
        before = await asyncio.to_thread(lake.exists, uri)
        await asyncio.to_thread(lake.write_bytes, uri, b"x")
        after = await asyncio.to_thread(lake.exists, uri)
        assert await hook.aget_lake() is lake
        return lake, before, after

    lake, before, after = asyncio.run(probe())
    assert isinstance(lake, S3Lake) and lake.root == s3_lake_root[0]
    assert (before, after) == (False, True)


def test_missing_explicit_connection_is_an_error(lake_root: Path) -> None:
    from airflow.sdk.exceptions import AirflowNotFoundException

    with pytest.raises(AirflowNotFoundException, match="no_such_conn"):
        LakeHook(lake_conn_id="no_such_conn").get_lake()
    ok, message = LakeHook(lake_conn_id="no_such_conn").test_connection()
    assert not ok and "no_such_conn" in message


def test_no_root_anywhere_says_how_to_set_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLOPS_LAKE_ROOT", raising=False)
    hook = LakeHook()
    hint = r"or set \[mlops\] lake_root in airflow.cfg, or AIRFLOW__MLOPS__LAKE_ROOT or MLOPS_LAKE_ROOT"
    with pytest.raises(LakeConfigError, match=rf"'mlops_storage', {hint}"):
        hook.get_lake()
    ok, message = hook.test_connection()
    assert not ok and "MLOPS_LAKE_ROOT" in message


def test_local_test_connection_fails_on_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "file").write_text("x")
    set_conn(monkeypatch, "bad_lake", conn_type="generic", extra={"lake_root": str(tmp_path / "file")})
    ok, message = LakeHook(lake_conn_id="bad_lake").test_connection()
    assert not ok
    assert "is not a folder" in message


def test_s3_lake_from_connection(
    s3_lake_root: tuple[str, dict[str, Any]], no_aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_conn(monkeypatch, "s3_lake", **s3_conn(s3_lake_root))
    hook = LakeHook(lake_conn_id="s3_lake")
    lake = hook.get_lake()
    assert isinstance(lake, S3Lake)
    assert lake.root == s3_lake_root[0]
    uri = lake.partition_uri("raw", "p", "d", "2013-01-01", "f.csv")
    lake.write_bytes(uri, b"a,b\n")
    # Seen through an independent client: the object is in the connection's bucket at the right key.
    import boto3

    client = boto3.session.Session().client("s3", **s3_lake_root[1])
    bucket, key = S3Lake.split(uri)
    assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == b"a,b\n"
    ok, message = hook.test_connection()
    assert ok, message
    assert s3_lake_root[0] in message


def test_s3_credentials_come_from_the_connection(
    s3_lake_root: tuple[str, dict[str, Any]], no_aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    fields = s3_conn(s3_lake_root)
    del fields["login"], fields["password"]
    set_conn(monkeypatch, "s3_lake", **fields)
    ok, message = LakeHook(lake_conn_id="s3_lake").test_connection()
    assert not ok
    assert "credentials" in message.lower()


def test_s3_config_kwargs_and_extra_keys(
    s3_lake_root: tuple[str, dict[str, Any]], no_aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    fields = s3_conn(s3_lake_root, config_kwargs={"s3": {"addressing_style": "path"}, "retries": {"max_attempts": 2}})
    # Keys in extra (as the Amazon provider also accepts) instead of login/password.
    fields["extra"]["aws_access_key_id"] = fields.pop("login")
    fields["extra"]["aws_secret_access_key"] = fields.pop("password")
    set_conn(monkeypatch, "s3_lake", **fields)
    hook = LakeHook(lake_conn_id="s3_lake")
    lake = hook.get_lake()
    assert isinstance(lake, S3Lake)
    assert lake.client.meta.config.s3 == {"addressing_style": "path"}
    lake.write_bytes(lake.uri("x"), b"1")
    assert lake.list(lake.root) == [lake.uri("x")]


def test_s3_test_connection_missing_bucket(
    s3_lake_root: tuple[str, dict[str, Any]], no_aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    fields = s3_conn(s3_lake_root)
    fields["extra"]["lake_root"] = "s3://bucket-that-is-not-there/lake"
    set_conn(monkeypatch, "s3_lake", **fields)
    ok, message = LakeHook(lake_conn_id="s3_lake").test_connection()
    assert not ok
    assert "s3://bucket-that-is-not-there/lake: bucket 'bucket-that-is-not-there' does not exist" in message


def test_module_has_no_heavy_imports() -> None:
    heavy = ["pandas", "numpy", "boto3", "botocore", "pyarrow", "sklearn", "mlflow"]
    code = f"import sys, airflow_mlops.hooks; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"
