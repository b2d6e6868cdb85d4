"""Bring the whole stack up (backing services, migrations, start order, health) and down; say where to look."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from airflow_mlops.stack import backends, supervisor
from airflow_mlops.stack.components import (
    S3_SERVER,
    SERVICES,
    components,
    stack_env,
    worker_home,
)
from airflow_mlops.stack.health import wait_healthy
from airflow_mlops.stack.keys import ADMIN_USER, Secrets, ensure_secrets
from airflow_mlops.stack.settings import HOST, StackConfig, StackError
from airflow_mlops.stack.supervisor import log_file, log_tail, pid_file, running_pid


def known_components(cfg: StackConfig) -> list[str]:
    """The profile's components, then any other the state folder has a pid file for (another profile's)."""
    names = list(components(cfg))
    others = sorted(p.stem for p in cfg.run_dir.glob("*.pid")) if cfg.run_dir.is_dir() else []
    return names + [n for n in others if n not in names]


def status(cfg: StackConfig) -> list[supervisor.ComponentStatus]:
    """State of each component of the stack (see supervisor.status)."""
    return supervisor.status(cfg, known_components(cfg))


def _profile_file(cfg: StackConfig) -> Path:
    return cfg.run_dir / "profile"


def _check_profile(cfg: StackConfig) -> None:
    """Refuse to mix profiles: a running stack must be stopped before it starts again with the other one."""
    running = [n for n in known_components(cfg) if running_pid(cfg, n) is not None]
    recorded = _profile_file(cfg).read_text().strip() if _profile_file(cfg).is_file() else "embedded"
    if running and recorded != cfg.profile:
        raise StackError(
            f"the stack in {cfg.state_dir} runs the {recorded} profile ({', '.join(running)}): stop it with "
            f"`{python_cmd(cfg)} -m airflow_mlops.stack down` before starting the {cfg.profile} profile"
        )


def _check_ports(cfg: StackConfig, to_start: list[str]) -> None:
    ports = [
        ("mlflow", HOST, cfg.mlflow_port, "MLOPS_MLFLOW_PORT"),
        ("model-server", HOST, cfg.model_server_port, "MLOPS_MODEL_SERVER_PORT"),
        ("api-server", HOST, cfg.airflow_port, "MLOPS_AIRFLOW_PORT"),
    ]
    if cfg.s3_managed:
        ports.append((S3_SERVER, HOST, cfg.s3_port, "MLOPS_S3_PORT"))
    log_port = cfg.port_setting("MLOPS_WORKER_LOG_SERVER_PORT") if cfg.distributed else 0
    ports += [(w.log_server, w.address, log_port, "MLOPS_WORKER_LOG_SERVER_PORT") for w in cfg.workers]
    for name, host, port, key in ports:
        if name in to_start and supervisor.port_in_use(port, host):
            raise StackError(
                f"port {port} ({name}, {host}) is in use by another program: stop it or choose another port in "
                f"{cfg.source} ({key})"
            )


def _prepare_backends(cfg: StackConfig, to_start: list[str], comps: tuple[str, ...]) -> None:
    """Redis, the two databases and, with the user's own S3 store, the bucket, before anything starts.

    The stack's own S3 server (moto) keeps objects in memory: when it starts, it starts empty, so the
    databases are created anew too, or the registry and run history would point at objects that are gone.
    """
    backends.check_redis(cfg)
    reset = False
    if S3_SERVER in to_start:
        others = [n for n in comps if n != S3_SERVER and running_pid(cfg, n) is not None]
        if others:
            raise StackError(
                f"the S3 server stopped while {', '.join(others)} still run: its objects are gone; run "
                f"`{python_cmd(cfg)} -m airflow_mlops.stack down`, then up (which starts from empty databases)"
            )
        reset = bool(backends.existing_databases(cfg))
        if reset:
            names = " and ".join(cfg.settings[k] for k in backends.DATABASE_SETTINGS)
            print(f"stack: the S3 server (moto) starts empty: creating the databases {names} anew")
    if backends.ensure_databases(cfg, reset=reset) or reset:
        (cfg.airflow_home / ".migrated").unlink(missing_ok=True)
    if not cfg.s3_managed and backends.ensure_bucket(cfg):
        print(f"stack: created bucket {cfg.bucket} at {cfg.s3_settings().get('endpoint_url', 'AWS S3')}")


def up(cfg: StackConfig) -> Secrets:
    """Start every component not already running and wait until all are healthy; idempotent.

    On failure the components are stopped again (their logs stay) and StackError says why.
    """
    t0 = time.monotonic()
    folders = [cfg.state_dir, cfg.airflow_home, cfg.logs_dir, cfg.run_dir, cfg.mlflow_dir / "artifacts"]
    for folder in folders + [worker_home(cfg, w) for w in cfg.workers]:
        folder.mkdir(parents=True, exist_ok=True)
    if not cfg.lake_root.startswith("s3://"):
        Path(cfg.lake_root).mkdir(parents=True, exist_ok=True)
    _check_profile(cfg)
    keys = ensure_secrets(cfg)
    env = stack_env(cfg, keys)
    comps = components(cfg)
    to_start = [name for name in comps if running_pid(cfg, name) is None]
    _check_ports(cfg, to_start)
    if not to_start:
        print(f"stack: already running in {cfg.state_dir}")
    else:
        print(f"stack: starting {', '.join(to_start)} in {cfg.state_dir} ({cfg.profile} profile)")
    started: dict[str, float] = {}
    try:
        if cfg.distributed and to_start:
            _prepare_backends(cfg, to_start, comps)
        if S3_SERVER in to_start:
            started[S3_SERVER] = time.time()
            supervisor.start(cfg, S3_SERVER, env)
            wait_healthy(cfg, {S3_SERVER: started[S3_SERVER]}, 60)
            backends.ensure_bucket(cfg)
        _profile_file(cfg).write_text(cfg.profile + "\n")
        for name in SERVICES:  # the model server waits for MLflow on its own (its poller retries)
            if name in to_start:
                started[name] = time.time()
                supervisor.start(cfg, name, env)
        if any(name in to_start for name in comps if name not in SERVICES and name != S3_SERVER):
            _migrate(cfg, env)
        for name in comps:
            if name in to_start and name not in started:
                started[name] = time.time()
                supervisor.start(cfg, name, env)
        # Already-running components are checked too: a healthy stack is the promise of `up`.
        for name in comps:
            if name not in started:
                started[name] = pid_file(cfg, name).stat().st_mtime
        pending = {n: t for n, t in started.items() if n != S3_SERVER or S3_SERVER not in to_start}
        wait_healthy(cfg, pending, cfg.float_setting("MLOPS_STACK_START_TIMEOUT_SECONDS"))
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
    database = "postgresql " + cfg.settings["MLOPS_AIRFLOW_DB"] if cfg.distributed else "sqlite"
    done = f"apache-airflow-core {version('apache-airflow-core')}" + (f" on {database}" if cfg.distributed else "")
    exists = cfg.distributed or (cfg.airflow_home / "airflow.db").is_file()
    if exists and stamp.is_file() and stamp.read_text() == done:
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
    """Where to look: UIs, login, lake and logs (and, distributed, the databases, broker, S3 and workers)."""
    lines = [
        f"Airflow UI   {cfg.airflow_url}   (login {ADMIN_USER} / {keys.admin_password})",
        f"MLflow UI    {cfg.mlflow_url}",
        f"Model server {cfg.model_server_url}   (POST /predict/<pipeline>, GET /version; token in "
        f"{cfg.secrets_file}, key model_server_token)",
        f"Lake root    {cfg.lake_root}",
        f"Logs         {cfg.logs_dir}   (one file per process; task logs in airflow/)",
    ]
    if cfg.distributed:
        s = cfg.settings
        server = f"{s['MLOPS_POSTGRES_HOST']}:{s['MLOPS_POSTGRES_PORT']}"
        s3 = cfg.s3_settings().get("endpoint_url", "AWS S3") + (" (moto, in memory)" if cfg.s3_managed else "")
        workers = ", ".join(f"{w.name} on {w.address}" for w in cfg.workers)
        lines[4] = f"Logs         {cfg.logs_dir}   (one file per process; task logs on each worker)"
        lines += [
            f"PostgreSQL   {server}, databases {s['MLOPS_AIRFLOW_DB']} (Airflow) and {s['MLOPS_MLFLOW_DB']} (MLflow)",
            f"Celery       broker {s['MLOPS_REDIS_URL']}, queue {cfg.celery_queue}; workers {workers}, task logs "
            f"in {cfg.workers_dir}/<worker>/logs",
            f"S3           {s3}, bucket {cfg.bucket}: the lake and MLflow's artifacts ({cfg.mlflow_artifacts})",
        ]
    return "\n".join(lines)


def down(cfg: StackConfig, grace: float = 30.0, quiet: bool = False) -> list[str]:
    """Stop every component and everything it started (SIGTERM, then SIGKILL after `grace` seconds).

    :returns: names of the components that were running.
    """
    own = list(components(cfg))
    others = [n for n in known_components(cfg) if n not in own]  # another profile's, left running
    stopped = supervisor.stop(cfg, [*reversed(own), *others], grace=grace, quiet=quiet)
    _profile_file(cfg).unlink(missing_ok=True)
    if not quiet:
        print("stack: stopped" if stopped else "stack: nothing was running")
    return stopped


def check_alive(cfg: StackConfig) -> None:
    """StackError naming the first component that is not running, with its log's tail."""
    for name in components(cfg):
        if running_pid(cfg, name) is None:
            raise StackError(f"{name} is not running\n{log_tail(log_file(cfg, name))}")


def python_cmd(cfg: StackConfig) -> str:
    """This interpreter, relative to the checkout when inside it (.venv/bin/python)."""
    exe = Path(sys.executable)
    return str(exe.relative_to(cfg.repo_root)) if exe.is_relative_to(cfg.repo_root) else str(exe)
