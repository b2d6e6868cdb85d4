"""MlflowHook: the MLflow tracking server of an Airflow connection (URI, credentials, connection test)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from airflow_mlops import settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from airflow_mlops.core.tracking import RetryPolicy, Tracking


class MlflowHook(BaseHook):  # type: ignore[misc]
    """An MLflow tracking server from an Airflow connection.

    Connection (type http): host, port and schema (http or https) give the URI; login and password become
    MLFLOW_TRACKING_USERNAME/PASSWORD. Extras: `tracking_uri` (overrides host/port/schema), `registry_uri`,
    `ui_url` (base URL of the UI for links, when browsers reach it at another address), `token`
    (MLFLOW_TRACKING_TOKEN), `insecure_tls` (bool).
    """

    conn_name_attr = "mlflow_conn_id"
    default_conn_name = settings.DEFAULT_MLFLOW_CONN_ID
    conn_type = "http"
    hook_name = "MLflow"

    def __init__(self, mlflow_conn_id: str | None = None) -> None:
        """`mlflow_conn_id`: the Airflow connection (default: the deployment's MLflow connection)."""
        super().__init__()
        self.mlflow_conn_id = mlflow_conn_id or settings.mlflow_conn_id()
        self._conn: Any = None
        self._client: MlflowClient | None = None

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": [],
            "relabeling": {"schema": "Scheme (http or https)", "login": "Username", "password": "Password"},
            "placeholders": {
                "host": "mlflow.example.com",
                "port": "5000",
                "schema": "http",
                "extra": '{"tracking_uri": "https://mlflow.example.com/prefix", "ui_url": "https://..."}',
            },
        }

    @property
    def connection(self) -> Any:
        if self._conn is None:
            self._conn = self.get_connection(self.mlflow_conn_id)
        return self._conn

    @property
    def extras(self) -> dict[str, Any]:
        return dict(self.connection.extra_dejson or {})

    def get_tracking_uri(self) -> str:
        """http(s)://host:port of the connection, or its `tracking_uri` extra."""
        override = self.extras.get("tracking_uri")
        if override:
            return str(override).rstrip("/")
        conn = self.connection
        if not conn.host:
            raise ValueError(f"connection {self.mlflow_conn_id!r}: no host and no tracking_uri extra")
        host = str(conn.host).rstrip("/")
        if "://" in host:  # a URL typed into the host field
            return f"{host}:{conn.port}" if conn.port and host.count(":") == 1 else host
        scheme = (conn.schema or "http").lower()
        if scheme not in ("http", "https"):
            raise ValueError(f"connection {self.mlflow_conn_id!r}: schema must be http or https, got {conn.schema!r}")
        return f"{scheme}://{host}" + (f":{conn.port}" if conn.port else "")

    def get_registry_uri(self) -> str:
        return str(self.extras.get("registry_uri") or self.get_tracking_uri()).rstrip("/")

    def export_credentials(self) -> None:
        """Set MLflow's credential variables for this process (MLflow reads them on every request)."""
        conn, extras = self.connection, self.extras
        if conn.login:
            os.environ["MLFLOW_TRACKING_USERNAME"] = str(conn.login)
            os.environ["MLFLOW_TRACKING_PASSWORD"] = str(conn.password or "")
        if extras.get("token"):
            os.environ["MLFLOW_TRACKING_TOKEN"] = str(extras["token"])
        if "insecure_tls" in extras:
            os.environ["MLFLOW_TRACKING_INSECURE_TLS"] = str(bool(extras["insecure_tls"])).lower()

    def get_client(self) -> MlflowClient:
        """An MlflowClient for the connection's server, created on first use."""
        if self._client is None:
            from mlflow import MlflowClient

            self.export_credentials()
            self._client = MlflowClient(tracking_uri=self.get_tracking_uri(), registry_uri=self.get_registry_uri())
        return self._client

    def get_conn(self) -> MlflowClient:
        return self.get_client()

    def get_tracking(self, retry: RetryPolicy | None = None) -> Tracking:
        """The project's MLflow operations (retrying, idempotent) against this server."""
        from airflow_mlops.core.tracking import Tracking

        self.export_credentials()
        return Tracking(self.get_tracking_uri(), self.get_registry_uri(), retry=retry, ui_url=self.extras.get("ui_url"))

    def test_connection(self) -> tuple[bool, str]:
        """GET /health, then an authenticated API call (search one experiment)."""
        import requests

        try:
            uri = self.get_tracking_uri()
        except Exception as exc:
            return False, str(exc)
        conn, extras = self.connection, self.extras
        auth = (str(conn.login), str(conn.password or "")) if conn.login else None
        headers = {"Authorization": f"Bearer {extras['token']}"} if extras.get("token") else {}
        verify = not bool(extras.get("insecure_tls", False))
        try:
            health = requests.get(f"{uri}/health", timeout=10, auth=auth, headers=headers, verify=verify)
            if health.status_code != 200:
                return False, f"{uri}/health answered HTTP {health.status_code}: {health.text[:200]}"
            api = requests.post(
                f"{uri}/api/2.0/mlflow/experiments/search",
                json={"max_results": 1},
                timeout=10,
                auth=auth,
                headers=headers,
                verify=verify,
            )
        except requests.RequestException as exc:
            return False, f"cannot reach MLflow at {uri}: {exc}"
        if api.status_code in (401, 403):
            return False, f"MLflow at {uri} refused the credentials (HTTP {api.status_code})"
        if api.status_code != 200:
            return False, f"MLflow API at {uri} answered HTTP {api.status_code}: {api.text[:200]}"
        return True, f"MLflow at {uri} is up and the API answers"
