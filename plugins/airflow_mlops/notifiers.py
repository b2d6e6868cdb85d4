"""The monitor's alert, as an Airflow notifier: always logged, mailed and POSTed to a webhook when configured."""

from __future__ import annotations

import json
from collections.abc import Sequence
from html import escape
from typing import Any

from airflow.sdk import BaseHook, BaseNotifier, Context


class MonitorAlertNotifier(BaseNotifier):
    """Sends one monitor alert.

    :param pipeline: pipeline name.
    :param alert: the alert: at least `outcome`, `reasons` (list of text) and `report_url`. Never templated: it
        holds data (lake paths, exception texts), which is sent as it is and never rendered.
    :param email: addresses mailed through Airflow's SMTP connection (`smtp_default`).
    :param webhook_conn_id: Airflow HTTP connection; the alert is POSTed to its URL as JSON.
    """

    # Nothing here is a template: a `{{` in a reason would fail the task, and data would reach Jinja.
    template_fields: Sequence[str] = ()

    def __init__(
        self,
        *,
        pipeline: str,
        alert: dict[str, Any],
        email: Sequence[str] = (),
        webhook_conn_id: str | None = None,
    ) -> None:
        super().__init__()
        self.pipeline = pipeline
        self.alert = alert
        self.email = list(email)
        self.webhook_conn_id = webhook_conn_id
        self.delivered: list[str] = []

    def subject(self) -> str:
        return f"[airflow-mlops] {self.pipeline}: {self.alert.get('outcome')} on {self.alert.get('date')}"

    def text(self) -> str:
        lines = [self.subject(), *(f"- {r}" for r in self.alert.get("reasons", []))]
        if self.alert.get("retrain"):
            lines.append("A retrain was triggered.")
        lines.append(f"Report: {self.alert.get('report_url')}")
        return "\n".join(lines)

    def notify(self, context: Context) -> None:
        # Delivery problems are logged, not raised: an unreachable mail server must not stop the retrain.
        self.log.warning("%s", self.text())
        self.delivered = ["log"]
        if self.email:
            try:
                self.send_email(context)
                self.delivered.append("email")
            except Exception:
                self.log.exception("Could not mail the alert to %s", ", ".join(self.email))
        if self.webhook_conn_id:
            try:
                self.post_webhook()
                self.delivered.append("webhook")
            except Exception:
                self.log.exception("Could not POST the alert to connection %r", self.webhook_conn_id)

    def send_email(self, context: Context) -> None:
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        html = "<br>".join(escape(line) for line in self.text().splitlines())
        # notify(), not __call__: __call__ would render the subject and the body as templates.
        SmtpNotifier(to=self.email, subject=self.subject(), html_content=html).notify(context)

    def post_webhook(self) -> None:
        import httpx

        from airflow_mlops.hooks import ModelServerHook

        conn = BaseHook.get_connection(str(self.webhook_conn_id))
        base, headers = ModelServerHook.endpoint(conn, scheme="https")  # same URL and token conventions
        url = base + str(conn.extra_dejson.get("endpoint", ""))
        headers["Content-Type"] = "application/json"
        body = json.dumps({"pipeline": self.pipeline, "text": self.text(), **self.alert}, default=str)
        httpx.post(url, content=body, headers=headers, timeout=30).raise_for_status()
