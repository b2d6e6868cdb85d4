"""MlflowHook: tracking URI and credentials from an Airflow connection, and its connection test on a real server."""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from airflow_mlops.hooks import MlflowHook
from tests.fixtures.mlflow_server import free_port

CREDENTIAL_VARS = (
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
)
MLFLOW_SETTINGS = (*CREDENTIAL_VARS, "MLFLOW_TRACKING_INSECURE_TLS", "MLFLOW_TRACKING_AUTH")


@pytest.fixture()
def conn(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Factory: define a connection in the environment (as a secrets backend would) and return its id."""
    for var in MLFLOW_SETTINGS:
        monkeypatch.delenv(var, raising=False)  # restored after the test, whatever the hook sets

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


class Proxy:
    """A recording HTTP proxy in front of a real MLflow server; with `require`, it answers 401 to any request
    without that Authorization header (as an MLflow behind an authenticating gateway would)."""

    def __init__(self, upstream: str, require: str | None = None) -> None:
        self.seen: list[tuple[str, str | None]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def relay(self) -> None:
                auth = self.headers.get("Authorization")
                proxy.seen.append((f"{self.command} {self.path}", auth))
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if require is not None and auth != require:
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "authorization")}
                resp = requests.request(self.command, upstream + self.path, data=body, headers=headers, timeout=60)
                self.send_response(resp.status_code)
                for key, value in resp.headers.items():
                    if key.lower() not in ("transfer-encoding", "content-encoding", "content-length", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(resp.content)))
                self.end_headers()
                self.wfile.write(resp.content)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = relay

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.uri = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def proxies(mlflow_server: str):  # type: ignore[no-untyped-def]
    made: list[Proxy] = []

    def make(require: str | None = None) -> Proxy:
        made.append(Proxy(mlflow_server, require))
        return made[-1]

    yield make
    for proxy in made:
        proxy.close()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_credentials_reach_their_server_only_and_never_the_environment(conn, proxies, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import mlflow

    guarded = proxies(require=basic("trainer", "s3cret-value"))
    other = proxies()  # another MLflow connection of the same worker, without credentials
    hook = MlflowHook(conn(host="127.0.0.1", port=guarded.port, login="trainer", password="s3cret-value",
                           extra={"ui_url": "https://mlflow.example.com"}))  # fmt: skip
    tracking = hook.get_tracking()
    assert tracking.tracking_uri == guarded.uri and tracking.ui_url == "https://mlflow.example.com"
    experiment = tracking.get_or_create_experiment(f"auth-{uuid.uuid4().hex[:8]}")
    run = tracking.client.create_run(experiment)
    # Artifacts go through the tracking server too (upload, then a download on MLflow's thread pool).
    for i in range(4):
        tracking.client.log_text(run.info.run_id, f"artifact {i}", f"notes/{i}.txt")
    local = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="notes", dst_path=str(tmp_path), tracking_uri=tracking.tracking_uri
    )
    assert sorted(p.name for p in Path(local).iterdir()) == [f"{i}.txt" for i in range(4)]
    assert hook.get_client().search_experiments(max_results=1) is not None

    plain = MlflowHook(conn(host="127.0.0.1", port=other.port)).get_tracking()
    plain.get_or_create_experiment(f"plain-{uuid.uuid4().hex[:8]}")

    assert guarded.seen and all(auth == basic("trainer", "s3cret-value") for _, auth in guarded.seen), guarded.seen
    assert any("mlflow-artifacts" in request for request, _ in guarded.seen)
    assert other.seen and all(auth is None for _, auth in other.seen), other.seen  # never another server's
    for var in CREDENTIAL_VARS:
        assert var not in os.environ
    leaked = [k for k, v in os.environ.items() if "s3cret-value" in v and not k.startswith("AIRFLOW_CONN_")]
    assert leaked == []  # only the connection itself (defined in the environment by this test) holds it


def test_a_token_is_sent_as_bearer(conn, proxies) -> None:  # type: ignore[no-untyped-def]
    guarded = proxies(require="Bearer tok-123456")
    hook = MlflowHook(conn(host="127.0.0.1", port=guarded.port, extra={"token": "tok-123456"}))
    assert hook.get_client().search_experiments(max_results=1) is not None
    assert hook.test_connection() == (True, f"MLflow at {guarded.uri} is up and the API answers")
    assert "MLFLOW_TRACKING_TOKEN" not in os.environ


@pytest.fixture()
def tls_server(tmp_path):  # type: ignore[no-untyped-def]
    """An HTTPS server with a self-signed certificate that answers every request with {} (200)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip

    class Handler(BaseHTTPRequestHandler):
        def answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        do_GET = do_POST = answer

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("value", "verified"), [("false", True), ("False", True), (False, True), ("0", True),
                                                 ("true", False), (True, False)])  # fmt: skip
def test_insecure_tls_is_read_strictly(conn, tls_server, value, verified: bool) -> None:  # type: ignore[no-untyped-def]
    from mlflow.utils.credentials import get_default_host_creds

    hook = MlflowHook(conn(host="127.0.0.1", port=tls_server, schema="https", extra={"insecure_tls": value}))
    ok, message = hook.test_connection()
    assert ok is not verified, message  # the self-signed certificate fails only a verifying client
    if verified:
        assert "certificate verify failed" in message
    hook.configure()
    assert get_default_host_creds(hook.get_tracking_uri()).verify is verified


def test_insecure_tls_that_is_not_a_boolean_is_an_error(conn) -> None:  # type: ignore[no-untyped-def]
    hook = MlflowHook(conn(host="mlflow", extra={"insecure_tls": "maybe"}))
    with pytest.raises(ValueError, match="insecure_tls: expected true or false, got 'maybe'"):
        hook.get_tracking()
    ok, message = hook.test_connection()
    assert not ok and "expected true or false" in message


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
