"""The monitor's alert notifier: always logged, POSTed as JSON to a real local webhook."""

from __future__ import annotations

import email
import json
import socketserver
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


class SmtpSink(socketserver.StreamRequestHandler):
    """Just enough SMTP to take one message (no TLS, no auth); messages land in `messages`."""

    messages: list[bytes] = []

    def reply(self, line: str) -> None:
        self.wfile.write(f"{line}\r\n".encode())

    def handle(self) -> None:
        self.reply("220 sink")
        while line := self.rfile.readline():
            command = line.strip().upper()
            if command.startswith((b"EHLO", b"HELO")):
                self.reply("250 sink")
            elif command == b"DATA":
                self.reply("354 go on")
                data = b""
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    data += chunk
                self.messages.append(data)
                self.reply("250 queued")
            elif command == b"QUIT":
                self.reply("221 bye")
                return
            else:  # MAIL, RCPT, RSET, NOOP
                self.reply("250 ok")


def test_alert_text_from_data_is_sent_verbatim_never_rendered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Called as the monitor calls it (BaseNotifier.__call__ with a task context): reasons holding Jinja syntax
    reach the webhook and the mail as they were, and a `{{` does not fail the task."""
    reasons = [
        "drift: {{ 7*7 }} in s3://lake/reports/{{ ds }}/x.html",
        "error: {% for i in range(3) %}loop{% endfor %}",
        "unbalanced {{ oops <b>",  # a template syntax error if rendered; HTML-escaped in the mail
    ]
    received: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    webhook = HTTPServer(("127.0.0.1", 0), Hook)
    smtp = socketserver.ThreadingTCPServer(("127.0.0.1", 0), SmtpSink)
    SmtpSink.messages = []
    for server in (webhook, smtp):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    conns = {
        "ALERTS": {"conn_type": "http", "host": "127.0.0.1", "port": webhook.server_port, "schema": "http"},
        "SMTP_DEFAULT": {"conn_type": "smtp", "host": "127.0.0.1", "port": smtp.server_address[1],
                         "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "mlops@example.com",
                                   "retry_limit": 0}},
    }  # fmt: skip
    for name, conn in conns.items():
        monkeypatch.setenv(f"AIRFLOW_CONN_{name}", json.dumps(conn))
    notifier = MonitorAlertNotifier(
        pipeline="p", alert={**ALERT, "reasons": reasons}, email=["ops@example.com"], webhook_conn_id="alerts"
    )
    try:
        notifier({"ds": "2013-03-01"})  # type: ignore[arg-type]
    finally:
        webhook.shutdown()
        smtp.shutdown()
    assert notifier.delivered == ["log", "email", "webhook"]
    (body,) = received
    assert body["reasons"] == reasons
    for reason in reasons:
        assert f"- {reason}" in body["text"]
    (mail,) = SmtpSink.messages
    text = email.message_from_bytes(mail).get_payload(0).get_payload(decode=True).decode()
    assert "{{ 7*7 }}" in text and "{% for i in range(3) %}loop{% endfor %}" in text
    assert "unbalanced {{ oops &lt;b&gt;" in text and "49" not in text
