"""How the model server runs: its settings, and its API tokens read from the command line, variables or files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ENV_TOKEN = "MLOPS_MODEL_SERVER_TOKEN"  # noqa: S105 - the name of the variable, not a secret
ENV_TOKEN_FILE = "MLOPS_MODEL_SERVER_TOKEN_FILE"  # noqa: S105
ENV_ADMIN_TOKEN = "MLOPS_MODEL_SERVER_ADMIN_TOKEN"  # noqa: S105
ENV_ADMIN_TOKEN_FILE = "MLOPS_MODEL_SERVER_ADMIN_TOKEN_FILE"  # noqa: S105
ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"


class SettingsError(ValueError):
    """Settings the server refuses to start with; the message names the setting."""


@dataclass(frozen=True)
class ServerSettings:
    """How the server runs.

    tracking_uri: MLflow server holding the registry. token: required on /predict and /version (never empty).
    admin_token: required on /admin/reload (None: that route is refused); it must differ from `token`.
    poll_seconds: how often the champion aliases are checked. max_rows: largest batch a request may send.
    max_body_bytes: largest request body. flush_seconds / flush_rows: the inference log is written when
    either is reached (and on shutdown). max_buffer_rows: most inference log rows kept in memory while
    writes fail. lake_root: lake receiving inference_log/. pipelines_dir: configs.
    """

    tracking_uri: str
    token: str
    lake_root: str
    admin_token: str | None = None
    poll_seconds: float = 5.0
    max_rows: int = 1000
    max_body_bytes: int = 8 * 1024 * 1024
    flush_seconds: float = 30.0
    flush_rows: int = 5000
    max_buffer_rows: int = 100_000
    pipelines_dir: Path | None = None

    def __post_init__(self) -> None:
        # Compared with the stripped header value: a token of blanks would let a bare "Bearer" in.
        if not self.token or not self.token.strip() or self.token != self.token.strip():
            raise SettingsError("the API token is empty or starts or ends with blanks")
        if self.admin_token is not None:
            if not self.admin_token.strip() or self.admin_token != self.admin_token.strip():
                raise SettingsError("the admin token is empty or starts or ends with blanks")
            if self.admin_token == self.token:
                raise SettingsError("the admin token must differ from the API token")
        for name in ("max_rows", "max_body_bytes", "flush_rows", "max_buffer_rows"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("poll_seconds", "flush_seconds"):
            if not getattr(self, name) > 0:
                raise SettingsError(f"{name} must be above 0, got {getattr(self, name)}")


def read_token(value: str | None, file: str | None, what: str) -> str | None:
    """A token given as a value or as a file (one line: a trailing newline is not part of it); None if neither.

    Raises SettingsError for both given, an unreadable file, or an empty token.
    """
    if value is not None and file:
        raise SettingsError(f"{what}: give the token or a file holding it, not both")
    if file:
        try:
            value = Path(file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError(f"{what}: cannot read the token file {file}: {exc}") from exc
        if not value:
            raise SettingsError(f"{what}: the token file {file} is empty")
        return value
    if value is None:
        return None
    value = value.strip()
    if not value:
        raise SettingsError(f"{what} is empty")
    return value
