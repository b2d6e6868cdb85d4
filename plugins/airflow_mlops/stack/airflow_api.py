"""A small client of the Airflow 3 REST API, signed in as a SimpleAuthManager user."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

from airflow_mlops.stack.keys import ADMIN_USER, ensure_secrets
from airflow_mlops.stack.settings import StackConfig, StackError

PAGE_SIZE = 100
"""Items per request to a collection endpoint: Airflow's default maximum_page_limit."""
TERMINAL_RUN_STATES = frozenset({"success", "failed"})


class ApiError(StackError):
    """The Airflow REST API answered with an error."""

    def __init__(self, method: str, path: str, status: int, detail: str) -> None:
        super().__init__(f"{method} {path} -> HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


class ApiUnreachable(StackError):
    """The API server did not answer (refused, reset or timed out)."""


class AirflowApi:
    """A client of the Airflow 3 REST API.

    :param base_url: the API server, e.g. http://127.0.0.1:8080.
    """

    def __init__(
        self, base_url: str, username: str, password: str, timeout: float = 30.0, read_attempts: int = 3
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.read_attempts = read_attempts
        self.username = username
        self.password = password
        self.timeout = timeout
        self._token: str | None = None

    def _send(self, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        req = urllib.request.Request(self.base_url + path, data=data, headers=headers, method=method)  # noqa: S310
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            with contextlib.suppress(ValueError, AttributeError):
                detail = json.dumps(json.loads(detail).get("detail", detail))
            raise ApiError(method, path, exc.code, detail[:2000]) from None
        except OSError as exc:
            raise ApiUnreachable(f"{method} {self.base_url}{path}: {exc}") from None
        return json.loads(raw) if raw else None

    def token(self) -> str:
        """A JWT from SimpleAuthManager's token route (POST /auth/token), fetched once."""
        if self._token is None:
            answer = self._send(
                "POST", "/auth/token", {"username": self.username, "password": self.password}, auth=False
            )
            self._token = str(answer["access_token"])
        return self._token

    def request(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        """Call an API route; query parameters given as keywords (lists repeat the parameter)."""
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None}, doseq=True)
        full = f"{path}?{query}" if query else path
        # A GET is asked again when the server did not answer in time (a loaded machine, a busy database);
        # other methods are not: their first attempt may have taken effect.
        attempts = self.read_attempts if method == "GET" else 1
        for attempt in range(1, attempts + 1):
            try:
                return self._send_signed_in(method, full, body)
            except ApiUnreachable:
                if attempt == attempts:
                    raise
                time.sleep(2 * attempt)
        raise AssertionError("unreachable")

    def _send_signed_in(self, method: str, path: str, body: Any) -> Any:
        try:
            return self._send(method, path, body)
        except ApiError as exc:
            if exc.status != 401:
                raise
            self._token = None  # expired: sign in again once
            return self._send(method, path, body)

    def list_all(self, path: str, key: str, **params: Any) -> list[dict[str, Any]]:
        """Every item of a collection endpoint, page after page (the API caps a page at 100 by default)."""
        items: list[dict[str, Any]] = []
        while True:
            page = self.request("GET", path, limit=PAGE_SIZE, offset=len(items), **params)
            items.extend(page[key])
            if not page[key] or len(items) >= int(page.get("total_entries", 0)):
                return items

    def dag(self, dag_id: str) -> dict[str, Any] | None:
        """The DAG as the API knows it, None if it isn't there (yet)."""
        try:
            return dict(self.request("GET", f"/api/v2/dags/{dag_id}"))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def import_errors(self) -> list[dict[str, Any]]:
        return self.list_all("/api/v2/importErrors", "import_errors")

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self.request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": paused}, update_mask="is_paused")

    def create_backfill(
        self, dag_id: str, start: date, end: date, max_active_runs: int, reprocess: str
    ) -> dict[str, Any]:
        body = {
            "dag_id": dag_id,
            "from_date": f"{start.isoformat()}T00:00:00Z",
            "to_date": f"{end.isoformat()}T00:00:00Z",
            "max_active_runs": max_active_runs,
            "reprocess_behavior": reprocess,
        }
        return dict(self.request("POST", "/api/v2/backfills", body))

    def backfills(self, dag_id: str) -> list[dict[str, Any]]:
        return self.list_all("/api/v2/backfills", "backfills", dag_id=dag_id)

    def backfill(self, backfill_id: int) -> dict[str, Any]:
        return dict(self.request("GET", f"/api/v2/backfills/{backfill_id}"))

    def dag_runs(self, dag_id: str, start: date, end: date) -> list[dict[str, Any]]:
        """Runs of a DAG whose logical dates fall on the days start..end."""
        return self.list_all(
            f"/api/v2/dags/{dag_id}/dagRuns",
            "dag_runs",
            logical_date_gte=f"{start.isoformat()}T00:00:00Z",
            logical_date_lte=f"{end.isoformat()}T23:59:59Z",
            order_by="logical_date",
        )

    def all_runs(self, dag_id: str) -> list[dict[str, Any]]:
        """Every run of a DAG, oldest first."""
        return self.list_all(f"/api/v2/dags/{dag_id}/dagRuns", "dag_runs", order_by="run_after")

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> str:
        """A manual run without a logical date; its run id."""
        run = self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})
        return str(run["dag_run_id"])


def api_for(cfg: StackConfig) -> AirflowApi:
    """A signed-in client of the stack's API server."""
    return AirflowApi(cfg.airflow_url, ADMIN_USER, ensure_secrets(cfg).admin_password)


def summarize_runs(runs: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Number of DAG runs by state."""
    return dict(sorted(Counter(str(r["state"]) for r in runs).items()))


def run_days(runs: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """State of the run of each logical day (YYYY-MM-DD)."""
    return {str(r["logical_date"])[:10]: str(r["state"]) for r in runs if r.get("logical_date")}
