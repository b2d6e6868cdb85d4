"""The services the distributed profile runs on: PostgreSQL databases, Redis, the S3 bucket."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from airflow_mlops.stack.settings import StackConfig, StackError

DATABASE_SETTINGS = ("MLOPS_AIRFLOW_DB", "MLOPS_MLFLOW_DB")


@contextlib.contextmanager
def _postgres(cfg: StackConfig) -> Iterator[Any]:
    """An autocommit connection to the server's `postgres` database (CREATE/DROP DATABASE need one)."""
    import psycopg2

    s = cfg.settings
    where = f"{s['MLOPS_POSTGRES_USER']}@{s['MLOPS_POSTGRES_HOST']}:{s['MLOPS_POSTGRES_PORT']}"
    try:
        conn = psycopg2.connect(
            host=s["MLOPS_POSTGRES_HOST"],
            port=cfg.port_setting("MLOPS_POSTGRES_PORT"),
            user=s["MLOPS_POSTGRES_USER"],
            password=s["MLOPS_POSTGRES_PASSWORD"] or None,
            dbname="postgres",
            connect_timeout=5,
        )
    except psycopg2.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StackError(
            f"PostgreSQL does not answer as {where} ({first}): the distributed profile keeps Airflow's and "
            f"MLflow's metadata there; start it or set MLOPS_POSTGRES_HOST/PORT/USER/PASSWORD in {cfg.source}"
        ) from None
    conn.autocommit = True
    try:
        yield conn
    finally:
        conn.close()


def check_redis(cfg: StackConfig) -> None:
    """StackError unless the Celery broker answers PING."""
    import redis

    url = cfg.settings["MLOPS_REDIS_URL"]
    client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise StackError(
            f"Redis does not answer at {url} ({exc}): the distributed profile's Celery broker; start it or set "
            f"MLOPS_REDIS_URL in {cfg.source}"
        ) from None
    finally:
        client.close()


def existing_databases(cfg: StackConfig) -> list[str]:
    """Which of the stack's databases exist."""
    names = [cfg.settings[key] for key in DATABASE_SETTINGS]
    with _postgres(cfg) as conn, conn.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s)", (names,))
        found = {row[0] for row in cur.fetchall()}
    return [n for n in names if n in found]


def ensure_databases(cfg: StackConfig, reset: bool = False) -> list[str]:
    """Create the Airflow and MLflow databases that are missing (all of them anew with `reset`).

    :returns: the databases created.
    """
    from psycopg2 import sql

    names = [cfg.settings[key] for key in DATABASE_SETTINGS]
    with _postgres(cfg) as conn, conn.cursor() as cur:
        if reset:
            for name in names:
                # FORCE: connections a killed process left behind must not keep the database alive.
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        cur.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s)", (names,))
        found = {row[0] for row in cur.fetchall()}
        created = [n for n in names if n not in found]
        for name in created:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return created


def drop_databases(cfg: StackConfig) -> None:
    """Drop the stack's two databases (tests clean up with it; the stack itself never calls it)."""
    from psycopg2 import sql

    with _postgres(cfg) as conn, conn.cursor() as cur:
        for key in DATABASE_SETTINGS:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(cfg.settings[key])))


def s3_client(cfg: StackConfig) -> Any:
    """A boto3 S3 client for the stack's store (endpoint and keys of the settings)."""
    import boto3

    kwargs: dict[str, Any] = {"region_name": "us-east-1", **cfg.s3_settings()}
    return boto3.session.Session().client("s3", **kwargs)


def ensure_bucket(cfg: StackConfig) -> bool:
    """Create the stack's bucket if it is missing; whether it was created."""
    from botocore.exceptions import BotoCoreError, ClientError

    client = s3_client(cfg)
    endpoint = cfg.s3_settings().get("endpoint_url", "AWS S3")
    try:
        client.head_bucket(Bucket=cfg.bucket)
        return False
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise StackError(f"cannot use bucket {cfg.bucket!r} at {endpoint}: {exc}") from None
    except BotoCoreError as exc:
        raise StackError(
            f"S3 does not answer at {endpoint} ({exc}); check MLOPS_S3_ENDPOINT_URL in {cfg.source}"
        ) from None
    try:
        client.create_bucket(Bucket=cfg.bucket)
    except (ClientError, BotoCoreError) as exc:
        raise StackError(f"cannot create bucket {cfg.bucket!r} at {endpoint}: {exc}") from None
    return True


def prepare(cfg: StackConfig) -> list[str]:
    """Redis answers; the two databases and the bucket exist (created when missing): what was created.

    What `up` does before starting the distributed profile, for stacks this package does not start
    (the compose stack's airflow-init runs it as `python -m airflow_mlops.stack backends --distributed`).
    """
    if not cfg.distributed:
        raise StackError(
            f"{cfg.source}: backends are those of the distributed profile (MLOPS_STACK_PROFILE=distributed)"
        )
    check_redis(cfg)
    created = [f"database {name}" for name in ensure_databases(cfg)]
    if ensure_bucket(cfg):
        created.append(f"bucket {cfg.bucket}")
    return created
