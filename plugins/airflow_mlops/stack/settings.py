"""The stack's settings: mlops.env parsed, merged with the environment and resolved into a StackConfig."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from airflow_mlops.settings import PROJECT_ROOT

HOST = "127.0.0.1"
SETTINGS_FILE = PROJECT_ROOT / "mlops.env"

DEFAULTS = {
    "MLOPS_STATE_DIR": ".local/stack",
    "MLOPS_AIRFLOW_PORT": "8080",
    "MLOPS_AIRFLOW_USERS": "",
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
    "MLOPS_STACK_PROFILE": "embedded",
    "MLOPS_POSTGRES_HOST": "127.0.0.1",
    "MLOPS_POSTGRES_PORT": "5432",
    "MLOPS_POSTGRES_USER": "postgres",
    "MLOPS_POSTGRES_PASSWORD": "",
    "MLOPS_AIRFLOW_DB": "mlops_airflow",
    "MLOPS_MLFLOW_DB": "mlops_mlflow",
    "MLOPS_REDIS_URL": "redis://127.0.0.1:6379/0",
    "MLOPS_CELERY_QUEUE": "mlops",
    "MLOPS_CELERY_WORKERS": "2",
    "MLOPS_CELERY_WORKER_CONCURRENCY": "2",
    "MLOPS_WORKER_LOG_SERVER_PORT": "8793",
    "MLOPS_S3_BUCKET": "mlops",
    "MLOPS_S3_PORT": "9000",
}
"""Settings used when neither mlops.env nor the environment sets them."""

PROFILES = ("embedded", "distributed")
MANAGED_S3_KEYS = {"aws_access_key_id": "mlops-local", "aws_secret_access_key": "mlops-local-secret"}
"""Keys given to the stack's own S3 server (moto accepts any) when mlops.env sets none."""
WORKER_ADDRESS_BASE = 10
"""Celery worker N answers on 127.0.0.<10 + N>: its own loopback address, as if on a host of its own."""

AIRFLOW_ROLES = ("viewer", "user", "op", "admin", "")
"""Roles of Airflow's simple auth manager; an empty role grants nothing."""
_USER = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
_LINE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")


class StackError(RuntimeError):
    """The stack cannot be configured, started or driven; the message says what and where to look."""


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


_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_QUEUE = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


