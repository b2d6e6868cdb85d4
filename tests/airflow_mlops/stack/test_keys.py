"""Tests of the stack's secrets: generated once, private, usable by Airflow."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from airflow_mlops.stack.keys import ensure_secrets
from tests.airflow_mlops.stack.helpers import make_cfg


def test_secrets_are_generated_once_and_private(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path)
    first = ensure_secrets(cfg)
    assert ensure_secrets(cfg) == first
    assert json.loads(cfg.passwords_file.read_text()) == {"admin": first.admin_password}
    for path in (cfg.secrets_file, cfg.passwords_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len({first.jwt_secret, first.api_secret_key, first.admin_password}) == 3
    assert first.admin_password.isalnum() and len(first.admin_password) == 16


def test_a_secret_missing_from_an_older_state_folder_is_added_and_the_others_kept(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path)
    first = ensure_secrets(cfg)
    stored = json.loads(cfg.secrets_file.read_text())
    del stored["model_server_token"]
    cfg.secrets_file.write_text(json.dumps(stored))
    again = ensure_secrets(cfg)
    assert again.jwt_secret == first.jwt_secret and again.fernet_key == first.fernet_key
    assert again.model_server_token and again.model_server_token != first.model_server_token


def test_fernet_key_is_accepted_by_cryptography(tmp_path: Path) -> None:
    from cryptography.fernet import Fernet

    key = ensure_secrets(make_cfg(tmp_path)).fernet_key
    assert Fernet(key.encode()).decrypt(Fernet(key.encode()).encrypt(b"x")) == b"x"


def test_extra_users_get_their_own_passwords_and_a_bad_entry_is_refused(tmp_path: Path) -> None:
    import pytest

    from airflow_mlops.stack.components import stack_env
    from airflow_mlops.stack.keys import user_password
    from airflow_mlops.stack.settings import StackError

    cfg = make_cfg(tmp_path, MLOPS_AIRFLOW_USERS="alice:user, nobody:")
    assert cfg.airflow_users() == [("alice", "user"), ("nobody", "")]
    first = ensure_secrets(cfg)
    passwords = json.loads(cfg.passwords_file.read_text())
    assert set(passwords) == {"admin", "alice", "nobody"} and passwords["admin"] == first.admin_password
    assert user_password(cfg, "alice") == passwords["alice"] != passwords["nobody"]
    assert stack_env(cfg, first)["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin,alice:user,nobody:"
    for bad in ("alice:root", "alice:user,alice:viewer", "a b:user"):
        with pytest.raises(StackError, match="MLOPS_AIRFLOW_USERS"):
            make_cfg(tmp_path, MLOPS_AIRFLOW_USERS=bad).airflow_users()
