"""The stack's settings: mlops.env parsed, merged with the environment and resolved into a StackConfig."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from airflow_mlops.settings import PROJECT_ROOT

HOST = "127.0.0.1"
SETTINGS_FILE = PROJECT_ROOT / "mlops.env"

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
            object.__setattr__(self, attr, self.port_setting(key))
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

    def s3_settings(self) -> dict[str, str]:
        """Endpoint and credentials of an S3 lake, only those that are set."""
        names = {
            "endpoint_url": "MLOPS_S3_ENDPOINT_URL",
            "aws_access_key_id": "MLOPS_S3_ACCESS_KEY_ID",
            "aws_secret_access_key": "MLOPS_S3_SECRET_ACCESS_KEY",
        }
        return {arg: self.settings[key] for arg, key in names.items() if self.settings.get(key)}
