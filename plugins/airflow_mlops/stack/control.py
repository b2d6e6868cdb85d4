"""Bring the whole stack up (migrations, start order, health) and down, and say where to look."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from airflow_mlops.stack import supervisor
from airflow_mlops.stack.components import AIRFLOW_COMPONENTS, COMPONENTS, SERVICES, stack_env
from airflow_mlops.stack.health import wait_healthy
from airflow_mlops.stack.keys import ADMIN_USER, Secrets, ensure_secrets
from airflow_mlops.stack.settings import StackConfig, StackError
from airflow_mlops.stack.supervisor import log_file, log_tail, pid_file, running_pid


def status(cfg: StackConfig) -> list[supervisor.ComponentStatus]:
    """State of each component of the stack (see supervisor.status)."""
    return supervisor.status(cfg, COMPONENTS)


def up(cfg: StackConfig) -> Secrets:
    """Start every component not already running and wait until all are healthy; idempotent.

    On failure the components are stopped again (their logs stay) and StackError says why.
    """
    t0 = time.monotonic()
    for folder in (cfg.state_dir, cfg.airflow_home, cfg.logs_dir, cfg.run_dir, cfg.mlflow_dir / "artifacts"):
        folder.mkdir(parents=True, exist_ok=True)
    if not cfg.lake_root.startswith("s3://"):
        Path(cfg.lake_root).mkdir(parents=True, exist_ok=True)
    keys = ensure_secrets(cfg)
    env = stack_env(cfg, keys)
    to_start = [name for name in COMPONENTS if running_pid(cfg, name) is None]
    for name, port, key in (
        ("mlflow", cfg.mlflow_port, "MLOPS_MLFLOW_PORT"),
        ("model-server", cfg.model_server_port, "MLOPS_MODEL_SERVER_PORT"),
        ("api-server", cfg.airflow_port, "MLOPS_AIRFLOW_PORT"),
    ):
        if name in to_start and supervisor.port_in_use(port):
            raise StackError(
                f"port {port} ({name}) is in use by another program: stop it or choose another port in "
                f"{cfg.source} ({key})"
            )
    if not to_start:
        print(f"stack: already running in {cfg.state_dir}")
    else:
        print(f"stack: starting {', '.join(to_start)} in {cfg.state_dir}")
    started: dict[str, float] = {}
    try:
        for name in SERVICES:  # the model server waits for MLflow on its own (its poller retries)
            if name in to_start:
                started[name] = time.time()
                supervisor.start(cfg, name, env)
        if any(name in to_start for name in AIRFLOW_COMPONENTS):
            _migrate(cfg, env)
        for name in AIRFLOW_COMPONENTS:
            if name in to_start:
                started[name] = time.time()
                supervisor.start(cfg, name, env)
        # Already-running components are checked too: a healthy stack is the promise of `up`.
        for name in COMPONENTS:
            if name not in started:
                started[name] = pid_file(cfg, name).stat().st_mtime
        wait_healthy(cfg, started, cfg.float_setting("MLOPS_STACK_START_TIMEOUT_SECONDS"))
    except BaseException:
        if to_start:
            print("stack: start-up failed, stopping the stack (logs stay in place)", file=sys.stderr)
            down(cfg, quiet=True)
        raise
    rows = status(cfg)
    print(f"stack: up in {time.monotonic() - t0:.0f}s\n{supervisor.format_status(rows)}")
    print(describe(cfg, keys))
    return keys


def _migrate(cfg: StackConfig, env: Mapping[str, str]) -> None:
    """`airflow db migrate`, skipped when this Airflow version already migrated this database."""
    from importlib.metadata import version

    stamp = cfg.airflow_home / ".migrated"
    done = f"apache-airflow-core {version('apache-airflow-core')}"
    if (cfg.airflow_home / "airflow.db").is_file() and stamp.is_file() and stamp.read_text() == done:
        return
    log = log_file(cfg, "airflow-db-migrate")
    with log.open("ab") as out:
        proc = subprocess.run(
            [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
            env=dict(env),
            cwd=cfg.state_dir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=900,
            check=False,
        )
    if proc.returncode != 0:
        raise StackError(f"airflow db migrate exited {proc.returncode}\n{log_tail(log)}")
    stamp.write_text(done)


def describe(cfg: StackConfig, keys: Secrets) -> str:
    """Where to look: UIs, login, lake and logs."""
    return "\n".join(
        [
            f"Airflow UI   {cfg.airflow_url}   (login {ADMIN_USER} / {keys.admin_password})",
            f"MLflow UI    {cfg.mlflow_url}",
            f"Model server {cfg.model_server_url}   (POST /predict/<pipeline>, GET /version; token in "
            f"{cfg.secrets_file}, key model_server_token)",
            f"Lake root    {cfg.lake_root}",
            f"Logs         {cfg.logs_dir}   (one file per process; task logs in airflow/)",
        ]
    )


def down(cfg: StackConfig, grace: float = 30.0, quiet: bool = False) -> list[str]:
    """Stop every component and everything it started (SIGTERM, then SIGKILL after `grace` seconds).

    :returns: names of the components that were running.
    """
    stopped = supervisor.stop(cfg, list(reversed(COMPONENTS)), grace=grace, quiet=quiet)
    if not quiet:
        print("stack: stopped" if stopped else "stack: nothing was running")
    return stopped


def check_alive(cfg: StackConfig) -> None:
    """StackError naming the first component that is not running, with its log's tail."""
    for name in COMPONENTS:
        if running_pid(cfg, name) is None:
            raise StackError(f"{name} is not running\n{log_tail(log_file(cfg, name))}")


def python_cmd(cfg: StackConfig) -> str:
    """This interpreter, relative to the checkout when inside it (.venv/bin/python)."""
    exe = Path(sys.executable)
    return str(exe.relative_to(cfg.repo_root)) if exe.is_relative_to(cfg.repo_root) else str(exe)