@dataclass(frozen=True)
class Worker:
    """One Celery worker of the distributed profile: its name and the loopback address it answers on."""

    name: str
    address: str

    @property
    def log_server(self) -> str:
        """Component name of the worker's log server."""
        return f"{self.name}-logs"


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
    profile: str = field(init=False)

    def __post_init__(self) -> None:
        profile = self.settings["MLOPS_STACK_PROFILE"].strip().lower() or "embedded"
        if profile not in PROFILES:
            raise StackError(
                f"{self.source}: MLOPS_STACK_PROFILE must be one of {', '.join(PROFILES)}, got {profile!r}"
            )
        object.__setattr__(self, "profile", profile)
        state = Path(self.settings["MLOPS_STATE_DIR"] or DEFAULTS["MLOPS_STATE_DIR"]).expanduser()
        object.__setattr__(self, "state_dir", (self.repo_root / state).resolve())
        for key, attr in (
            ("MLOPS_AIRFLOW_PORT", "airflow_port"),
            ("MLOPS_MLFLOW_PORT", "mlflow_port"),
            ("MLOPS_MODEL_SERVER_PORT", "model_server_port"),
        ):
            object.__setattr__(self, attr, self.port_setting(key))
        lake = self.settings["MLOPS_LAKE_ROOT"]
        if self.distributed:
            self._check_distributed()
            if not lake:
                lake = f"s3://{self.bucket}/lake"
            elif not lake.startswith("s3://"):
                raise StackError(
                    f"{self.source}: the distributed profile keeps the lake in S3 (workers share no disk): "
                    f"MLOPS_LAKE_ROOT must be empty (s3://<MLOPS_S3_BUCKET>/lake) or s3://bucket/prefix, got {lake!r}"
                )
        if not lake:
            lake = str(self.state_dir / "lake")
        elif "://" not in lake:
            lake = str((self.repo_root / Path(lake).expanduser()).resolve())
        elif not lake.startswith("s3://"):
            raise StackError(f"{self.source}: MLOPS_LAKE_ROOT must be a folder or s3://bucket/prefix, got {lake!r}")
        object.__setattr__(self, "lake_root", lake.rstrip("/") if lake.startswith("s3://") else lake)

    def airflow_users(self) -> list[tuple[str, str]]:
        """Users of the Airflow UI besides admin, from MLOPS_AIRFLOW_USERS (`name:role,...`; an empty role: a user
        who may sign in and read nothing). Their passwords are generated into the passwords file."""
        users: list[tuple[str, str]] = []
        for item in filter(None, (part.strip() for part in self.settings.get("MLOPS_AIRFLOW_USERS", "").split(","))):
            name, _, role = item.partition(":")
            if not _USER.fullmatch(name) or role not in AIRFLOW_ROLES or name in {n for n, _ in users}:
                raise StackError(
                    f"{self.source}: MLOPS_AIRFLOW_USERS: {item!r} must be name:role (role one of "
                    f"{', '.join(r for r in AIRFLOW_ROLES if r)}, or empty for no access), each name once"
                )
            users.append((name, role))
        return users

    def _check_distributed(self) -> None:
        """Refuse settings of the distributed profile that cannot work, naming the key."""
        for key in ("MLOPS_AIRFLOW_DB", "MLOPS_MLFLOW_DB"):
            if not _DB_NAME.match(self.settings[key]):
                raise StackError(
                    f"{self.source}: {key} must be a PostgreSQL database name (lower-case letters, digits and _, "
                    f"not starting with a digit), got {self.settings[key]!r}"
                )
        if self.settings["MLOPS_AIRFLOW_DB"] == self.settings["MLOPS_MLFLOW_DB"]:
            raise StackError(f"{self.source}: MLOPS_AIRFLOW_DB and MLOPS_MLFLOW_DB must name two databases")
        if not _BUCKET.match(self.settings["MLOPS_S3_BUCKET"]):
            raise StackError(
                f"{self.source}: MLOPS_S3_BUCKET must be an S3 bucket name (3-63 lower-case letters, digits, "
                f"dots and hyphens), got {self.settings['MLOPS_S3_BUCKET']!r}"
            )
        if not _QUEUE.match(self.settings["MLOPS_CELERY_QUEUE"]):
            raise StackError(
                f"{self.source}: MLOPS_CELERY_QUEUE must be a queue name, got {self.settings['MLOPS_CELERY_QUEUE']!r}"
            )
        if not self.settings["MLOPS_REDIS_URL"].startswith(("redis://", "rediss://")):
            raise StackError(
                f"{self.source}: MLOPS_REDIS_URL must be redis://host:port/db, got {self.settings['MLOPS_REDIS_URL']!r}"
            )
        for key in ("MLOPS_POSTGRES_PORT", "MLOPS_WORKER_LOG_SERVER_PORT", "MLOPS_S3_PORT"):
            self.port_setting(key)
        for key, top in (("MLOPS_CELERY_WORKERS", 9), ("MLOPS_CELERY_WORKER_CONCURRENCY", 16)):
            if not 1 <= _int_setting(self.settings, key, self.source) <= top:
                raise StackError(f"{self.source}: {key} must be between 1 and {top}, got {self.settings[key]}")

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

    def port_setting(self, key: str) -> int:
        port = _int_setting(self.settings, key, self.source)
        if not 0 < port < 65536:
            raise StackError(f"{self.source}: {key} must be a port number (1-65535), got {port}")
        return port

    def float_setting(self, key: str) -> float:
        try:
            return float(self.settings[key])
        except ValueError:
            raise StackError(f"{self.source}: {key} must be a number, got {self.settings[key]!r}") from None

    @property
    def distributed(self) -> bool:
        return self.profile == "distributed"

    @property
    def s3_managed(self) -> bool:
        """Whether the stack runs its own S3 server (distributed profile without MLOPS_S3_ENDPOINT_URL)."""
        return self.distributed and not self.settings["MLOPS_S3_ENDPOINT_URL"]

    @property
    def s3_port(self) -> int:
        return self.port_setting("MLOPS_S3_PORT")

    @property
    def bucket(self) -> str:
        return self.settings["MLOPS_S3_BUCKET"]

    @property
    def mlflow_artifacts(self) -> str:
        """Where the MLflow server keeps artifacts: S3 in the distributed profile, else a local folder."""
        return f"s3://{self.bucket}/mlflow" if self.distributed else str(self.mlflow_dir / "artifacts")

    @property
    def celery_queue(self) -> str:
        return self.settings["MLOPS_CELERY_QUEUE"]

    @property
    def workers(self) -> list[Worker]:
        """The Celery workers of the distributed profile (none in the embedded one)."""
        if not self.distributed:
            return []
        count = _int_setting(self.settings, "MLOPS_CELERY_WORKERS", self.source)
        return [Worker(f"worker-{i}", f"127.0.0.{WORKER_ADDRESS_BASE + i}") for i in range(1, count + 1)]

    @property
    def workers_dir(self) -> Path:
        """Each worker's own folder (its Airflow home and task logs): workers share no disk."""
        return self.state_dir / "workers"

    def database_url(self, setting: str, driver: str = "postgresql") -> str:
        """SQLAlchemy URL of one of the stack's PostgreSQL databases (MLOPS_AIRFLOW_DB or MLOPS_MLFLOW_DB)."""
        user = quote(self.settings["MLOPS_POSTGRES_USER"], safe="")
        password = self.settings["MLOPS_POSTGRES_PASSWORD"]
        auth = f"{user}:{quote(password, safe='')}" if password else user
        host, port = self.settings["MLOPS_POSTGRES_HOST"], self.port_setting("MLOPS_POSTGRES_PORT")
        return f"{driver}://{auth}@{host}:{port}/{self.settings[setting]}"

    def s3_settings(self) -> dict[str, str]:
        """Endpoint and credentials of an S3 lake, only those that are set (the stack's own server's if it runs one)."""
        names = {
            "endpoint_url": "MLOPS_S3_ENDPOINT_URL",
            "aws_access_key_id": "MLOPS_S3_ACCESS_KEY_ID",
            "aws_secret_access_key": "MLOPS_S3_SECRET_ACCESS_KEY",
        }
        out = {arg: self.settings[key] for arg, key in names.items() if self.settings.get(key)}
        if self.s3_managed:
            out = {**MANAGED_S3_KEYS, **out, "endpoint_url": f"http://{HOST}:{self.s3_port}"}
        return out
