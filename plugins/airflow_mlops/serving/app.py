"""The model server's ASGI app: routes, tokens, body limits, and its background poller and log flusher."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import json
import logging
import math
import re
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from datetime import UTC, datetime
from typing import Any

# The server is its own process, never imported by Airflow's DAG parsing: heavy imports are fine here.
import numpy as np
import pandas as pd

from airflow_mlops.config import PipelineConfig, load_pipelines
from airflow_mlops.core.lake.storage import open_lake
from airflow_mlops.core.train import tasks, training
from airflow_mlops.serving import fastpath, invocations, openapi
from airflow_mlops.serving.config import ServerSettings
from airflow_mlops.serving.inference_log import InferenceLog
from airflow_mlops.serving.metrics import Metrics
from airflow_mlops.serving.models import ModelStore, ServedModel, now
from airflow_mlops.serving.rows import RequestError, Rows, check_rows, parse_rows

log = logging.getLogger("airflow_mlops.serving")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class ModelServer:
    """A plain ASGI app (no framework: fewer layers per request) with its background poller and log flusher."""

    def __init__(self, conf: ServerSettings, configs: Sequence[PipelineConfig] | None = None) -> None:
        self.conf = conf
        configs = list(configs) if configs is not None else load_pipelines(conf.pipelines_dir)
        self.store = ModelStore(configs, conf.tracking_uri)
        self.inference_log = InferenceLog(open_lake(conf.lake_root), conf.flush_rows, conf.max_buffer_rows)
        self.metrics = Metrics()
        self._token = conf.token.encode()
        self._admin_token = conf.admin_token.encode() if conf.admin_token else None
        self._openapi: tuple[Any, bytes] | None = None  # (the models it describes, the document)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._limiter: contextlib.AbstractContextManager[Any] | None = None
        self._fast_failed: set[tuple[str, str]] = set()  # models whose fast-path failure was logged
        self.started_at = now()

    # Background work ---------------------------------------------------------------------------------
    def start_background(self) -> None:
        self.store.check_all()  # first load before serving (a failure leaves the pipeline answering 503)
        for target, name in ((self._poll, "champion-poller"), (self._flush_loop, "inference-log-flusher")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop_background(self) -> None:
        self._stop.set()
        self.inference_log.wanted.set()
        for thread in self._threads:
            thread.join(timeout=30)
        self.inference_log.flush()

    def _poll(self) -> None:
        while not self._stop.wait(self.conf.poll_seconds):
            self.store.check_all()

    def _flush_loop(self) -> None:
        while not self._stop.is_set():
            self.inference_log.wanted.wait(self.conf.flush_seconds)
            if self._stop.is_set():
                return
            try:
                self.inference_log.flush()
            except Exception:  # keep the flusher alive whatever happens
                log.exception("inference log flush failed")

    # ASGI ----------------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        path: str = scope["path"]
        method: str = scope["method"]
        route, pipeline = path, ""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = headers.get("x-request-id", "")
        if not _REQUEST_ID.fullmatch(request_id):
            request_id = uuid.uuid4().hex
        try:
            if path.startswith("/predict/"):
                route, pipeline = "/predict", path[len("/predict/") :]
                self._require(method, "POST")
                self._authorize(headers, self._token)
                body = await self._read_body(receive, headers)
                status, payload = 200, self._predict(pipeline, body, request_id)
            elif _is_invocation(path):
                route = "/invocations"
                self._require(method, "POST")
                self._authorize(headers, self._token)
                pipeline = invocations.target(path, headers, list(self.store.states))
                invocations.check_content_type(headers)
                body = await self._read_body(receive, headers)
                status, payload = 200, self._predict(pipeline, body, request_id, invocations.parse_rows)
            elif path in ("/health", "/ping"):  # /ping: what MLflow's scoring clients probe
                self._require(method, "GET")
                status, payload = 200, self._health()
            elif path == "/version":
                self._require(method, "GET")
                self._authorize(headers, self._token)
                status, payload = 200, {"pipelines": self.store.versions()}
            elif path == "/metrics":
                self._require(method, "GET")
                text = self.metrics.render(self.store, self.inference_log, self.conf.flush_seconds)
                await _respond(send, 200, text.encode(), b"text/plain; version=0.0.4", request_id)
                self.metrics.observe(route, pipeline, 200, time.perf_counter() - started)
                return
            elif path == "/admin/reload":
                self._require(method, "POST")
                if self._admin_token is None:
                    raise RequestError(403, "/admin/reload is disabled: the server was started without an admin token")
                self._authorize(headers, self._admin_token, "admin token")
                await asyncio.to_thread(self.store.check_all, True)
                status, payload = 200, {"pipelines": self.store.versions()}
            elif path == "/openapi.json":
                self._require(method, "GET")
                await _respond(send, 200, self._openapi_document(), b"application/json", request_id)
                self.metrics.observe(route, pipeline, 200, time.perf_counter() - started)
                return
            else:
                route = "other"
                raise RequestError(404, f"no route {path[:200]!r} (routes: /predict/<pipeline>, /invocations, "
                                        "/invocations/<pipeline>, /endpoints/<pipeline>/invocations, /health, "
                                        "/ping, /version, /metrics, /admin/reload, /openapi.json)")  # fmt: skip
        except RequestError as exc:
            status, payload = exc.status, {"error": exc.message, "request_id": request_id}
        except Exception:  # a bug must cost one request, not the server; its details go to the log only
            log.exception("request %s on %s failed", request_id, route)
            status, payload = 500, {"error": "internal error (details in the server log)", "request_id": request_id}
        if route in ("/predict", "/invocations") and pipeline not in self.store.states:
            pipeline = "unknown"  # label values stay bounded whatever clients send
        await _respond(send, status, json.dumps(payload).encode(), b"application/json", request_id)
        self.metrics.observe(route, pipeline, status, time.perf_counter() - started)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    # Predictions run on this (the event loop's) thread: cap OpenMP/BLAS once, not per request.
                    self._limiter = training.thread_limit(1)
                    self._limiter.__enter__()
                    await asyncio.to_thread(self.start_background)
                    # The imports and the loaded models are long-lived: out of the collector's sight, full
                    # collections (triggered by the buffered inference log) stop scanning them mid-request.
                    gc.collect()
                    gc.freeze()
                    # The poller and the log flusher hand the GIL back to the request loop within 1 ms, not 5.
                    sys.setswitchinterval(0.001)
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.to_thread(self.stop_background)
                if self._limiter is not None:
                    self._limiter.__exit__(None, None, None)
                await send({"type": "lifespan.shutdown.complete"})
                return

    @staticmethod
    def _require(method: str, wanted: str) -> None:
        if method != wanted:
            raise RequestError(405, f"method {method} not allowed here: use {wanted}")

    @staticmethod
    def _authorize(headers: Mapping[str, str], wanted: bytes, what: str = "API token") -> None:
        auth = headers.get("authorization")
        if not auth:
            raise RequestError(401, f"missing {what}: send the header 'Authorization: Bearer <token>'")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), wanted):
            raise RequestError(403, f"invalid {what}")

    async def _read_body(self, receive: Receive, headers: Mapping[str, str]) -> bytes:
        limit = self.conf.max_body_bytes
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise RequestError(413, f"request body of {declared} bytes is over the limit of {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise RequestError(413, f"request body is over the limit of {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _predict(
        self, pipeline: str, body: bytes, request_id: str, parse: Callable[..., Rows] = parse_rows
    ) -> dict[str, Any]:
        """The answer to the rows `parse` reads from `body` (/predict's or MLflow's formats)."""
        state = self.store.states.get(pipeline)
        if state is None:
            raise RequestError(
                404, f"unknown pipeline {pipeline[:100]!r} (served: {', '.join(sorted(self.store.states))})"
            )
        served = state.served  # taken once: a swap during this request does not change its model
        if served is None:
            raise RequestError(503, f"pipeline {pipeline!r} has no model loaded: {state.error or 'not checked yet'}")
        at = datetime.now(UTC)
        parsed = parse(body, served, self.conf.max_rows, state.cfg.label_join[0])
        rows = parsed.rows
        if served.base is not None and parsed.form is served.base:  # checked exactly (integers in range)
            try:  # rows of base columns: the model's own step adds the derived features
                served.base.complete(rows)
            except (ValueError, TypeError) as exc:
                raise RequestError(422, f"cannot compute the derived features: {str(exc)[:300]}") from exc
        scores = self._score(served, rows, None if parsed.exact else parsed.field)
        if served.task == "binary":
            predictions = [None if math.isnan(s) else s for s in scores.tolist()]
        else:
            predictions = tasks.served_answers(scores, served.task, served.classes)
        self.inference_log.add(pipeline, served, request_id, at, rows, scores, served.classes, parsed.keys)
        self.metrics.rows[pipeline] = self.metrics.rows.get(pipeline, 0) + len(rows)
        return {
            "pipeline": pipeline,
            "model_name": served.name,
            "model_version": served.version,
            "predictions": predictions,
            "request_id": request_id,
        }

    def _score(self, served: ServedModel, rows: list[dict[str, Any]], unchecked: str | None) -> np.ndarray:
        """What `tasks.model_scores` gives: through the fast path when the model has one, else the pipeline.

        Rows whose integers are not range-checked yet (`unchecked`: the request field holding them, which
        errors name) are checked before the pipeline sees them (the fast path refuses those integers)."""
        if served.fast is not None:
            try:
                return served.fast.scores(rows)
            except fastpath.InexactInput:
                pass  # numbers only pandas may convert its own way: the pipeline decides
            except Exception:  # a fast-path bug must not cost the request: the pipeline still scores it
                if (served.name, served.version) not in self._fast_failed:
                    self._fast_failed.add((served.name, served.version))
                    log.exception("fast path of %s version %s failed; scoring through the pipeline", served.name,
                                  served.version)  # fmt: skip
        if unchecked is not None:
            check_rows(rows, served, unchecked)
        frame = pd.DataFrame.from_records(rows, columns=list(served.columns))
        try:
            return tasks.model_scores(served.model, frame, served.task)
        except (ValueError, TypeError, OverflowError) as exc:  # values the model cannot take despite the types
            raise RequestError(422, f"the model cannot score these rows: {str(exc)[:300]}") from exc

    def _openapi_document(self) -> bytes:
        """/openapi.json: its row schemas are the columns of the models served now, rebuilt after a swap."""
        served = {pipeline: state.served for pipeline, state in self.store.states.items()}
        key = tuple((pipeline, model and (model.name, model.version)) for pipeline, model in served.items())
        if self._openapi is None or self._openapi[0] != key:
            doc = openapi.document(served, self.conf.max_rows, self.conf.max_body_bytes)
            self._openapi = (key, json.dumps(doc).encode())
        return self._openapi[1]

    def _health(self) -> dict[str, Any]:
        loaded = {p: s.served.version if s.served else None for p, s in self.store.states.items()}
        errors = {p: s.error for p, s in self.store.states.items() if s.error}  # e.g. a champion of the wrong task
        return {"status": "ok", "started_at": self.started_at, "models": loaded, "errors": errors}


def _is_invocation(path: str) -> bool:
    return (
        path == "/invocations"
        or path.startswith("/invocations/")
        or (
            path.startswith("/endpoints/")
            and path.endswith("/invocations")
            and len(path) > len("/endpoints//invocations")
        )
    )


async def _respond(send: Send, status: int, body: bytes, content_type: bytes, request_id: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                (b"x-request-id", request_id.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
