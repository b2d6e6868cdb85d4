"""MlflowHook: tracking URI and credentials from an Airflow connection, and its connection test on a real server."""

from __future__ import annotations

import json
import os
import uuid

import pytest

from airflow_mlops.hooks import MlflowHook
from tests.fixtures.mlflow_server import free_port

CREDENTIAL_VARS = (
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_INSECURE_TLS",
)


@pytest.fixture()
def conn(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Factory: define a connection in the environment (as a secrets backend would) and return its id."""
    for var in CREDENTIAL_VARS:
        monkeypatch.delenv(var, raising=False)  # restored after the test, whatever the hook exports

    def define(**fields: object) -> str:
        conn_id = f"mlflow_{uuid.uuid4().hex[:8]}"
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "mlops_mlflow", **fields}))
        return conn_id

    return define


def test_init_only_stores_the_connection_id() -> None:
    hook = MlflowHook("no_such_connection")  # nothing is looked up yet
    assert hook.mlflow_conn_id == "no_such_connection"
    assert MlflowHook().mlflow_conn_id == "mlflow_default"


@pytest.mark.parametrize(
    ("fields", "uri"),
    [
        ({"host": "mlflow", "port": 5000}, "http://mlflow:5000"),
        ({"host": "mlflow.example.com", "schema": "https"}, "https://mlflow.example.com"),
        ({"host": "http://mlflow", "port": 5000}, "http://mlflow:5000"),
        ({"host": "https://mlflow.example.com:8443/"}, "https://mlflow.example.com:8443"),
        (
            {"host": "ignored", "extra": {"tracking_uri": "https://m.example.com/prefix/"}},
            "https://m.example.com/prefix",
        ),
    ],
)
def test_tracking_uri_from_connection(conn, fields: dict[str, object], uri: str) -> None:  # type: ignore[no-untyped-def]
    assert MlflowHook(conn(**fields)).get_tracking_uri() == uri


def test_bad_connections_are_named(conn) -> None:  # type: ignore[no-untyped-def]
    no_host = conn()
    with pytest.raises(ValueError, match=f"connection '{no_host}': no host and no tracking_uri extra"):
        MlflowHook(no_host).get_tracking_uri()
    ftp = conn(host="mlflow", schema="ftp")
    with pytest.raises(ValueError, match="schema must be http or https, got 'ftp'"):
        MlflowHook(ftp).get_tracking_uri()
    assert MlflowHook(ftp).test_connection() == (False, f"connection '{ftp}': schema must be http or https, got 'ftp'")


def test_credentials_go_to_mlflow_variables(conn, mlflow_server: str) -> None:  # type: ignore[no-untyped-def]
    conn_id = conn(
        host="127.0.0.1",
        port=int(mlflow_server.rsplit(":", 1)[1]),
        login="trainer",
        password="s3cret-value",
        extra={"token": "tok-123456", "insecure_tls": True, "ui_url": "https://mlflow.example.com"},
    )
    hook = MlflowHook(conn_id)
    client = hook.get_client()
    assert client is hook.get_client()  # created once
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "trainer"
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "s3cret-value"
    assert os.environ["MLFLOW_TRACKING_TOKEN"] == "tok-123456"
    assert os.environ["MLFLOW_TRACKING_INSECURE_TLS"] == "true"
    assert client.search_experiments(max_results=1) is not None  # the server ignores credentials it does not need
    tracking = hook.get_tracking()
    assert tracking.tracking_uri == mlflow_server and tracking.ui_url == "https://mlflow.example.com"
    assert tracking.version_url("m", "3") == "https://mlflow.example.com/#/models/m/versions/3"


def test_connection_test_against_a_real_server(conn, mlflow_server: str) -> None:  # type: ignore[no-untyped-def]
    port = int(mlflow_server.rsplit(":", 1)[1])
    ok, message = MlflowHook(conn(host="127.0.0.1", port=port)).test_connection()
    assert ok, message
    assert message == f"MLflow at {mlflow_server} is up and the API answers"


def test_connection_test_reports_an_unreachable_server(conn) -> None:  # type: ignore[no-untyped-def]
    port = free_port()  # nothing listens there
    ok, message = MlflowHook(conn(host="127.0.0.1", port=port)).test_connection()
    assert not ok
    assert message.startswith(f"cannot reach MLflow at http://127.0.0.1:{port}:")
