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
