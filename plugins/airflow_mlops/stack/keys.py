"""Secrets of the stack, generated once per state folder: Airflow's keys, the admin login, service tokens."""

from __future__ import annotations

import base64
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from airflow_mlops.stack.settings import StackConfig

ADMIN_USER = "admin"
_LOGIN_CHARS = "abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"

GENERATORS: dict[str, Callable[[], str]] = {
    "jwt_secret": lambda: secrets.token_urlsafe(32),
    "api_secret_key": lambda: secrets.token_urlsafe(32),
    "fernet_key": lambda: base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
    "model_server_token": lambda: secrets.token_urlsafe(32),
    "model_server_admin_token": lambda: secrets.token_urlsafe(32),
}
"""Secret name -> how to make one; a name added here is generated for existing state folders too."""


@dataclass(frozen=True)
class Secrets:
    """Secrets generated once per state folder, so restarts keep sessions, tokens and the login."""

    jwt_secret: str
    api_secret_key: str
    fernet_key: str
    admin_password: str
    model_server_token: str
    model_server_admin_token: str


def write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def user_password(cfg: StackConfig, name: str) -> str:
    """The password of a user of the stack's Airflow UI (admin or one of MLOPS_AIRFLOW_USERS)."""
    ensure_secrets(cfg)
    return str(json.loads(cfg.passwords_file.read_text())[name])


def ensure_secrets(cfg: StackConfig) -> Secrets:
    """Read the stack's secrets and the admin password, generating (and storing) any that are missing."""
    stored: dict[str, str] = json.loads(cfg.secrets_file.read_text()) if cfg.secrets_file.is_file() else {}
    if any(name not in stored for name in GENERATORS):
        stored = {name: stored.get(name) or make() for name, make in GENERATORS.items()}
        write_private(cfg.secrets_file, json.dumps(stored, indent=1) + "\n")
    # The password lives in SimpleAuthManager's own file format: {"user": "password"}.
    passwords: dict[str, str] = json.loads(cfg.passwords_file.read_text()) if cfg.passwords_file.is_file() else {}
    missing = [name for name in (ADMIN_USER, *(n for n, _ in cfg.airflow_users())) if not passwords.get(name)]
    for name in missing:
        # Letters and digits only: easy to copy from a terminal into the login form.
        passwords[name] = "".join(secrets.choice(_LOGIN_CHARS) for _ in range(16))
    if missing:
        write_private(cfg.passwords_file, json.dumps(passwords) + "\n")
    return Secrets(admin_password=passwords[ADMIN_USER], **{name: stored[name] for name in GENERATORS})
