"""Tests of the distributed profile's backing services, against the machine's PostgreSQL and Redis and a moto S3."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_mlops.stack import backends
from airflow_mlops.stack.settings import StackConfig, StackError
from airflow_mlops.stack.supervisor import free_port
from tests.airflow_mlops.stack.helpers import make_cfg
from tests.fixtures.s3 import FAKE_CREDENTIALS


@pytest.fixture()
def db_cfg(tmp_path: Path) -> Iterator[StackConfig]:
    """A distributed config naming two databases of this test alone; they are dropped at the end."""
    tag = uuid.uuid4().hex[:12]
    cfg = make_cfg(
        tmp_path,
        MLOPS_STACK_PROFILE="distributed",
        MLOPS_AIRFLOW_DB=f"mlops_test_{tag}_af",
        MLOPS_MLFLOW_DB=f"mlops_test_{tag}_ml",
    )
    yield cfg
    backends.drop_databases(cfg)


def _create_table(cfg: StackConfig, setting: str) -> None:
    import psycopg2

    with psycopg2.connect(cfg.database_url(setting)) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE marker (x int)")
    conn.close()


def _has_table(cfg: StackConfig, setting: str) -> bool:
    import psycopg2

    with psycopg2.connect(cfg.database_url(setting)) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('marker') IS NOT NULL")
        found = bool(cur.fetchone()[0])
    conn.close()
    return found


def test_databases_are_created_once_and_anew_on_reset(db_cfg: StackConfig) -> None:
    names = [db_cfg.settings["MLOPS_AIRFLOW_DB"], db_cfg.settings["MLOPS_MLFLOW_DB"]]
    assert backends.existing_databases(db_cfg) == []
    assert backends.ensure_databases(db_cfg) == names
    assert backends.ensure_databases(db_cfg) == []  # idempotent
    _create_table(db_cfg, "MLOPS_AIRFLOW_DB")
    assert _has_table(db_cfg, "MLOPS_AIRFLOW_DB")
    assert backends.ensure_databases(db_cfg, reset=True) == names
    assert not _has_table(db_cfg, "MLOPS_AIRFLOW_DB")
    backends.drop_databases(db_cfg)
    assert backends.existing_databases(db_cfg) == []


def test_an_unreachable_postgres_names_the_settings(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, MLOPS_STACK_PROFILE="distributed", MLOPS_POSTGRES_PORT=str(free_port()))
    with pytest.raises(StackError, match=r"PostgreSQL does not answer as postgres@127.0.0.1:.*MLOPS_POSTGRES_HOST"):
        backends.ensure_databases(cfg)


def test_redis_is_checked_and_a_missing_one_named(tmp_path: Path) -> None:
    backends.check_redis(make_cfg(tmp_path, MLOPS_STACK_PROFILE="distributed"))
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(StackError, match=f"Redis does not answer at {url}.*MLOPS_REDIS_URL"):
        backends.check_redis(make_cfg(tmp_path, MLOPS_STACK_PROFILE="distributed", MLOPS_REDIS_URL=url))


def test_the_bucket_is_created_when_missing(tmp_path: Path, s3_server: str) -> None:
    bucket = f"test-{uuid.uuid4().hex[:20]}"
    cfg = make_cfg(
        tmp_path,
        MLOPS_STACK_PROFILE="distributed",
        MLOPS_S3_ENDPOINT_URL=s3_server,
        MLOPS_S3_BUCKET=bucket,
        MLOPS_S3_ACCESS_KEY_ID=FAKE_CREDENTIALS["aws_access_key_id"],
        MLOPS_S3_SECRET_ACCESS_KEY=FAKE_CREDENTIALS["aws_secret_access_key"],
    )
    assert backends.ensure_bucket(cfg) is True
    assert backends.ensure_bucket(cfg) is False
    backends.s3_client(cfg).delete_bucket(Bucket=bucket)


def test_an_unreachable_s3_names_the_setting(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, MLOPS_STACK_PROFILE="distributed", MLOPS_S3_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(StackError, match=r"S3 does not answer at http://127.0.0.1:.*MLOPS_S3_ENDPOINT_URL"):
        backends.ensure_bucket(cfg)
