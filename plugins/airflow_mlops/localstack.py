"""The embedded local stack (Airflow services and an MLflow server on loopback) and the demo that drives it."""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from airflow_mlops.settings import PROJECT_ROOT

HOST = "127.0.0.1"
SETTINGS_FILE = PROJECT_ROOT / "mlops.env"
ADMIN_USER = "admin"
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
STACK_MARKER = "MLOPS_STACK_DIR"
"""Set in every stack process: names the state folder the process belongs to."""

DEFAULTS = {
    "MLOPS_STATE_DIR": ".local/stack",
    "MLOPS_AIRFLOW_PORT": "8080",
    "MLOPS_MLFLOW_PORT": "5000",
    "MLOPS_MODEL_SERVER_PORT": "8000",
    "MLOPS_LAKE_ROOT": "",
    "MLOPS_S3_ENDPOINT_URL": "",
    "MLOPS_S3_ACCESS_KEY_ID": "",
    "MLOPS_S3_SECRET_ACCESS_KEY": "",
    "MLOPS_STACK_START_TIMEOUT_SECONDS": "300",
    "MLOPS_DEMO_PIPELINE": "flight_delays",
    "MLOPS_DEMO_START": "2013-01-01",
    "MLOPS_DEMO_HISTORY_END": "2013-02-14",
    "MLOPS_DEMO_END": "2013-03-07",
    "MLOPS_DEMO_TIMEOUT_SECONDS": "1800",
    "MLOPS_DEMO_TIMEOUT_PER_DAY_SECONDS": "60",
    "MLOPS_BACKFILL_MAX_ACTIVE_RUNS": "2",
}
"""Settings used when neither mlops.env nor the environment sets them."""

AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
SERVICES = ("mlflow", "model-server")
"""Components that are not Airflow: started first, checked by their own /health."""
COMPONENTS = (*SERVICES, *AIRFLOW_COMPONENTS)
"""Start order; `down` stops them in reverse."""

HEARTBEAT_KEYS = {
    "scheduler": ("scheduler", "latest_scheduler_heartbeat"),
    "dag-processor": ("dag_processor", "latest_dag_processor_heartbeat"),
    "triggerer": ("triggerer", "latest_triggerer_heartbeat"),
}
"""Component -> (section, heartbeat field) of Airflow's /api/v2/monitor/health answer."""

TERMINAL_RUN_STATES = frozenset({"success", "failed"})
_LINE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")
_LOGIN_CHARS = "abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
_DATE_PART = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")


class StackError(RuntimeError):
    """The stack cannot be configured, started or driven; the message says what and where to look."""


# Settings -----------------------------------------------------------------------------------


def parse_settings(text: str, source: str = "mlops.env") -> dict[str, str]:
    """KEY=VALUE lines of a settings file; `#` comments, blank lines, `export ` and quotes allowed.

    :param source: name of the file, for error messages.
    """
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise StackError(f"{source}, line {number}: expected KEY=VALUE, got {raw!r}")
        key, value = match.group(1), match.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        elif " #" in value:
            # An unquoted value ends at an inline comment.
            value = value.split(" #", 1)[0].rstrip()
        if key in values:
            raise StackError(f"{source}, line {number}: {key} is set twice")
        values[key] = value
    return values


