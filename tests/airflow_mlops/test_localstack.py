"""Tests of the local stack's pure parts: settings, environment, health rules, lake summary, process stop."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest

from airflow_mlops import localstack as ls

ROOT = Path(__file__).resolve().parents[2]


def make_cfg(tmp_path: Path, environ: dict[str, str] | None = None, **settings: str) -> ls.StackConfig:
    merged = ls.merge_settings({"MLOPS_STATE_DIR": str(tmp_path / "state"), **settings}, environ or {})
    return ls.StackConfig(settings=merged, environ=environ or {"PATH": "/usr/bin"}, repo_root=tmp_path / "repo")


# Settings file ------------------------------------------------------------------------------


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
    assert ls.parse_settings(text) == {
        "MLOPS_A": "1",
        "MLOPS_B": "two words",
        "MLOPS_C": "quoted # not a comment",
        "MLOPS_D": "single",
        "MLOPS_E": "value",
        "MLOPS_F": "",
    }


def test_parse_settings_names_file_and_line_of_a_bad_line() -> None:
    with pytest.raises(ls.StackError, match=r"my\.env, line 2: expected KEY=VALUE, got 'oops'"):
        ls.parse_settings("A=1\noops\n", "my.env")


def test_parse_settings_refuses_a_key_set_twice() -> None:
    with pytest.raises(ls.StackError, match="line 3: MLOPS_A is set twice"):
        ls.parse_settings("MLOPS_A=1\n\nMLOPS_A=2\n")


def test_environment_overrides_file_which_overrides_defaults() -> None:
    merged = ls.merge_settings(
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
    values = ls.parse_settings((ROOT / "mlops.env").read_text(), "mlops.env")
    unknown = [k for k in values if k not in ls.DEFAULTS and not k.startswith("AIRFLOW__")]
    assert unknown == []
    assert int(values["AIRFLOW__CORE__PARALLELISM"]) <= 4
    cfg = ls.StackConfig.load(ROOT / "mlops.env", environ={})
    assert (cfg.airflow_port, cfg.mlflow_port, cfg.model_server_port) == (8080, 5000, 8000)
    assert cfg.state_dir == ROOT / ".local" / "stack"
    assert cfg.lake_root == str(ROOT / ".local" / "stack" / "lake")


def test_missing_settings_file_means_defaults(tmp_path: Path) -> None:
    cfg = ls.StackConfig.load(tmp_path / "absent.env", environ={}, overrides={"MLOPS_AIRFLOW_PORT": "18080"})
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
    with pytest.raises(ls.StackError, match=message):
        make_cfg(tmp_path, **{key: value})


def test_clean_environ_drops_airflow_and_mlops_settings() -> None:
    env = {"PATH": "/bin", "AIRFLOW_HOME": "/x", "AIRFLOW__CORE__X": "1", "MLOPS_LAKE_ROOT": "/l", "MLFLOW_X": "1"}
    assert ls.clean_environ(env) == {"PATH": "/bin"}


# Secrets and environment --------------------------------------------------------------------


def test_secrets_are_generated_once_and_private(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path)
    first = ls.ensure_secrets(cfg)
    assert ls.ensure_secrets(cfg) == first
    assert json.loads(cfg.passwords_file.read_text()) == {"admin": first.admin_password}
    for path in (cfg.secrets_file, cfg.passwords_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len({first.jwt_secret, first.api_secret_key, first.admin_password}) == 3
    assert first.admin_password.isalnum() and len(first.admin_password) == 16


def test_fernet_key_is_accepted_by_cryptography(tmp_path: Path) -> None:
    from cryptography.fernet import Fernet

    key = ls.ensure_secrets(make_cfg(tmp_path)).fernet_key
    assert Fernet(key.encode()).decrypt(Fernet(key.encode()).encrypt(b"x")) == b"x"


def test_stack_env_configures_airflow_for_the_state_folder(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, MLOPS_AIRFLOW_PORT="18080", MLOPS_MLFLOW_PORT="15000")
    keys = ls.ensure_secrets(cfg)
    env = ls.stack_env(cfg, keys)
    assert env["AIRFLOW_HOME"] == str(cfg.state_dir / "airflow")
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(tmp_path / "repo" / "dags")
    assert "AIRFLOW__CORE__PLUGINS_FOLDER" not in env  # the plugin comes from the package's entry point
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert int(env["AIRFLOW__CORE__PARALLELISM"]) <= 4
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{cfg.state_dir / 'airflow' / 'airflow.db'}"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18080/execution/"
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == keys.jwt_secret
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] == str(cfg.passwords_file)
    assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:15000"
    assert env["MLOPS_LAKE_ROOT"] == str(cfg.state_dir / "lake")
    assert env[ls.STACK_MARKER] == str(cfg.state_dir)
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)


def test_airflow_settings_win_over_the_stack_values(tmp_path: Path) -> None:
    cfg = make_cfg(
        tmp_path,
        environ={"PATH": "/bin", "AIRFLOW__CORE__PARALLELISM": "2", "UNRELATED": "kept"},
        AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="30",
    )
    env = ls.stack_env(cfg, ls.ensure_secrets(cfg))
    assert env["AIRFLOW__CORE__PARALLELISM"] == "2"
    assert env["AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL"] == "30"
    assert env["UNRELATED"] == "kept"


def test_executor_workers_preload_the_ml_stack_unless_told_otherwise(tmp_path: Path) -> None:
    env = ls.stack_env(make_cfg(tmp_path), ls.ensure_secrets(make_cfg(tmp_path)))
    assert env["AIRFLOW__SCHEDULER__MP_START_METHOD"] == "forkserver"
    assert env["AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD"].split(",") == list(ls.FORKSERVER_PRELOAD)
    assert "airflow_mlops.preload" in ls.FORKSERVER_PRELOAD

    cfg = make_cfg(tmp_path, AIRFLOW__SCHEDULER__MP_START_METHOD="fork")
    assert ls.stack_env(cfg, ls.ensure_secrets(cfg))["AIRFLOW__SCHEDULER__MP_START_METHOD"] == "fork"


@pytest.mark.slow
def test_the_preload_imports_everything_and_leaves_a_forkable_process() -> None:
    """The forkserver imports these, then forks workers (which fork tasks): a thread started at import would
    be copied half-alive into every task, and a module that fails to import would be silently skipped."""
    probe = (
        "import importlib, sys, threading\n"
        f"for name in {list(ls.FORKSERVER_PRELOAD)!r}: importlib.import_module(name)\n"
        "from airflow_mlops import preload\n"
        "missing = [m for m in preload.MODULES if m not in sys.modules]\n"
        "heavy = [m for m in ('pandas', 'sklearn', 'mlflow', 'skops', 'great_expectations', 'evidently')\n"
        "         if m not in sys.modules]\n"
        "print('RESULT', threading.active_count(), missing, heavy)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
    proc = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=600, check=True
    )
    (result,) = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    assert result == "RESULT 1 [] []", proc.stderr[-3000:]
    # skops walks sys.modules with getattr and hits Airflow's deprecated-import shims: silenced, not flooded.
    assert proc.stderr.count("DeprecatedImportWarning") == 0


def test_connections_are_read_by_airflow_and_the_lake_hook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.models.connection import Connection

    from airflow_mlops.hooks import LakeHook, MlflowHook

    cfg = make_cfg(
        tmp_path,
        MLOPS_LAKE_ROOT="s3://lake/demo",
        MLOPS_S3_ENDPOINT_URL="http://127.0.0.1:9000",
        MLOPS_S3_ACCESS_KEY_ID="key-id",
        MLOPS_S3_SECRET_ACCESS_KEY="secret",
        MLOPS_MLFLOW_PORT="15000",
    )
    env = ls.stack_env(cfg, ls.ensure_secrets(cfg))
    mlflow = Connection.from_json(env["AIRFLOW_CONN_MLFLOW_DEFAULT"], conn_id="mlflow_default")
    assert (mlflow.conn_type, mlflow.host, mlflow.port, mlflow.schema) == ("mlops_mlflow", "127.0.0.1", 15000, "http")

    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", env["AIRFLOW_CONN_MLFLOW_DEFAULT"])
    assert MlflowHook().get_tracking_uri() == env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:15000"

    monkeypatch.setenv("AIRFLOW_CONN_MLOPS_STORAGE", env["AIRFLOW_CONN_MLOPS_STORAGE"])
    hook = LakeHook()
    assert hook.lake_root() == "s3://lake/demo"
    assert hook.s3_client_kwargs(hook.get_connection("mlops_storage")) == {
        "aws_access_key_id": "key-id",
        "aws_secret_access_key": "secret",
        "endpoint_url": "http://127.0.0.1:9000",
    }


def test_local_lake_connection_has_no_credentials(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, MLOPS_S3_ACCESS_KEY_ID="ignored")
    assert ls.storage_connection(cfg) == {"conn_type": "mlops_lake", "extra": {"lake_root": cfg.lake_root}}


def test_every_component_listens_on_loopback_only(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, MLOPS_AIRFLOW_PORT="18080", MLOPS_MLFLOW_PORT="15000")
    api = ls.component_argv(cfg, "api-server")
    assert api[api.index("--host") + 1] == "127.0.0.1" and api[api.index("--port") + 1] == "18080"
    mlflow = ls.component_argv(cfg, "mlflow")
    assert mlflow[mlflow.index("--host") + 1] == "127.0.0.1" and mlflow[mlflow.index("--port") + 1] == "15000"
    assert mlflow[mlflow.index("--backend-store-uri") + 1].startswith("sqlite:///")
    assert "--serve-artifacts" in mlflow
    for name in ("scheduler", "triggerer"):
        assert "--skip-serve-logs" in ls.component_argv(cfg, name)
    with pytest.raises(ls.StackError, match="unknown component 'webserver'"):
        ls.component_argv(cfg, "webserver")


# Health -------------------------------------------------------------------------------------

HEALTH = {
    "metadatabase": {"status": "healthy"},
    "scheduler": {"status": "healthy", "latest_scheduler_heartbeat": "2026-01-01T10:00:05+00:00"},
    "triggerer": {"status": "unhealthy", "latest_triggerer_heartbeat": "2026-01-01T09:00:00+00:00"},
    "dag_processor": {"status": "healthy", "latest_dag_processor_heartbeat": "2026-01-01T09:59:00+00:00"},
}
STARTED = 1767261600.0  # 2026-01-01T10:00:00Z


@pytest.mark.parametrize(
    ("name", "ready"),
    [("api-server", True), ("scheduler", True), ("triggerer", False), ("dag-processor", False)],
)
def test_component_ready_needs_a_fresh_healthy_heartbeat(name: str, ready: bool) -> None:
    # dag-processor: healthy, but the heartbeat predates this start (a previous process's).
    assert ls.component_ready(name, STARTED, HEALTH, mlflow_ok=False) is ready


def test_nothing_is_ready_without_answers() -> None:
    assert not ls.component_ready("api-server", STARTED, None, mlflow_ok=True)
    assert not ls.component_ready("scheduler", STARTED, None, mlflow_ok=True)
    assert ls.component_ready("mlflow", STARTED, None, mlflow_ok=True)
    assert ls.component_ready("model-server", STARTED, None, mlflow_ok=True, model_server_ok=True)
    assert not ls.component_ready("model-server", STARTED, None, mlflow_ok=True, model_server_ok=False)


# Runs and the lake --------------------------------------------------------------------------


def test_run_summaries() -> None:
    runs = [
        {"state": "success", "logical_date": "2013-01-01T00:00:00Z"},
        {"state": "failed", "logical_date": "2013-01-02T00:00:00Z"},
        {"state": "success", "logical_date": "2013-01-03T00:00:00Z"},
    ]
    assert ls.summarize_runs(runs) == {"failed": 1, "success": 2}
    assert ls.run_days(runs) == {"2013-01-01": "success", "2013-01-02": "failed", "2013-01-03": "success"}


def test_day_range_includes_both_ends_and_refuses_a_reversed_range() -> None:
    assert ls.day_range(date(2013, 1, 30), date(2013, 2, 1)) == [date(2013, 1, 30), date(2013, 1, 31), date(2013, 2, 1)]
    with pytest.raises(ls.StackError, match="ends"):
        ls.day_range(date(2013, 1, 2), date(2013, 1, 1))


def test_partition_dates_groups_by_dataset() -> None:
    paths = [
        "/flights/date=2013-01-02/flights.parquet",
        "/flights/date=2013-01-01/flights.parquet",
        "/flights/date=2013-01-01/_SUCCESS",
        "/date=2013-01-01/features.parquet",
        "/validation/weather/date=2013-01-03/report.html",
        "/notes.txt",
        "/flights/date=2013-1-1/x",
    ]
    assert ls.partition_dates(paths) == {
        "": ["2013-01-01"],
        "flights": ["2013-01-01", "2013-01-02"],
        "validation/weather": ["2013-01-03"],
    }


def test_lake_partitions_reads_a_local_lake(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, MLOPS_LAKE_ROOT=str(tmp_path / "lake"))
    part = tmp_path / "lake" / "raw" / "p" / "flights" / "date=2013-01-05"
    part.mkdir(parents=True)
    (part / "flights.parquet").write_bytes(b"x")
    assert ls.lake_partitions(cfg, "raw", "p") == {"flights": ["2013-01-05"]}
    assert ls.lake_partitions(cfg, "features", "p") == {}


# Processes ----------------------------------------------------------------------------------


def test_down_stops_a_component_and_the_process_groups_it_made(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path)
    cfg.run_dir.mkdir(parents=True)
    # Like a task process, the child moves to a process group of its own: killpg of the leader misses it.
    child = "import os, time; os.setpgid(0, 0); time.sleep(120)"
    script = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {child!r}]); time.sleep(120)"
    leader = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    ls.pid_file(cfg, "triggerer").write_text(f"{leader.pid}\n")
    deadline = time.monotonic() + 20
    while len(ls.session_members(leader.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    members = ls.session_members(leader.pid)
    assert len(members) == 2 and len({os.getpgid(p.pid) for p in members}) == 2

    assert ls.running_pid(cfg, "triggerer") == leader.pid
    assert ls.down(cfg, grace=5, quiet=True) == ["triggerer"]
    assert ls.session_members(leader.pid) == []
    assert leader.poll() is not None
    assert not ls.pid_file(cfg, "triggerer").exists()


def test_a_stale_pid_file_is_not_a_running_component(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path)
    cfg.run_dir.mkdir(parents=True)
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    ls.pid_file(cfg, "scheduler").write_text(done.stdout)
    assert ls.running_pid(cfg, "scheduler") is None
    # Alive, but not the leader of a session of its own as the stack starts them: a reused pid.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        ls.pid_file(cfg, "scheduler").write_text(str(other.pid))
        assert ls.running_pid(cfg, "scheduler") is None
    finally:
        other.kill()
        other.wait()


def test_up_refuses_a_port_taken_by_another_program(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        cfg = make_cfg(tmp_path, MLOPS_AIRFLOW_PORT=str(port), MLOPS_MLFLOW_PORT=str(ls.free_port()))
        with pytest.raises(ls.StackError, match=f"port {port} \\(api-server\\) is in use.*MLOPS_AIRFLOW_PORT"):
            ls.up(cfg)
    assert list(cfg.run_dir.iterdir()) == []


def test_status_of_a_stopped_stack(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert ls.main(["--state-dir", str(tmp_path / "state"), "status"]) == 0
    out = capsys.readouterr().out
    rows = out.splitlines()[1 : 1 + len(ls.COMPONENTS)]
    assert [line.split()[:2] for line in rows] == [[n, "stopped"] for n in ls.COMPONENTS]


def test_bad_cli_date_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        ls.main(["demo", "--start", "2013-13-01"])
    assert "not a date (YYYY-MM-DD): '2013-13-01'" in capsys.readouterr().err
