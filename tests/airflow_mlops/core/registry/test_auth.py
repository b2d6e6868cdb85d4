"""MLflow credentials bound to their server: which request URLs get them, and that they are never printed."""

from __future__ import annotations

import os

import pytest
import requests

from airflow_mlops.core.registry import auth
from airflow_mlops.core.registry.auth import ServerCredentials, ServerScopedAuth


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(auth.ENV_AUTH_PROVIDER, raising=False)
    monkeypatch.setattr(auth, "_servers", {})


def header(url: str) -> str | None:
    prepared = requests.Request("GET", url).prepare()
    return ServerScopedAuth()(prepared).headers.get("Authorization")


def test_credentials_go_to_their_server_and_paths_below_it_only() -> None:
    auth.register("https://mlflow.example.com:8443/prefix/", ServerCredentials(token="t1"))
    auth.register("https://mlflow.example.com:8443/prefix/team", ServerCredentials(username="u", password="p"))
    assert header("https://mlflow.example.com:8443/prefix/api/2.0/mlflow/runs/get") == "Bearer t1"
    assert header("https://MLFLOW.example.com:8443/prefix") == "Bearer t1"
    assert header("https://mlflow.example.com:8443/prefix/team/api/2.0/x") == "Basic dTpw"  # the longer base
    for other in (
        "https://mlflow.example.com:8443/prefixed/api",  # a path prefix is not a string prefix
        "https://mlflow.example.com/prefix/api",  # another port
        "http://mlflow.example.com:8443/prefix/api",  # plain http
        "https://evil.example.com:8443/prefix/api",
    ):
        assert header(other) is None, other
    assert os.environ[auth.ENV_AUTH_PROVIDER] == auth.PROVIDER_NAME  # the provider's name, not a secret


def test_another_selected_provider_is_an_error_not_a_silent_loss() -> None:
    os.environ[auth.ENV_AUTH_PROVIDER] = "kubernetes"
    with pytest.raises(auth.CredentialsError, match="MLFLOW_TRACKING_AUTH=kubernetes selects another"):
        auth.register("https://m.example.com", ServerCredentials(token="t"))


def test_secrets_are_not_in_the_repr() -> None:
    text = repr(ServerCredentials(username="u", password="hunter2", token="t0k3n-value"))
    assert "hunter2" not in text and "t0k3n-value" not in text and "username='u'" in text