def merge_settings(file_values: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    """Defaults, then the settings file, then environment variables of the same names (and any MLOPS_/AIRFLOW__)."""
    merged = {**DEFAULTS, **file_values}
    for key, value in environ.items():
        if key in merged or key.startswith(("MLOPS_", "AIRFLOW__")):
            merged[key] = value
    return merged


def clean_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment without any Airflow or MLOps setting (for a stack isolated from the caller's)."""
    return {k: v for k, v in environ.items() if not k.startswith(("AIRFLOW", "MLOPS_", "MLFLOW_"))}


def _int_setting(settings: Mapping[str, str], key: str, source: str) -> int:
    value = settings[key]
    try:
        return int(value)
    except ValueError:
        raise StackError(f"{source}: {key} must be a whole number, got {value!r}") from None


@dataclass(frozen=True)
class StackConfig:
    """Where the stack lives and which ports it uses, resolved from mlops.env and the environment.

    :param settings: merged settings (see merge_settings).
    :param environ: environment the stack processes inherit (before the stack's own variables).
    :param repo_root: checkout holding dags/, plugins/ and include/.
    """

    settings: Mapping[str, str]
    environ: Mapping[str, str]
    repo_root: Path = PROJECT_ROOT
    source: str = "mlops.env"
    state_dir: Path = field(init=False)
    airflow_port: int = field(init=False)
    mlflow_port: int = field(init=False)
    model_server_port: int = field(init=False)
    lake_root: str = field(init=False)

    def __post_init__(self) -> None:
        state = Path(self.settings["MLOPS_STATE_DIR"] or DEFAULTS["MLOPS_STATE_DIR"]).expanduser()
        object.__setattr__(self, "state_dir", (self.repo_root / state).resolve())
        for key, attr in (
            ("MLOPS_AIRFLOW_PORT", "airflow_port"),
            ("MLOPS_MLFLOW_PORT", "mlflow_port"),
            ("MLOPS_MODEL_SERVER_PORT", "model_server_port"),
        ):
            port = _int_setting(self.settings, key, self.source)
            if not 0 < port < 65536:
                raise StackError(f"{self.source}: {key} must be a port number (1-65535), got {port}")
            object.__setattr__(self, attr, port)
        lake = self.settings["MLOPS_LAKE_ROOT"]
        if not lake:
            lake = str(self.state_dir / "lake")
        elif "://" not in lake:
            lake = str((self.repo_root / Path(lake).expanduser()).resolve())
        elif not lake.startswith("s3://"):
            raise StackError(f"{self.source}: MLOPS_LAKE_ROOT must be a folder or s3://bucket/prefix, got {lake!r}")
        object.__setattr__(self, "lake_root", lake.rstrip("/") if lake.startswith("s3://") else lake)

    @classmethod
    def load(
        cls,
        settings_file: Path | None = None,
        environ: Mapping[str, str] | None = None,
        overrides: Mapping[str, str] | None = None,
    ) -> StackConfig:
        """Read the settings file (default <repo>/mlops.env; a missing file means all defaults).

        :param environ: the environment (default os.environ): overrides the file, inherited by the processes.
        :param overrides: settings that win over both (tests use them for a temp state folder and free ports).
        """
        path = settings_file or SETTINGS_FILE
        env = dict(os.environ if environ is None else environ)
        file_values = parse_settings(path.read_text(), str(path)) if path.is_file() else {}
        settings = {**merge_settings(file_values, env), **(overrides or {})}
        return cls(settings=settings, environ=env, source=str(path))

    @property
    def airflow_home(self) -> Path:
        return self.state_dir / "airflow"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def mlflow_dir(self) -> Path:
        return self.state_dir / "mlflow"

    @property
    def airflow_url(self) -> str:
        return f"http://{HOST}:{self.airflow_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{HOST}:{self.mlflow_port}"

    @property
    def model_server_url(self) -> str:
        return f"http://{HOST}:{self.model_server_port}"

    @property
    def passwords_file(self) -> Path:
        return self.airflow_home / "simple_auth_manager_passwords.json"

    @property
    def secrets_file(self) -> Path:
        return self.state_dir / "secrets.json"

    def float_setting(self, key: str) -> float:
        try:
            return float(self.settings[key])
        except ValueError:
            raise StackError(f"{self.source}: {key} must be a number, got {self.settings[key]!r}") from None

    def s3_settings(self) -> dict[str, str]:
        """Endpoint and credentials of an S3 lake, only those that are set."""
        names = {
            "endpoint_url": "MLOPS_S3_ENDPOINT_URL",
            "aws_access_key_id": "MLOPS_S3_ACCESS_KEY_ID",
            "aws_secret_access_key": "MLOPS_S3_SECRET_ACCESS_KEY",
        }
        return {arg: self.settings[key] for arg, key in names.items() if self.settings.get(key)}


@dataclass(frozen=True)
class Secrets:
    """Secrets generated once per state folder, so restarts keep sessions, tokens and the login."""

    jwt_secret: str
    api_secret_key: str
    fernet_key: str
    admin_password: str
    model_server_token: str


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def ensure_secrets(cfg: StackConfig) -> Secrets:
    """Read the stack's secrets and the admin password, generating (and storing) any that are missing."""
    stored: dict[str, str] = json.loads(cfg.secrets_file.read_text()) if cfg.secrets_file.is_file() else {}
    wanted: dict[str, Callable[[], str]] = {
        "jwt_secret": lambda: secrets.token_urlsafe(32),
        "api_secret_key": lambda: secrets.token_urlsafe(32),
        "fernet_key": lambda: base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "model_server_token": lambda: secrets.token_urlsafe(32),
    }
    if any(name not in stored for name in wanted):
        stored = {name: stored.get(name) or make() for name, make in wanted.items()}
        _write_private(cfg.secrets_file, json.dumps(stored, indent=1) + "\n")
    # The password lives in SimpleAuthManager's own file format: {"user": "password"}.
    passwords: dict[str, str] = json.loads(cfg.passwords_file.read_text()) if cfg.passwords_file.is_file() else {}
    if not passwords.get(ADMIN_USER):
        # Letters and digits only: easy to copy from a terminal into the login form.
        passwords[ADMIN_USER] = "".join(secrets.choice(_LOGIN_CHARS) for _ in range(16))
        _write_private(cfg.passwords_file, json.dumps(passwords) + "\n")
    return Secrets(
        jwt_secret=stored["jwt_secret"],
        api_secret_key=stored["api_secret_key"],
        fernet_key=stored["fernet_key"],
        admin_password=passwords[ADMIN_USER],
        model_server_token=stored["model_server_token"],
    )


def storage_connection(cfg: StackConfig) -> dict[str, Any]:
    """The lake's Airflow connection (see hooks.LakeHook): lake root, plus endpoint and keys for S3."""
    conn: dict[str, Any] = {"conn_type": "mlops_lake", "extra": {"lake_root": cfg.lake_root}}
    if cfg.lake_root.startswith("s3://"):
        s3 = cfg.s3_settings()
        if "aws_access_key_id" in s3:
            conn["login"] = s3["aws_access_key_id"]
        if "aws_secret_access_key" in s3:
            conn["password"] = s3["aws_secret_access_key"]
        if "endpoint_url" in s3:
            conn["extra"]["endpoint_url"] = s3["endpoint_url"]
    return conn


FORKSERVER_PRELOAD = (
    "airflow.sdk.execution_time.task_runner",
    "airflow.dag_processing.dagbag",
    "airflow_mlops.preload",
)
"""Modules the scheduler's forkserver imports before it forks executor workers (see core/preload.py)."""


def stack_env(cfg: StackConfig, keys: Secrets) -> dict[str, str]:
    """Environment of every stack process: Airflow config, connections and the lake, all on loopback.

    Precedence: inherited environment < MLOPS_ settings < the stack's own values < AIRFLOW__ settings
    (from mlops.env or the environment), so any Airflow option can still be overridden.
    """
    bin_dir = str(Path(sys.executable).parent)
    home = cfg.airflow_home
    env = dict(cfg.environ)
    env.update({k: v for k, v in cfg.settings.items() if k.startswith("MLOPS_")})
    env.update(
        {
            STACK_MARKER: str(cfg.state_dir),
            "PATH": os.pathsep.join([bin_dir, cfg.environ.get("PATH", os.defpath)]),
            "PYTHONUNBUFFERED": "1",
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(cfg.repo_root / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "4",
            "AIRFLOW__CORE__MAX_ACTIVE_RUNS_PER_DAG": "4",
            # Executor workers come from a forkserver that imported the ML stack once, so a task is a fork
            # that starts warm instead of importing pandas, sklearn, MLflow, GX and Evidently again.
            "AIRFLOW__SCHEDULER__MP_START_METHOD": "forkserver",
            "AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD": ",".join(FORKSERVER_PRELOAD),
            "AIRFLOW__CORE__FERNET_KEY": keys.fernet_key,
            "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(cfg.passwords_file),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{cfg.airflow_url}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__API__HOST": HOST,
            "AIRFLOW__API__PORT": str(cfg.airflow_port),
            "AIRFLOW__API__BASE_URL": cfg.airflow_url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": keys.api_secret_key,
            "AIRFLOW__API_AUTH__JWT_SECRET": keys.jwt_secret,
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(cfg.logs_dir / "airflow"),
            "AIRFLOW__LOGGING__DAG_PROCESSOR_CHILD_PROCESS_LOG_DIRECTORY": str(
                cfg.logs_dir / "airflow" / "dag_processor"
            ),
            "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps(
                {"conn_type": "mlops_mlflow", "host": HOST, "port": cfg.mlflow_port, "schema": "http"}
            ),
            "AIRFLOW_CONN_MLOPS_STORAGE": json.dumps(storage_connection(cfg)),
            "AIRFLOW_CONN_MLOPS_MODEL_SERVER": json.dumps(
                {
                    "conn_type": "mlops_model_server",
                    "host": HOST,
                    "port": cfg.model_server_port,
                    "password": keys.model_server_token,
                }
            ),
            "MLOPS_MODEL_SERVER_TOKEN": keys.model_server_token,
            "MLOPS_LAKE_ROOT": cfg.lake_root,
            "MLFLOW_TRACKING_URI": cfg.mlflow_url,
            # Download progress bars would land in task logs as stderr lines logged at error level.
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        }
    )
    env.update({k: v for k, v in cfg.settings.items() if k.startswith("AIRFLOW__")})
    return env


def component_argv(cfg: StackConfig, name: str) -> list[str]:
    """Command line of one component (run with the stack's environment)."""
    bin_dir = Path(sys.executable).parent
    airflow = str(bin_dir / "airflow")
    if name == "mlflow":
        return [
            str(bin_dir / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{cfg.mlflow_dir / 'mlflow.db'}",
            "--serve-artifacts",
            "--artifacts-destination",
            str(cfg.mlflow_dir / "artifacts"),
            "--host",
            HOST,
            "--port",
            str(cfg.mlflow_port),
            "--workers",
            "1",
        ]
    if name == "model-server":
        return [sys.executable, "-m", "airflow_mlops.serving", "--host", HOST, "--port", str(cfg.model_server_port),
                "--tracking-uri", cfg.mlflow_url, "--lake-root", cfg.lake_root]  # fmt: skip
    if name == "api-server":
        return [airflow, "api-server", "--host", HOST, "--port", str(cfg.airflow_port), "--workers", "1"]
    if name in ("scheduler", "triggerer"):
        # Task logs are local files the API server reads directly: no log-serving side processes (and ports).
        return [airflow, name, "--skip-serve-logs"]
    if name == "dag-processor":
        return [airflow, name]
    raise StackError(f"unknown component {name!r}; components are {', '.join(COMPONENTS)}")


def component_env(cfg: StackConfig, name: str, env: Mapping[str, str]) -> dict[str, str]:
    """The stack environment adjusted for one component."""
    out = dict(env)
    if name == "mlflow":
        # Job execution serves GenAI features only; it would add a worker pool (and memory) we never use.
        out.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    return out


# Processes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Proc:
    """One process seen in /proc."""

    pid: int
    ppid: int
    session: int
    state: str
    rss_kb: int


def _read_proc(pid: int) -> Proc | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name may contain spaces and parentheses: fields start after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    rss = 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return Proc(pid=pid, ppid=int(fields[1]), session=int(fields[3]), state=fields[0], rss_kb=rss)


def processes() -> list[Proc]:
    """Every live (non-zombie) process on the machine, from /proc."""
    if not Path("/proc/self/stat").is_file():
        raise StackError("the local stack manager needs Linux (it follows processes through /proc)")
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            proc = _read_proc(int(entry.name))
            if proc is not None and proc.state not in ("Z", "X"):
                out.append(proc)
    return out


def session_members(leader: int, procs: Iterable[Proc] | None = None) -> list[Proc]:
    """Live processes of the session a component leads (its workers and tasks, even in their own groups)."""
    return [p for p in (processes() if procs is None else procs) if p.session == leader]


def _reap(pid: int) -> None:
    """Collect the exit status if the process is our own child, so it doesn't linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def pid_file(cfg: StackConfig, name: str) -> Path:
    return cfg.run_dir / f"{name}.pid"


def log_file(cfg: StackConfig, name: str) -> Path:
    return cfg.logs_dir / f"{name}.log"


def running_pid(cfg: StackConfig, name: str) -> int | None:
    """PID of the component if its pid file names a live session leader (stale files are ignored)."""
    path = pid_file(cfg, name)
    try:
        pid = int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    _reap(pid)
    proc = _read_proc(pid)
    if proc is None or proc.state in ("Z", "X") or proc.session != pid:
        return None
    return pid


def log_tail(path: Path, lines: int = 40) -> str:
    """Last lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log file {path})"
    tail = text.splitlines()[-lines:]
    return f"--- last {len(tail)} lines of {path} ---\n" + "\n".join(tail)


def port_in_use(port: int) -> bool:
    """Whether something accepts connections on the loopback port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _start(cfg: StackConfig, name: str, env: Mapping[str, str]) -> int:
    log = log_file(cfg, name)
    with log.open("ab") as out:
        out.write(f"\n=== {datetime.now(UTC).isoformat()} starting {name} ===\n".encode())
        out.flush()
        # A session of its own: `down` can signal the component and everything it forks, and a Ctrl-C
        # in the terminal that ran `up` doesn't reach it.
        proc = subprocess.Popen(
            component_argv(cfg, name),
            env=component_env(cfg, name, env),
            cwd=cfg.state_dir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pid_file(cfg, name).write_text(f"{proc.pid}\n")
    return proc.pid


# Health -------------------------------------------------------------------------------------


def http_json(url: str, timeout: float = 5.0) -> tuple[int, Any]:
    """GET a URL: status and parsed JSON body (None when not JSON); (0, None) when unreachable."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback http by design)
            body = resp.read()
            status = int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code), None
    except (OSError, ValueError):
        return 0, None
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


def _parse_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def component_ready(
    name: str, started_at: float, airflow_health: Any, mlflow_ok: bool, model_server_ok: bool = False
) -> bool:
    """Whether one component passes its health check, given the latest health answers.

    A heartbeat must be from this process (not older than its start), not a predecessor's.

    :param started_at: epoch seconds when the component was started.
    :param airflow_health: parsed /api/v2/monitor/health answer, None when the API server doesn't answer.
    :param mlflow_ok: whether MLflow's /health answered 200.
    :param model_server_ok: whether the model server's /health answered 200.
    """
    if name == "mlflow":
        return mlflow_ok
    if name == "model-server":
        return model_server_ok
    if not isinstance(airflow_health, dict):
        return False
    if name == "api-server":
        return bool(airflow_health.get("metadatabase", {}).get("status") == "healthy")
    section, key = HEARTBEAT_KEYS[name]
    info = airflow_health.get(section) or {}
    beat = _parse_time(info.get(key))
    return info.get("status") == "healthy" and beat is not None and beat >= started_at - 2


def _wait_healthy(cfg: StackConfig, started: Mapping[str, float], timeout: float) -> None:
    pending = set(started)
    deadline = time.monotonic() + timeout
    while pending:
        for name in sorted(pending):
            if running_pid(cfg, name) is None:
                raise StackError(f"{name} exited during start-up\n{log_tail(log_file(cfg, name))}")
        status, health = http_json(f"{cfg.airflow_url}/api/v2/monitor/health")
        mlflow_status, _ = http_json(f"{cfg.mlflow_url}/health")
        server_status, _ = http_json(f"{cfg.model_server_url}/health")
        for name in list(pending):
            airflow_health = health if status == 200 else None
            if component_ready(name, started[name], airflow_health, mlflow_status == 200, server_status == 200):
                pending.discard(name)
                print(f"  {name}: healthy")
        if not pending:
            return
        if time.monotonic() > deadline:
            tails = "\n".join(log_tail(log_file(cfg, n)) for n in sorted(pending))
            raise StackError(
                f"timed out after {timeout:.0f}s waiting for {', '.join(sorted(pending))} to become healthy "
                f"(last Airflow health answer: {json.dumps(health)})\n{tails}"
            )
        time.sleep(1)


# Up / down / status -------------------------------------------------------------------------


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    pid: int | None
    procs: int
    rss_kb: int
    pss_kb: int


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def status(cfg: StackConfig) -> list[ComponentStatus]:
    """State of each component: pid, process count and memory (RSS and PSS of its whole session)."""
    procs = processes()
    out = []
    for name in COMPONENTS:
        pid = running_pid(cfg, name)
        members = session_members(pid, procs) if pid else []
        out.append(
            ComponentStatus(
                name=name,
                pid=pid,
                procs=len(members),
                rss_kb=sum(p.rss_kb for p in members),
                pss_kb=sum(_pss_kb(p.pid) for p in members),
            )
        )
    return out


def format_status(rows: Sequence[ComponentStatus]) -> str:
    """A table of component states with memory totals."""
    lines = [f"{'component':<14} {'state':<8} {'pid':>7} {'procs':>5} {'RSS MB':>7} {'PSS MB':>7}"]
    for row in rows:
        state = "running" if row.pid else "stopped"
        lines.append(
            f"{row.name:<14} {state:<8} {row.pid or '-':>7} {row.procs:>5} "
            f"{row.rss_kb / 1024:>7.0f} {row.pss_kb / 1024:>7.0f}"
        )
    rss = sum(r.rss_kb for r in rows) / 1024
    pss = sum(r.pss_kb for r in rows) / 1024
    lines.append(f"{'total':<14} {'':<8} {'':>7} {sum(r.procs for r in rows):>5} {rss:>7.0f} {pss:>7.0f}")
    return "\n".join(lines)


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
        if name in to_start and port_in_use(port):
            raise StackError(
                f"port {port} ({name}) is in use by another program: stop it or choose another port in "
                f"{cfg.source} ({key})"
            )
    if not to_start:
        print(f"localstack: already running in {cfg.state_dir}")
    else:
        print(f"localstack: starting {', '.join(to_start)} in {cfg.state_dir}")
    started: dict[str, float] = {}
    try:
        for name in SERVICES:  # the model server waits for MLflow on its own (its poller retries)
            if name in to_start:
                started[name] = time.time()
                _start(cfg, name, env)
        if any(name in to_start for name in AIRFLOW_COMPONENTS):
            _migrate(cfg, env)
        for name in AIRFLOW_COMPONENTS:
            if name in to_start:
                started[name] = time.time()
                _start(cfg, name, env)
        # Already-running components are checked too: a healthy stack is the promise of `up`.
        for name in COMPONENTS:
            if name not in started:
                started[name] = pid_file(cfg, name).stat().st_mtime
        _wait_healthy(cfg, started, cfg.float_setting("MLOPS_STACK_START_TIMEOUT_SECONDS"))
    except BaseException:
        if to_start:
            print("localstack: start-up failed, stopping the stack (logs stay in place)", file=sys.stderr)
            down(cfg, quiet=True)
        raise
    rows = status(cfg)
    print(f"localstack: up in {time.monotonic() - t0:.0f}s\n{format_status(rows)}")
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
    leaders = {name: pid for name in reversed(COMPONENTS) if (pid := running_pid(cfg, name)) is not None}
    for name, pid in leaders.items():
        if not quiet:
            print(f"localstack: stopping {name} (pid {pid})")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    left = _leftovers(leaders.values())
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = _leftovers(leaders.values())
    for proc in left:
        # Task processes sit in groups of their own inside the session: signal each one.
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
    if left:
        time.sleep(1)
        left = _leftovers(leaders.values())
        if left:
            raise StackError(f"processes still alive after SIGKILL: {[p.pid for p in left]}")
    for name in COMPONENTS:
        pid_file(cfg, name).unlink(missing_ok=True)
    if not quiet:
        print("localstack: stopped" if leaders else "localstack: nothing was running")
    return list(leaders)


def _leftovers(leaders: Iterable[int]) -> list[Proc]:
    sessions = set(leaders)
    for pid in sessions:
        _reap(pid)
    return [p for p in processes() if p.session in sessions]


def stack_processes(cfg: StackConfig) -> list[Proc]:
    """Live processes that carry this stack's marker in their environment (Linux; used to prove a clean stop)."""
    marker = f"{STACK_MARKER}={cfg.state_dir}".encode()
    out = []
    for proc in processes():
        try:
            environ = Path(f"/proc/{proc.pid}/environ").read_bytes()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if marker in environ.split(b"\0"):
            out.append(proc)
    return out


# Driving Airflow through its REST API -------------------------------------------------------


class ApiError(StackError):
    """The Airflow REST API answered with an error."""

    def __init__(self, method: str, path: str, status: int, detail: str) -> None:
        super().__init__(f"{method} {path} -> HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


PAGE_SIZE = 100
"""Items per request to a collection endpoint: Airflow's default maximum_page_limit."""


class AirflowApi:
    """A small client of the Airflow 3 REST API, signed in as a SimpleAuthManager user.

    :param base_url: the API server, e.g. http://127.0.0.1:8080.
    """

    def __init__(self, base_url: str, username: str, password: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.username = username
        self.password = password
        self.timeout = timeout
        self._token: str | None = None

    def _send(self, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        req = urllib.request.Request(self.base_url + path, data=data, headers=headers, method=method)  # noqa: S310
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            with contextlib.suppress(ValueError, AttributeError):
                detail = json.dumps(json.loads(detail).get("detail", detail))
            raise ApiError(method, path, exc.code, detail[:2000]) from None
        except OSError as exc:
            raise StackError(f"{method} {self.base_url}{path}: {exc}") from None
        return json.loads(raw) if raw else None

    def token(self) -> str:
        """A JWT from SimpleAuthManager's token route (POST /auth/token), fetched once."""
        if self._token is None:
            answer = self._send(
                "POST", "/auth/token", {"username": self.username, "password": self.password}, auth=False
            )
            self._token = str(answer["access_token"])
        return self._token

    def request(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        """Call an API route; query parameters given as keywords (lists repeat the parameter)."""
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None}, doseq=True)
        full = f"{path}?{query}" if query else path
        try:
            return self._send(method, full, body)
        except ApiError as exc:
            if exc.status != 401:
                raise
            self._token = None  # expired: sign in again once
            return self._send(method, full, body)

    def list_all(self, path: str, key: str, **params: Any) -> list[dict[str, Any]]:
        """Every item of a collection endpoint, page after page (the API caps a page at 100 by default)."""
        items: list[dict[str, Any]] = []
        while True:
            page = self.request("GET", path, limit=PAGE_SIZE, offset=len(items), **params)
            items.extend(page[key])
            if not page[key] or len(items) >= int(page.get("total_entries", 0)):
                return items

    def dag(self, dag_id: str) -> dict[str, Any] | None:
        """The DAG as the API knows it, None if it isn't there (yet)."""
        try:
            return dict(self.request("GET", f"/api/v2/dags/{dag_id}"))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def import_errors(self) -> list[dict[str, Any]]:
        return self.list_all("/api/v2/importErrors", "import_errors")

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self.request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": paused}, update_mask="is_paused")

    def create_backfill(
        self, dag_id: str, start: date, end: date, max_active_runs: int, reprocess: str
    ) -> dict[str, Any]:
        body = {
            "dag_id": dag_id,
            "from_date": f"{start.isoformat()}T00:00:00Z",
            "to_date": f"{end.isoformat()}T00:00:00Z",
            "max_active_runs": max_active_runs,
            "reprocess_behavior": reprocess,
        }
        return dict(self.request("POST", "/api/v2/backfills", body))

    def backfills(self, dag_id: str) -> list[dict[str, Any]]:
        return self.list_all("/api/v2/backfills", "backfills", dag_id=dag_id)

    def backfill(self, backfill_id: int) -> dict[str, Any]:
        return dict(self.request("GET", f"/api/v2/backfills/{backfill_id}"))

    def dag_runs(self, dag_id: str, start: date, end: date) -> list[dict[str, Any]]:
        """Runs of a DAG whose logical dates fall on the days start..end."""
        return self.list_all(
            f"/api/v2/dags/{dag_id}/dagRuns",
            "dag_runs",
            logical_date_gte=f"{start.isoformat()}T00:00:00Z",
            logical_date_lte=f"{end.isoformat()}T23:59:59Z",
            order_by="logical_date",
        )


def api_for(cfg: StackConfig) -> AirflowApi:
    """A signed-in client of the stack's API server."""
    return AirflowApi(cfg.airflow_url, ADMIN_USER, ensure_secrets(cfg).admin_password)


def day_range(start: date, end: date) -> list[date]:
    """Every day from start to end, both included."""
    if end < start:
        raise StackError(f"the range ends ({end}) before it starts ({start})")
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def wait_for_dag(cfg: StackConfig, api: AirflowApi, dag_id: str, timeout: float) -> None:
    """Wait until the DAG is parsed and known to the API; fail at once on an import error."""
    deadline = time.monotonic() + timeout
    while api.dag(dag_id) is None:
        errors = api.import_errors()
        if errors:
            text = "\n".join(f"{e.get('filename')}:\n{e.get('stack_trace')}" for e in errors)
            raise StackError(f"DAG {dag_id} is not there and DAG files fail to import:\n{text}")
        if time.monotonic() > deadline:
            raise StackError(
                f"DAG {dag_id} did not appear within {timeout:.0f}s; is it defined in {cfg.repo_root / 'dags'}?\n"
                + log_tail(log_file(cfg, "dag-processor"))
            )
        _check_alive(cfg)
        time.sleep(2)


def _check_alive(cfg: StackConfig) -> None:
    for name in COMPONENTS:
        if running_pid(cfg, name) is None:
            raise StackError(f"{name} is not running\n{log_tail(log_file(cfg, name))}")


def summarize_runs(runs: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Number of DAG runs by state."""
    return dict(sorted(Counter(str(r["state"]) for r in runs).items()))


def run_days(runs: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """State of the run of each logical day (YYYY-MM-DD)."""
    return {str(r["logical_date"])[:10]: str(r["state"]) for r in runs if r.get("logical_date")}


def backfill_and_wait(
    cfg: StackConfig,
    dag_id: str,
    start: date,
    end: date,
    *,
    reprocess: str = "failed",
    timeout: float = 1800.0,
    api: AirflowApi | None = None,
    progress: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Unpause the DAG, backfill the days start..end through the REST API and wait for every run to end.

    :param reprocess: Airflow's reprocess_behavior for days that already have a run: none, failed, completed.
    :returns: the DAG runs of those days (one per day) in their final states.
    """
    api = api or api_for(cfg)
    wait_for_dag(cfg, api, dag_id, timeout=180)
    max_runs = int(cfg.float_setting("MLOPS_BACKFILL_MAX_ACTIVE_RUNS"))
    backfill = _create_backfill(api, dag_id, start, end, max_runs, reprocess, progress)
    # Unpaused after the backfill exists: its runs only start once the DAG is unpaused.
    api.set_paused(dag_id, False)
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        done = bool(api.backfill(int(backfill["id"])).get("completed_at"))
        runs = api.dag_runs(dag_id, start, end)
        counts = summarize_runs(runs)
        line = ", ".join(f"{n} {s}" for s, n in counts.items()) or "no runs yet"
        if line != last:
            progress(f"  runs: {line}")
            last = line
        if done and all(r["state"] in TERMINAL_RUN_STATES for r in runs):
            return runs
        if time.monotonic() > deadline:
            raise StackError(f"backfill of {dag_id} not finished after {timeout:.0f}s (runs: {line})")
        _check_alive(cfg)
        time.sleep(3)


def _create_backfill(
    api: AirflowApi,
    dag_id: str,
    start: date,
    end: date,
    max_runs: int,
    reprocess: str,
    progress: Callable[[str], None],
    attempts: int = 20,
) -> dict[str, Any]:
    for attempt in range(1, attempts + 1):
        try:
            backfill = api.create_backfill(dag_id, start, end, max_runs, reprocess)
            progress(f"backfill {backfill['id']} of {dag_id}: {start}..{end} (reprocess {reprocess})")
            return backfill
        except ApiError as exc:
            running = [b for b in api.backfills(dag_id) if not b.get("completed_at")] if exc.status == 409 else []
            if running:
                # One backfill per DAG at a time: follow the one already running instead.
                backfill = running[0]
                progress(f"a backfill of {dag_id} is running ({backfill['from_date']}..{backfill['to_date']}): waiting")
                return backfill
            # 503: SQLite was locked by the scheduler; Airflow removed the partial backfill, so retry.
            # 409 with no running backfill: the other one just finished, so retry too.
            if exc.status not in (409, 503) or attempt == attempts:
                raise
            progress(f"  metadata database busy, retrying the backfill ({attempt}/{attempts})")
            time.sleep(3)
    raise AssertionError("unreachable")


# The lake -----------------------------------------------------------------------------------


def partition_dates(relative_paths: Iterable[str]) -> dict[str, list[str]]:
    """Dates partitioned per dataset, from file paths relative to a zone's pipeline folder.

    `flights/date=2013-01-01/flights.parquet` -> {"flights": ["2013-01-01"]}; a partition right
    below the pipeline folder (features/<p>/date=.../) is keyed by "".
    """
    found: dict[str, set[str]] = {}
    for rel in relative_paths:
        parts = rel.strip("/").split("/")
        for i, part in enumerate(parts[:-1]):
            match = _DATE_PART.match(part)
            if match:
                found.setdefault("/".join(parts[:i]), set()).add(match.group(1))
                break
    return {k: sorted(v) for k, v in sorted(found.items())}


def lake_partitions(cfg: StackConfig, zone: str, pipeline: str) -> dict[str, list[str]]:
    """Dated partitions per dataset in one zone of the stack's lake."""
    from airflow_mlops.core.lake.storage import open_lake

    s3 = cfg.s3_settings() if cfg.lake_root.startswith("s3://") else None
    lake = open_lake(cfg.lake_root, s3 or None)
    prefix = lake.zone_uri(zone, pipeline)
    return partition_dates(uri[len(prefix) :] for uri in lake.list(prefix))


_AWS_ENV = {
    "endpoint_url": "AWS_ENDPOINT_URL",
    "aws_access_key_id": "AWS_ACCESS_KEY_ID",
    "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
}


def feed(cfg: StackConfig, pipeline: str, start: date, end: date) -> None:
    """Land the demo days into the lake's landing zone with the package's `feed` command."""
    env = stack_env(cfg, ensure_secrets(cfg))
    if cfg.lake_root.startswith("s3://"):
        # The feeder uses boto3's default credential chain, as an upstream producer would.
        env.update({_AWS_ENV[k]: v for k, v in cfg.s3_settings().items()})
    argv = [sys.executable, "-m", "airflow_mlops", "feed", "--pipeline", pipeline]
    argv += ["--start", start.isoformat(), "--end", end.isoformat(), "--lake-root", cfg.lake_root]
    proc = subprocess.run(argv, env=env, cwd=cfg.repo_root, check=False, timeout=900)
    if proc.returncode != 0:
        raise StackError(f"{' '.join(argv[1:])} exited {proc.returncode}")


def demo(cfg: StackConfig, pipeline: str, start: date, end: date, reprocess: str = "failed") -> int:
    """Start the stack, land the days, backfill the ingest DAG over them and print where to look.

    :returns: the exit status: 0 when every run succeeded.
    """
    days = day_range(start, end)
    keys = up(cfg)
    print(f"\ndemo: landing {pipeline} data for {start}..{end}")
    feed(cfg, pipeline, start, end)
    dag_id = f"{pipeline}__ingest"
    print(f"\ndemo: backfilling {dag_id} through the REST API")
    runs = backfill_and_wait(
        cfg, dag_id, start, end, reprocess=reprocess, timeout=cfg.float_setting("MLOPS_DEMO_TIMEOUT_SECONDS")
    )
    states = run_days(runs)
    missing = [d.isoformat() for d in days if d.isoformat() not in states]
    failed = sorted(d for d, s in states.items() if s != "success")
    print(f"\ndemo: {dag_id} runs by state: {summarize_runs(runs)}")
    for zone in ("raw", "features", "quarantine"):
        parts = lake_partitions(cfg, zone, pipeline)
        for dataset, dates in parts.items():
            label = f"{zone}/{pipeline}/{dataset}".rstrip("/")
            print(f"  {label:<40} {len(dates):>4} partitions  {dates[0]}..{dates[-1]}")
    print(f"\nWhere to look:\n{describe(cfg, keys)}")
    print(f"  DAG runs     {cfg.airflow_url}/dags/{dag_id}/runs")
    print(f"\nThe stack keeps running. Stop it with:  {_python_cmd(cfg)} -m airflow_mlops.localstack down")
    if failed or missing:
        print(f"demo: FAILED: runs not successful for {', '.join(failed + missing)}", file=sys.stderr)
        return 1
    return 0


def _python_cmd(cfg: StackConfig) -> str:
    """This interpreter, relative to the checkout when inside it (.venv/bin/python)."""
    exe = Path(sys.executable)
    return str(exe.relative_to(cfg.repo_root)) if exe.is_relative_to(cfg.repo_root) else str(exe)


# Command line -------------------------------------------------------------------------------


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_mlops.localstack",
        description="The local stack: Airflow (SQLite, LocalExecutor) and MLflow on 127.0.0.1, set up by mlops.env.",
    )
    parser.add_argument("--settings", type=Path, help=f"settings file (default {SETTINGS_FILE})")
    parser.add_argument("--state-dir", help="state folder (overrides MLOPS_STATE_DIR)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("up", help="start the stack (does nothing for components already running)")
    commands.add_parser("down", help="stop the stack")
    commands.add_parser("status", help="state and memory of each component")
    commands.add_parser("env", help="print the stack's environment as export lines, for `airflow` commands")
    demo_cmd = commands.add_parser(
        "demo",
        help="the main job: start the stack and run the whole lifecycle over demo days, then print a summary",
        description="Lands the days start..end; ingests start..history-end in one process; trains and deploys the "
        "first model; then Airflow runs the live days (ingest, score, monitor, retrains the monitor triggers).",
    )
    ingest_cmd = commands.add_parser("ingest-demo", help="start the stack, land demo days and backfill the ingest DAG")
    for cmd in (demo_cmd, ingest_cmd):
        cmd.add_argument("--pipeline", help="pipeline name (default MLOPS_DEMO_PIPELINE)")
        cmd.add_argument("--start", type=_date, help="first logical date (default MLOPS_DEMO_START)")
        cmd.add_argument("--end", type=_date, help="last logical date, included (default MLOPS_DEMO_END)")
        cmd.add_argument(
            "--reprocess",
            choices=("none", "failed", "completed"),
            default="failed",
            help="days that already have a run: keep them, rerun the failed ones (default), or rerun all",
        )
    demo_cmd.add_argument(
        "--history-end", type=_date, help="last day ingested in one process before the live days (default "
        "MLOPS_DEMO_HISTORY_END)"
    )  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if isinstance(sys.stdout, io.TextIOWrapper):
        # Progress lines must show up in order with the output of the commands run in between.
        sys.stdout.reconfigure(line_buffering=True)
    try:
        overrides = {"MLOPS_STATE_DIR": args.state_dir} if args.state_dir else None
        cfg = StackConfig.load(args.settings, overrides=overrides)
        if args.command == "up":
            up(cfg)
        elif args.command == "down":
            down(cfg)
        elif args.command == "status":
            print(format_status(status(cfg)))
        elif args.command == "env":
            env = stack_env(cfg, ensure_secrets(cfg))
            keys = sorted(k for k in env if k.startswith(("AIRFLOW", "MLOPS_", "MLFLOW_")))
            print("\n".join(f"export {k}={_shell_quote(env[k])}" for k in keys))
        else:
            start = args.start or _date(cfg.settings["MLOPS_DEMO_START"])
            end = args.end or _date(cfg.settings["MLOPS_DEMO_END"])
            pipeline = args.pipeline or cfg.settings["MLOPS_DEMO_PIPELINE"]
            if args.command == "ingest-demo":
                return demo(cfg, pipeline, start, end, args.reprocess)
            from airflow_mlops.demo_loop import main_loop

            history_end = args.history_end or _date(cfg.settings["MLOPS_DEMO_HISTORY_END"])
            return main_loop(cfg, pipeline, start, history_end, end, args.reprocess)
    except (StackError, argparse.ArgumentTypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def _shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


if __name__ == "__main__":
    raise SystemExit(main())
