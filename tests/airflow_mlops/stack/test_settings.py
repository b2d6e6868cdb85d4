"""Tests of the stack's settings: mlops.env parsing, precedence, resolved paths and ports."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_mlops.stack.settings import (
    DEFAULTS,
    StackConfig,
    StackError,
    clean_environ,
    merge_settings,
    parse_settings,
)
from tests.airflow_mlops.stack.helpers import make_cfg

ROOT = Path(__file__).resolve().parents[3]


def test_parse_settings_reads_comments_quotes_and_export() -> None:
    text = """
# a comment
MLOPS_A=1
export MLOPS_B = two words
MLOPS_C="quoted # not a comment"
MLOPS_D='single'
MLOPS_E=value # inline comment
MLOPS_F=
"""
    assert parse_settings(text) == {
        "MLOPS_A": "1",
        "MLOPS_B": "two words",
        "MLOPS_C": "quoted # not a comment",
        "MLOPS_D": "single",
        "MLOPS_E": "value",
        "MLOPS_F": "",
    }


def test_parse_settings_names_file_and_line_of_a_bad_line() -> None:
    with pytest.raises(StackError, match=r"my\.env, line 2: expected KEY=VALUE, got 'oops'"):
        parse_settings("A=1\noops\n", "my.env")


def test_parse_settings_refuses_a_key_set_twice() -> None:
    with pytest.raises(StackError, match="line 3: MLOPS_A is set twice"):
        parse_settings("MLOPS_A=1\n\nMLOPS_A=2\n")


def test_environment_overrides_file_which_overrides_defaults() -> None:
    merged = merge_settings(
        {"MLOPS_AIRFLOW_PORT": "9090", "MLOPS_MLFLOW_PORT": "6000", "CUSTOM": "file"},
        {"MLOPS_MLFLOW_PORT": "7000", "CUSTOM": "env", "AIRFLOW__CORE__X": "y", "HOME": "/root"},
    )
    assert merged["MLOPS_AIRFLOW_PORT"] == "9090"  # file over default
    assert merged["MLOPS_MLFLOW_PORT"] == "7000"  # environment over file
    assert merged["CUSTOM"] == "env"  # any key of the file can be overridden
    assert merged["AIRFLOW__CORE__X"] == "y"
    assert merged["MLOPS_MODEL_SERVER_PORT"] == "8000"  # default
    assert "HOME" not in merged


def test_repo_settings_file_parses_and_sets_only_known_keys() -> None:
    values = parse_settings((ROOT / "mlops.env").read_text(), "mlops.env")
    unknown = [k for k in values if k not in DEFAULTS and not k.startswith("AIRFLOW__")]
    assert unknown == []
    assert int(values["AIRFLOW__CORE__PARALLELISM"]) <= 4
    cfg = StackConfig.load(ROOT / "mlops.env", environ={})
    assert (cfg.airflow_port, cfg.mlflow_port, cfg.model_server_port) == (8080, 5000, 8000)
    assert cfg.state_dir == ROOT / ".local" / "stack"
    assert cfg.lake_root == str(ROOT / ".local" / "stack" / "lake")


def test_missing_settings_file_means_defaults(tmp_path: Path) -> None:
    cfg = StackConfig.load(tmp_path / "absent.env", environ={}, overrides={"MLOPS_AIRFLOW_PORT": "18080"})
    assert cfg.airflow_port == 18080
    assert cfg.mlflow_port == 5000


def test_relative_paths_are_relative_to_the_repo(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, MLOPS_STATE_DIR="st", MLOPS_LAKE_ROOT="data/lake")
    assert cfg.state_dir == (tmp_path / "repo" / "st").resolve()
    assert cfg.lake_root == str((tmp_path / "repo" / "data" / "lake").resolve())
    assert cfg.airflow_home == cfg.state_dir / "airflow"


def test_lake_root_defaults_to_the_state_folder_and_keeps_s3(tmp_path: Path) -> None:
    assert make_cfg(tmp_path).lake_root == str(tmp_path / "state" / "lake")
    assert make_cfg(tmp_path, MLOPS_LAKE_ROOT="s3://bucket/prefix/").lake_root == "s3://bucket/prefix"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("MLOPS_AIRFLOW_PORT", "http", "MLOPS_AIRFLOW_PORT must be a whole number, got 'http'"),
        ("MLOPS_MLFLOW_PORT", "70000", "MLOPS_MLFLOW_PORT must be a port number"),
        ("MLOPS_LAKE_ROOT", "gs://bucket", "MLOPS_LAKE_ROOT must be a folder or s3://bucket/prefix"),
    ],
)
def test_bad_settings_name_the_key(tmp_path: Path, key: str, value: str, message: str) -> None:
    with pytest.raises(StackError, match=message):
        make_cfg(tmp_path, **{key: value})


def test_clean_environ_drops_airflow_and_mlops_settings() -> None:
    env = {"PATH": "/bin", "AIRFLOW_HOME": "/x", "AIRFLOW__CORE__X": "1", "MLOPS_LAKE_ROOT": "/l", "MLFLOW_X": "1"}
    assert clean_environ(env) == {"PATH": "/bin"}


# The distributed profile --------------------------------------------------------------------


def test_the_profile_is_one_setting_and_the_environment_wins(tmp_path: Path) -> None:
    settings = tmp_path / "mlops.env"
    settings.write_text("MLOPS_STACK_PROFILE=embedded\n")
    assert StackConfig.load(settings, environ={}).profile == "embedded"
    cfg = StackConfig.load(settings, environ={"MLOPS_STACK_PROFILE": "distributed"})
    assert cfg.profile == "distributed" and cfg.distributed


def test_distributed_profile_keeps_the_lake_and_artifacts_in_the_bucket(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, MLOPS_STACK_PROFILE="distributed", MLOPS_S3_BUCKET="my-bucket")
    assert cfg.lake_root == "s3://my-bucket/lake"
    assert cfg.mlflow_artifacts == "s3://my-bucket/mlflow"
    assert make_cfg(tmp_path).mlflow_artifacts == str(tmp_path / "state" / "mlflow" / "artifacts")
    other = make_cfg(tmp_path, MLOPS_STACK_PROFILE="distributed", MLOPS_LAKE_ROOT="s3://elsewhere/x/")
    assert other.lake_root == "s3://elsewhere/x"


def test_distributed_profile_runs_its_own_s3_unless_an_endpoint_is_given(tmp_path: Path) -> None:
    managed = make_cfg(tmp_path, MLOPS_STACK_PROFILE="distributed", MLOPS_S3_PORT="19999")
    assert managed.s3_managed
    assert managed.s3_settings() == {
        "endpoint_url": "http://127.0.0.1:19999",
        "aws_access_key_id": "mlops-local",
        "aws_secret_access_key": "mlops-local-secret",
    }
    own = make_cfg(
        tmp_path,
        MLOPS_STACK_PROFILE="distributed",
        MLOPS_S3_ENDPOINT_URL="http://minio:9000",
        MLOPS_S3_ACCESS_KEY_ID="k",
        MLOPS_S3_SECRET_ACCESS_KEY="s",
    )
    assert not own.s3_managed
    assert own.s3_settings() == {
        "endpoint_url": "http://minio:9000",
        "aws_access_key_id": "k",
        "aws_secret_access_key": "s",
    }
    assert not make_cfg(tmp_path).s3_managed  # embedded: no S3 server of its own


def test_workers_get_their_own_loopback_addresses(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, MLOPS_STACK_PROFILE="distributed", MLOPS_CELERY_WORKERS="3")
    assert [(w.name, w.address, w.log_server) for w in cfg.workers] == [
        ("worker-1", "127.0.0.11", "worker-1-logs"),
        ("worker-2", "127.0.0.12", "worker-2-logs"),
        ("worker-3", "127.0.0.13", "worker-3-logs"),
    ]
    assert make_cfg(tmp_path, MLOPS_CELERY_WORKERS="3").workers == []


def test_database_urls_quote_the_password(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, MLOPS_STACK_PROFILE="distributed", MLOPS_AIRFLOW_DB="af")
    assert (
        cfg.database_url("MLOPS_AIRFLOW_DB", "postgresql+psycopg2")
        == "postgresql+psycopg2://postgres@127.0.0.1:5432/af"
    )
    cfg = make_cfg(tmp_path, MLOPS_STACK_PROFILE="distributed", MLOPS_POSTGRES_PASSWORD="p@ss:w/rd")
    assert cfg.database_url("MLOPS_MLFLOW_DB") == "postgresql://postgres:p%40ss%3Aw%2Frd@127.0.0.1:5432/mlops_mlflow"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"MLOPS_STACK_PROFILE": "cluster"}, "MLOPS_STACK_PROFILE must be one of embedded, distributed, got 'cluster'"),
        ({"MLOPS_LAKE_ROOT": "/data/lake"}, "distributed profile keeps the lake in S3.*MLOPS_LAKE_ROOT"),
        ({"MLOPS_AIRFLOW_DB": "air-flow"}, "MLOPS_AIRFLOW_DB must be a PostgreSQL database name"),
        ({"MLOPS_MLFLOW_DB": "mlops_airflow"}, "MLOPS_AIRFLOW_DB and MLOPS_MLFLOW_DB must name two databases"),
        ({"MLOPS_S3_BUCKET": "My_Bucket"}, "MLOPS_S3_BUCKET must be an S3 bucket name"),
        ({"MLOPS_REDIS_URL": "localhost:6379"}, "MLOPS_REDIS_URL must be redis://host:port/db"),
        ({"MLOPS_CELERY_WORKERS": "0"}, "MLOPS_CELERY_WORKERS must be between 1 and 9, got 0"),
        ({"MLOPS_CELERY_QUEUE": "a queue"}, "MLOPS_CELERY_QUEUE must be a queue name"),
        ({"MLOPS_WORKER_LOG_SERVER_PORT": "x"}, "MLOPS_WORKER_LOG_SERVER_PORT must be a whole number"),
    ],
)
def test_bad_distributed_settings_name_the_key(tmp_path: Path, settings: dict[str, str], message: str) -> None:
    with pytest.raises(StackError, match=message):
        make_cfg(tmp_path, **{"MLOPS_STACK_PROFILE": "distributed", **settings})
