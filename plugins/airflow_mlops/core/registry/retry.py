"""Retries of MLflow calls: transient failures are retried with backoff for a bounded time."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from mlflow.exceptions import MlflowException, RestException

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)
T = TypeVar("T")


class TrackingError(RuntimeError):
    """An MLflow operation failed for good; the message says which and on which server."""


# Retries -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """How long MLflow calls keep retrying connection failures.

    MLflow's own HTTP layer retries each request first (`http_*`: exported as MLFLOW_HTTP_REQUEST_MAX_RETRIES,
    MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR and MLFLOW_HTTP_REQUEST_TIMEOUT unless the environment sets them);
    on top of that each project operation is retried with backoff until `max_seconds` have passed, so a
    server down for two minutes ends in success once it is back.
    """

    max_seconds: float = 300.0
    initial_backoff: float = 2.0
    max_backoff: float = 30.0
    http_max_retries: int | None = None
    http_backoff_factor: int | None = None
    http_timeout: int | None = None

    def apply_http_settings(self) -> None:
        """Export the http_* settings for MLflow's request layer (process-wide; set values win)."""
        for env, value in (
            ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", self.http_max_retries),
            ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", self.http_backoff_factor),
            ("MLFLOW_HTTP_REQUEST_TIMEOUT", self.http_timeout),
        ):
            if value is not None:
                os.environ.setdefault(env, str(value))


def is_transient(exc: BaseException) -> bool:
    """Whether an error means the server was unreachable or overloaded (worth retrying)."""
    import requests

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(
            current, requests.exceptions.ConnectionError | requests.exceptions.Timeout | ConnectionError | TimeoutError
        ):
            return True
        if isinstance(current, RestException):
            status = current.get_http_status_code()  # type: ignore[no-untyped-call]
            if status in (429, 502, 503, 504) or "database is locked" in str(current):
                return True
        elif isinstance(current, MlflowException):
            # MLflow wraps connection failures that outlived its own retries in a plain MlflowException.
            msg = str(current)
            if msg.startswith("API request to") and ("failed with exception" in msg or "failed with timeout" in msg):
                return True
        current = current.__cause__ or current.__context__
    return False


def retrying(operation: Callable[[], T], policy: RetryPolicy, what: str, server: str) -> T:
    """Run an idempotent operation, retrying transient failures with backoff until the policy's budget is spent."""
    started = time.monotonic()
    delay = policy.initial_backoff
    attempt = 1
    while True:
        try:
            return operation()
        except Exception as exc:
            elapsed = time.monotonic() - started
            if not is_transient(exc):
                raise
            if elapsed + delay > policy.max_seconds:
                raise TrackingError(
                    f"MLflow server {server} unreachable for {elapsed:.0f}s while trying to {what} "
                    f"({attempt} attempts): {exc}"
                ) from exc
            log.warning(
                "MLflow %s: %s failed (attempt %d, %.0fs): %s; retrying in %.0fs",
                server,
                what,
                attempt,
                elapsed,
                exc,
                delay,
            )
            time.sleep(delay)
            delay = min(delay * 2, policy.max_backoff)
            attempt += 1
