"""Tests of the run summaries the REST client's callers print."""

from __future__ import annotations

import http.server
import json
import threading
import time
from typing import Any, ClassVar

import pytest

from airflow_mlops.stack.airflow_api import AirflowApi, ApiUnreachable, run_days, summarize_runs


def test_run_summaries() -> None:
    runs = [
        {"state": "success", "logical_date": "2013-01-01T00:00:00Z"},
        {"state": "failed", "logical_date": "2013-01-02T00:00:00Z"},
        {"state": "success", "logical_date": "2013-01-03T00:00:00Z"},
    ]
    assert summarize_runs(runs) == {"failed": 1, "success": 2}
    assert run_days(runs) == {"2013-01-01": "success", "2013-01-02": "failed", "2013-01-03": "success"}


class _SlowFirstAnswer(http.server.BaseHTTPRequestHandler):
    """Answers every request with JSON, but lets the first request of each method wait past the client's time-out."""

    seen: ClassVar[dict[str, int]] = {}

    def _answer(self) -> None:
        count = self.seen[self.command] = self.seen.get(self.command, 0) + 1
        if count == 1:
            time.sleep(1.5)
        body = json.dumps({"method": self.command, "count": count}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = _answer
    do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


def test_a_read_is_asked_again_after_a_time_out_and_a_write_is_not() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowFirstAnswer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        api = AirflowApi(f"http://127.0.0.1:{server.server_port}", "admin", "pw", timeout=0.5)
        api._token = "token"  # signed in already: the test is about the route, not the sign-in
        assert api.request("GET", "/api/v2/dags") == {"method": "GET", "count": 2}
        with pytest.raises(ApiUnreachable, match=r"POST .*/api/v2/dags/x/dagRuns: timed out"):
            api.request("POST", "/api/v2/dags/x/dagRuns", {"conf": {}})
        time.sleep(1.5)
        assert _SlowFirstAnswer.seen["POST"] == 1  # a trigger is never sent twice
    finally:
        server.shutdown()
