"""The monitor's alert notifier: always logged, POSTed as JSON to a real local webhook."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from airflow_mlops.notifiers import MonitorAlertNotifier

ALERT = {"outcome": "drift", "reasons": ["drift: temp moved"], "retrain": True, "date": "2013-03-01",
         "report_url": "/mlops/lake/reports/p/monitor/date=2013-03-01/report.html"}  # fmt: skip


def test_alert_is_posted_to_the_webhook_with_its_token(monkeypatch: pytest.MonkeyPatch) -> None:
    received: list[tuple[str, dict[str, str], dict[str, Any]]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            received.append((self.path, dict(self.headers), body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    conn = {"conn_type": "http", "host": "127.0.0.1", "port": server.server_port, "schema": "http",
            "password": "s3cret", "extra": {"endpoint": "/alerts"}}  # fmt: skip
    monkeypatch.setenv("AIRFLOW_CONN_ALERTS", json.dumps(conn))
    try:
        notifier = MonitorAlertNotifier(pipeline="p", alert=ALERT, webhook_conn_id="alerts")
        notifier.notify({})  # type: ignore[arg-type]
    finally:
        server.shutdown()
    assert notifier.delivered == ["log", "webhook"]
    ((path, headers, body),) = received
    assert path == "/alerts" and headers["Authorization"] == "Bearer s3cret"
    assert body["pipeline"] == "p" and body["outcome"] == "drift" and "temp moved" in body["text"]


def test_an_unreachable_webhook_is_logged_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fixtures.mlflow_server import free_port

    monkeypatch.setenv("AIRFLOW_CONN_ALERTS", json.dumps({"conn_type": "http", "host": "127.0.0.1",
                                                          "port": free_port(), "schema": "http"}))  # fmt: skip
    notifier = MonitorAlertNotifier(pipeline="p", alert=ALERT, webhook_conn_id="alerts")
    notifier.notify({})  # type: ignore[arg-type]
    assert notifier.delivered == ["log"]
