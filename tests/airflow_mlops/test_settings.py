"""Deployment settings: MLOPS_* variables over Airflow's [mlops] section over the defaults."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from airflow_mlops import settings
from airflow_mlops.config import PipelineConfigError, load_pipelines

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No deployment setting in the environment (the test session's Airflow is loaded)."""
    import airflow.configuration  # noqa: F401  # as in every Airflow process

    for setting in settings.SETTINGS:
        monkeypatch.delenv(setting.env, raising=False)
        monkeypatch.delenv(setting.airflow_env, raising=False)
    return monkeypatch


def test_mlops_variable_wins_over_the_airflow_option(clean_env: pytest.MonkeyPatch) -> None:
    assert settings.storage_conn_id() == "mlops_storage"
    clean_env.setenv("AIRFLOW__MLOPS__STORAGE_CONN_ID", "from_airflow")
    assert settings.storage_conn_id() == "from_airflow"
    assert settings.source(settings.STORAGE_CONN_ID) == "[mlops] storage_conn_id"
    clean_env.setenv("MLOPS_STORAGE_CONN_ID", "from_mlops")
    assert settings.storage_conn_id() == "from_mlops"
    assert settings.source(settings.STORAGE_CONN_ID) == "MLOPS_STORAGE_CONN_ID"
    clean_env.setenv("MLOPS_STORAGE_CONN_ID", "")  # empty counts as unset
    assert settings.storage_conn_id() == "from_airflow"


def test_every_setting_reads_its_airflow_option(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for setting in settings.SETTINGS:
        clean_env.setenv(setting.airflow_env, str(tmp_path / setting.key))
    assert settings.lake_root() == str(tmp_path / "lake_root")
    assert settings.pipelines_dir() == tmp_path / "pipelines_dir"
    assert settings.expectations_dir() == tmp_path / "expectations_dir"
    assert settings.mlflow_conn_id() == str(tmp_path / "mlflow_conn_id")
    assert settings.model_server_conn_id() == str(tmp_path / "model_server_conn_id")
    assert settings.reports_base_url() == str(tmp_path / "reports_base_url")


PROBE = """
import sys
from airflow_mlops import settings
print("before", settings.lake_root(), settings.reports_base_url())
import airflow  # what every Airflow component and task has imported
print("after", settings.lake_root(), settings.reports_base_url())
"""


def test_airflow_cfg_counts_in_airflow_processes_only(tmp_path: Path) -> None:
    cfg = tmp_path / "airflow.cfg"
    cfg.write_text("[mlops]\nlake_root = /lake/from/airflow.cfg\n")
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW_CONFIG": str(cfg),
        "AIRFLOW__MLOPS__REPORTS_BASE_URL": "/prefix/mlops",
    }
    proc = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith(("before", "after"))]
    # a process without Airflow (the model server) reads Airflow's variables only
    assert lines == ["before None /prefix/mlops", "after /lake/from/airflow.cfg /prefix/mlops"]


def test_defaults_in_a_checkout(clean_env: pytest.MonkeyPatch) -> None:
    assert settings.pipelines_dir() == ROOT / "include" / "pipelines"
    assert settings.expectations_dir() == ROOT / "include" / "expectations"


def test_defaults_of_an_installed_package(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setattr(settings, "PROJECT_ROOT", tmp_path / "site-packages")  # no include/ beside the package
    clean_env.setenv("AIRFLOW_HOME", str(tmp_path / "home"))
    assert settings.pipelines_dir() == tmp_path / "home" / "include" / "pipelines"
    assert settings.expectations_dir() == tmp_path / "home" / "include" / "expectations"


def test_a_missing_pipelines_folder_says_which_setting_to_set(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("AIRFLOW__MLOPS__PIPELINES_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(PipelineConfigError) as err:
        load_pipelines()
    assert str(err.value) == (
        f"pipelines folder {tmp_path / 'nowhere'} does not exist (from [mlops] pipelines_dir): set [mlops] "
        "pipelines_dir in airflow.cfg, or AIRFLOW__MLOPS__PIPELINES_DIR or MLOPS_PIPELINES_DIR in the environment, "
        "to the folder holding your <name>.yaml pipeline files"
    )

    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    # Both DAG files need the folder: each says which setting to set.
    assert {Path(f).name for f in bag.import_errors} == {"mlops_pipelines.py", "mlops_pipeline_errors.py"}
    for error in bag.import_errors.values():
        assert "pipelines folder" in error and "set [mlops] pipelines_dir in airflow.cfg" in error


def test_a_missing_expectations_folder_says_which_setting_to_set(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("MLOPS_EXPECTATIONS_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(PipelineConfigError, match=r"expectations folder .* \(from MLOPS_EXPECTATIONS_DIR\): set"):
        load_pipelines()
