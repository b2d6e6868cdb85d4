"""The model server's settings: tokens that cannot be empty, from values or from files."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_mlops.serving.config import ServerSettings, SettingsError, read_token


@pytest.mark.parametrize("token", ["", " ", "\n", " token", "token\n"])
def test_an_empty_or_blank_edged_api_token_is_refused(token: str) -> None:
    # An empty token matched the bare header "Authorization: Bearer" (the header value is stripped).
    with pytest.raises(SettingsError, match="API token is empty"):
        ServerSettings(tracking_uri="http://mlflow", token=token, lake_root="/lake")


def test_the_admin_token_is_not_empty_and_not_the_api_token() -> None:
    with pytest.raises(SettingsError, match="admin token is empty"):
        ServerSettings(tracking_uri="http://mlflow", token="api", admin_token="", lake_root="/lake")
    with pytest.raises(SettingsError, match="must differ from the API token"):
        ServerSettings(tracking_uri="http://mlflow", token="same", admin_token="same", lake_root="/lake")
    assert ServerSettings(tracking_uri="http://mlflow", token="api", admin_token="admin", lake_root="/lake")


def test_limits_are_positive() -> None:
    with pytest.raises(SettingsError, match="max_buffer_rows must be at least 1"):
        ServerSettings(tracking_uri="http://mlflow", token="api", lake_root="/lake", max_buffer_rows=0)


def test_read_token_from_a_value_or_a_file(tmp_path: Path) -> None:
    file = tmp_path / "token"
    file.write_text("from-file\n", encoding="utf-8")  # as `echo token > file` writes it
    assert read_token(None, str(file), "the API token") == "from-file"
    assert read_token(" value ", None, "the API token") == "value"
    assert read_token(None, None, "the API token") is None
    file.write_text("\n", encoding="utf-8")
    with pytest.raises(SettingsError, match="is empty"):
        read_token(None, str(file), "the API token")
    with pytest.raises(SettingsError, match="is empty"):
        read_token("", None, "the API token")
    with pytest.raises(SettingsError, match="not both"):
        read_token("value", str(file), "the API token")
    with pytest.raises(SettingsError, match="cannot read the token file"):
        read_token(None, str(tmp_path / "missing"), "the API token")
