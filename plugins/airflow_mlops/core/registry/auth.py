"""MLflow credentials bound to their server, kept in memory: never in os.environ, never sent to another host."""

from __future__ import annotations

import base64
import os
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from mlflow.tracking.request_auth.abstract_request_auth_provider import RequestAuthProvider
from mlflow.tracking.request_auth.registry import _request_auth_provider_registry

PROVIDER_NAME = "airflow_mlops"
"""MLflow request auth provider name (MLFLOW_TRACKING_AUTH selects it; the name is not a secret)."""
ENV_AUTH_PROVIDER = "MLFLOW_TRACKING_AUTH"


class CredentialsError(ValueError):
    """Credentials cannot be applied (another auth provider is selected); the message says what to change."""


@dataclass(frozen=True, repr=False)
class ServerCredentials:
    """Basic auth (username, password) or a bearer token for one MLflow server; the token wins when both are set."""

    username: str | None = None
    password: str | None = None
    token: str | None = None

    def __repr__(self) -> str:  # never print a secret
        return f"ServerCredentials(username={self.username!r}, password=***, token={'***' if self.token else None})"

    def authorization(self) -> str | None:
        if self.token:
            return f"Bearer {self.token}"
        if self.username:
            pair = f"{self.username}:{self.password or ''}".encode()
            return "Basic " + base64.b64encode(pair).decode("ascii")
        return None


_lock = threading.Lock()
_servers: dict[str, ServerCredentials] = {}


def _base(uri: str) -> str:
    parts = urlsplit(uri)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}"


def credentials_for(url: str) -> ServerCredentials | None:
    """The credentials registered for the server a request URL goes to (longest matching base URL)."""
    target = _base(url)
    with _lock:
        matches = [base for base in _servers if target == base or target.startswith(base + "/")]
        return _servers[max(matches, key=len)] if matches else None


def register(server_uri: str, credentials: ServerCredentials) -> None:
    """Send `credentials` with every MLflow request to `server_uri` (and below it) made by this process.

    They stay in this process's memory: MLflow's HTTP layer asks the auth provider below for each request, on
    any thread (artifact transfers use a thread pool), and the provider matches the request's URL.
    """
    if not server_uri.startswith(("http://", "https://")):
        return  # a local store needs no credentials
    selected = os.environ.get(ENV_AUTH_PROVIDER)
    if selected not in (None, "", PROVIDER_NAME):
        raise CredentialsError(
            f"{ENV_AUTH_PROVIDER}={selected} selects another MLflow auth provider, so the credentials of "
            f"{server_uri} would not be sent: unset it or set it to {PROVIDER_NAME}"
        )
    with _lock:
        _servers[_base(server_uri)] = credentials
    # Only the provider's name: MLflow reads it for each request to pick the auth object below.
    os.environ[ENV_AUTH_PROVIDER] = PROVIDER_NAME


class ServerScopedAuth(requests.auth.AuthBase):
    """Adds the Authorization header registered for the request's server; other requests are left as they are."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        found = credentials_for(str(request.url or ""))
        header = found.authorization() if found is not None else None
        if header:
            request.headers["Authorization"] = header
        return request


class ServerScopedAuthProvider(RequestAuthProvider):
    """The MLflow request auth provider of this package (selected by MLFLOW_TRACKING_AUTH=airflow_mlops)."""

    def get_name(self) -> str:
        return PROVIDER_NAME

    def get_auth(self) -> ServerScopedAuth:
        return ServerScopedAuth()


if not any(isinstance(p, ServerScopedAuthProvider) for p in _request_auth_provider_registry):
    _request_auth_provider_registry.register(ServerScopedAuthProvider)  # type: ignore[no-untyped-call]
