"""Model server: the `champion` of each pipeline over HTTP/JSON, hot-swapped, with an inference log and metrics."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import hmac
import json
import logging
import math
import operator
import os
import re
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# The server is its own process, never imported by Airflow's DAG parsing: heavy imports are fine here.
import numpy as np
import pandas as pd

from airflow_mlops import settings
from airflow_mlops.config import PipelineConfig, load_pipelines
from airflow_mlops.core.lake.storage import Lake, open_lake
from airflow_mlops.core.registry.tracking import CHAMPION, RetryPolicy, Tracking, load_local_model
from airflow_mlops.core.train import training
from airflow_mlops.serving import fastpath

log = logging.getLogger("airflow_mlops.serving")

ENV_TOKEN = "MLOPS_MODEL_SERVER_TOKEN"  # noqa: S105 - the name of the variable, not a secret
ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"
INFERENCE_ZONE = "inference_log"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass(frozen=True)
class ServerSettings:
    """How the server runs.

    tracking_uri: MLflow server holding the registry. token: required on /predict, /version and /admin.
    poll_seconds: how often the champion aliases are checked. max_rows: largest batch a request may send.
    max_body_bytes: largest request body. flush_seconds / flush_rows: the inference log is written when
    either is reached (and on shutdown). lake_root: lake receiving inference_log/. pipelines_dir: configs.
    """

    tracking_uri: str
    token: str
    lake_root: str
    poll_seconds: float = 5.0
    max_rows: int = 1000
    max_body_bytes: int = 8 * 1024 * 1024
    flush_seconds: float = 30.0
    flush_rows: int = 5000
    pipelines_dir: Path | None = None


class RequestError(Exception):
    """A request the server refuses: HTTP status and a message naming the field or the problem."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# Models --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServedModel:
    """One loaded, validated model version: what a request predicts with from start to end."""

    pipeline: str
    name: str
    version: str
    run_id: str | None
    model: Any
    categorical: tuple[str, ...]
    numeric: tuple[str, ...]
    loaded_at: str
    fast: fastpath.FastPath | None = None  # None: every request goes through the sklearn pipeline
    scoring: str = "sklearn pipeline"  # how requests are scored, and why not the fast path

    @property
    def columns(self) -> tuple[str, ...]:
        return (*self.categorical, *self.numeric)


@dataclass
class PipelineState:
    """The served model of one pipeline (swapped as a single reference) and the last check's outcome."""

    cfg: PipelineConfig
    name: str
    served: ServedModel | None = None
    champion_version: str | None = None
    failed_version: str | None = None
    error: str | None = None
    checked_at: str | None = None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def model_columns(model: Any, cfg: PipelineConfig) -> tuple[list[str], list[str]]:
    """Categorical and numeric inputs: from the model's FeatureFrame step, else from the config."""
    steps = getattr(model, "steps", None)
    if steps:
        first = steps[0][1]
        if isinstance(first, training.FeatureFrame):
            return list(first.categorical), list(first.numeric)
    spec = training.feature_spec(cfg)
    return spec.categorical, spec.numeric


def validate_model(model: Any, categorical: Sequence[str], numeric: Sequence[str], example: Any) -> None:
    """Predict on the stored input example and on an all-missing row; raise ValueError unless both give
    one probability in [0, 1] per row."""
    frames = []
    if isinstance(example, pd.DataFrame) and len(example):
        frames.append(example)
    frames.append(pd.DataFrame([dict.fromkeys([*categorical, *numeric])]))
    for frame in frames:
        with training.thread_limit(1):
            scores = training.positive_scores(model, frame)
        if scores.shape != (len(frame),) or not np.all(np.isfinite(scores)) or scores.min() < 0 or scores.max() > 1:
            raise ValueError(f"validation prediction on {len(frame)} row(s) gave {scores.tolist()[:5]}")


class ModelStore:
    """The champions of all pipelines: checks the aliases, loads and validates new versions, swaps them in."""

    def __init__(self, configs: Sequence[PipelineConfig], tracking_uri: str) -> None:
        import mlflow

        self.tracking_uri = tracking_uri
        # models:/ downloads resolve through MLflow's global registry URI; this process talks to one server.
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        # Short retries: a registry outage must not hold the poller (the old models keep serving meanwhile).
        self.tracking = Tracking(tracking_uri, retry=RetryPolicy(max_seconds=10.0, initial_backoff=1.0))
        self.states = {cfg.name: PipelineState(cfg, cfg.train.model_name(cfg.name)) for cfg in configs}
        self._lock = threading.Lock()
        self.swaps = 0
        self.failures = 0

    def check_all(self, force: bool = False) -> None:
        """Check every pipeline's champion alias; `force` also retries a version that failed before."""
        with self._lock:  # the poller and /admin/reload never load the same version twice at once
            for state in self.states.values():
                try:
                    self._check(state, force)
                except Exception as exc:  # never let one pipeline (or an outage) stop the poller
                    state.error = f"checking alias {CHAMPION!r} of {state.name!r} failed: {exc}"
                    log.warning("%s", state.error)
                state.checked_at = _now()

    def _check(self, state: PipelineState, force: bool) -> None:
        version = self.tracking.alias_version(state.name, CHAMPION)
        state.champion_version = version
        if version is None:
            if state.served is not None:  # e.g. a first deployment rolled back: no version is champion now
                log.warning("pipeline %s: alias %r removed, no longer serving version %s", state.cfg.name,
                            CHAMPION, state.served.version)  # fmt: skip
                state.served = None
            state.error = f"registered model {state.name!r} has no {CHAMPION!r} alias"
            return
        if state.served is not None and state.served.version == version:
            state.error = None
            state.failed_version = None
            return
        if version == state.failed_version and not force:
            return  # already refused; /admin/reload retries it
        try:
            served = self._load(state, version)
        except Exception as exc:
            self.failures += 1
            state.failed_version = version
            state.error = f"version {version} of {state.name!r} was not swapped in: {type(exc).__name__}: {exc}"
            log.error("%s", state.error)
            return
        state.served = served  # the swap: one reference; requests in flight keep the model they took
        state.failed_version = None
        state.error = None
        self.swaps += 1
        log.info("pipeline %s now serves %s version %s", state.cfg.name, state.name, version)

    def _load(self, state: PipelineState, version: str) -> ServedModel:
        import mlflow
        from mlflow.models import Model

        uri = f"models:/{state.name}/{version}"
        mv = self.tracking.client.get_model_version(state.name, version)
        with tempfile.TemporaryDirectory(prefix="mlops-serve-") as tmp:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
            model = load_local_model(local, state.cfg.train.model.trusted_types, where=uri)
            try:
                example = Model.load(str(local)).load_input_example(str(local))
            except Exception as exc:  # a broken example is a broken model version
                raise ValueError(f"cannot read the input example of {uri}: {exc}") from exc
        categorical, numeric = model_columns(model, state.cfg)
        validate_model(model, categorical, numeric, example)
        # The fast path is compared with the sklearn path here; a model it cannot replay exactly is still
        # served, through the pipeline.
        fast, detail = fastpath.compile_pipeline(model, categorical, numeric, example)
        if fast is None:
            scoring = f"sklearn pipeline (no fast path: {detail})"
            log.warning("%s version %s: scored through the sklearn pipeline, no fast path: %s", state.name, version,
                        detail)  # fmt: skip
        else:
            scoring = f"fast path ({detail})"
            log.info("%s version %s: fast path (%s)", state.name, version, detail)
        return ServedModel(
            pipeline=state.cfg.name,
            name=state.name,
            version=version,
            run_id=mv.run_id,
            model=model,
            categorical=tuple(categorical),
            numeric=tuple(numeric),
            loaded_at=_now(),
            fast=fast,
            scoring=scoring,
        )

    def versions(self) -> dict[str, Any]:
        """Per pipeline: model name, version served, when it was loaded, the champion alias and any failure."""
        out: dict[str, Any] = {}
        for pipeline, state in self.states.items():
            served = state.served
            out[pipeline] = {
                "model_name": state.name,
                "version": served.version if served else None,
                "loaded_at": served.loaded_at if served else None,
                "run_id": served.run_id if served else None,
                "scoring": served.scoring if served else None,
                "champion_version": state.champion_version,
                "failed_version": state.failed_version,
                "error": state.error,
                "checked_at": state.checked_at,
            }
        return out


# Input ---------------------------------------------------------------------------------------------------


def parse_rows(body: bytes, served: ServedModel, max_rows: int) -> list[dict[str, Any]]:
    """The request's rows, each checked to hold exactly the model's columns with values of the right type;
    RequestError naming the row and field."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"request body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict) or "rows" not in payload:
        raise RequestError(422, 'request body must be a JSON object {"rows": [{feature: value, ...}, ...]}')
    extra_keys = sorted(set(payload) - {"rows"})
    if extra_keys:
        raise RequestError(422, f"unknown top-level field(s): {', '.join(extra_keys)} (only 'rows' is accepted)")
    rows = payload["rows"]
    if not isinstance(rows, list):
        raise RequestError(422, f"'rows' must be a list of objects, got {type(rows).__name__}")
    if not rows:
        raise RequestError(422, "'rows' is empty: send at least one row")
    if len(rows) > max_rows:
        raise RequestError(413, f"'rows' has {len(rows)} rows; at most {max_rows} per request")
    wanted = set(served.columns)
    if len(rows) > 4 and _plainly_valid(rows, wanted, served):  # per column: faster from a few rows on
        return rows
    # Row by row, field by field: the first problem, named.
    categorical = served.categorical
    numeric = served.numeric
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise RequestError(422, f"rows[{i}] must be an object of feature values, got {type(row).__name__}")
        if row.keys() != wanted:
            missing = [c for c in served.columns if c not in row]
            if missing:
                raise RequestError(422, f"rows[{i}]: missing field(s) {', '.join(missing)}")
            extra = sorted(k for k in row if k not in wanted)
            raise RequestError(
                422,
                f"rows[{i}]: unknown field(s) {', '.join(extra)} (model {served.name} v{served.version} takes "
                f"{', '.join(served.columns)})",
            )
        for col in categorical:
            value = row[col]
            if value is not None and not isinstance(value, str):
                raise RequestError(
                    422, f"rows[{i}].{col}: expected a string or null, got {type(value).__name__} {value!r}"
                )
        for col in numeric:
            value = row[col]
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise RequestError(
                    422, f"rows[{i}].{col}: expected a number or null, got {type(value).__name__} {value!r}"
                )
            if isinstance(value, float) and math.isinf(value):  # Python's json accepts Infinity
                raise RequestError(422, f"rows[{i}].{col}: expected a finite number or null, got {value!r}")
    return rows


_TEXT_OR_NULL = frozenset({str, type(None)})
_NUMBER_OR_NULL = frozenset({int, float, type(None)})  # bool is a type of its own, hence refused
_INFINITIES = (math.inf, -math.inf)


def _plainly_valid(rows: list[Any], wanted: set[str], served: ServedModel) -> bool:
    """The checks of `parse_rows` column by column at C speed, for rows as `json.loads` makes them (exact
    types): True when every row passes; False sends the rows through the field-by-field checks."""
    for row in rows:
        if type(row) is not dict or row.keys() != wanted:
            return False
    for col in served.categorical:
        if not set(map(type, map(operator.itemgetter(col), rows))) <= _TEXT_OR_NULL:
            return False
    for col in served.numeric:
        values = list(map(operator.itemgetter(col), rows))
        if not set(map(type, values)) <= _NUMBER_OR_NULL or any(inf in values for inf in _INFINITIES):
            return False
    return True


# Inference log -------------------------------------------------------------------------------------------


class InferenceLog:
    """Requests and predictions buffered in memory and written as Parquet files, in batches, atomically."""

    def __init__(self, lake: Lake, flush_rows: int) -> None:
        self.lake = lake
        self.flush_rows = flush_rows
        self._buffer: dict[str, list[dict[str, Any]]] = {}
        self._rows = 0
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self.wanted = threading.Event()
        self.files_written = 0
        self.errors = 0

    def add(self, pipeline: str, served: ServedModel, request_id: str, at: datetime,
            rows: Sequence[Mapping[str, Any]], scores: np.ndarray) -> None:  # fmt: skip
        columns = served.columns
        records = [{c: row[c] for c in columns} for row in rows]  # new dicts in the model's column order
        stamp = pd.Timestamp(at)
        for i, (record, score) in enumerate(zip(records, scores.tolist(), strict=True)):
            record.update(
                {
                    "request_id": request_id,
                    "row": i,
                    "time": stamp,
                    "model_name": served.name,
                    "model_version": served.version,
                    "prediction": score,
                }
            )
        with self._lock:
            self._buffer.setdefault(pipeline, []).extend(records)
            self._rows += len(records)
            if self._rows >= self.flush_rows:
                self.wanted.set()

    def flush(self) -> list[str]:
        """Write the buffered rows: one file per pipeline and day; rows of a failed write go back to the buffer."""
        with self._flush_lock:
            with self._lock:
                taken, self._buffer, self._rows = self._buffer, {}, 0
                self.wanted.clear()
            written = []
            for pipeline, records in taken.items():
                frame = pd.DataFrame.from_records(records)
                # normalize, not strftime per row: that was a third of a flush, which holds the GIL.
                for day, part in frame.groupby(frame["time"].dt.normalize(), sort=True):
                    name = f"{datetime.now(UTC).strftime('%H%M%S%f')}-{uuid.uuid4().hex}.parquet"
                    date = pd.Timestamp(day).strftime("%Y-%m-%d")
                    uri = self.lake.partition_uri(INFERENCE_ZONE, pipeline, "", date, name)
                    try:
                        self.lake.write_parquet(uri, part.reset_index(drop=True))
                    except Exception as exc:
                        self.errors += 1
                        log.error("inference log: cannot write %d row(s) to %s: %s", len(part), uri, exc)
                        with self._lock:  # keep them for the next flush
                            self._buffer.setdefault(pipeline, []).extend(part.to_dict("records"))  # type: ignore[arg-type]
                            self._rows += len(part)
                        continue
                    self.files_written += 1
                    written.append(uri)
            return written


# Metrics -------------------------------------------------------------------------------------------------


@dataclass
class Metrics:
    """Prometheus counters and a latency histogram, kept in memory by the event loop."""

    requests: dict[tuple[str, str, int], int] = field(default_factory=dict)
    buckets: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    sums: dict[tuple[str, str], float] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)

    def observe(self, route: str, pipeline: str, status: int, seconds: float) -> None:
        key = (route, pipeline, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        hkey = (route, pipeline)
        counts = self.buckets.setdefault(hkey, [0] * (len(LATENCY_BUCKETS) + 1))
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                counts[i] += 1
        counts[-1] += 1
        self.sums[hkey] = self.sums.get(hkey, 0.0) + seconds

    def render(self, store: ModelStore, inference_log: InferenceLog) -> str:
        lines = [
            "# HELP mlops_requests_total Requests by route, pipeline and HTTP status.",
            "# TYPE mlops_requests_total counter",
        ]
        for (route, pipeline, status), n in sorted(self.requests.items()):
            lines.append(f'mlops_requests_total{{route="{route}",pipeline="{pipeline}",status="{status}"}} {n}')
        lines += [
            "# HELP mlops_request_seconds Request latency.",
            "# TYPE mlops_request_seconds histogram",
        ]
        for (route, pipeline), counts in sorted(self.buckets.items()):
            labels = f'route="{route}",pipeline="{pipeline}"'
            for bound, n in zip(LATENCY_BUCKETS, counts, strict=False):
                lines.append(f'mlops_request_seconds_bucket{{{labels},le="{bound}"}} {n}')
            lines.append(f'mlops_request_seconds_bucket{{{labels},le="+Inf"}} {counts[-1]}')
            lines.append(f"mlops_request_seconds_sum{{{labels}}} {self.sums[(route, pipeline)]:.6f}")
            lines.append(f"mlops_request_seconds_count{{{labels}}} {counts[-1]}")
        lines += [
            "# HELP mlops_predicted_rows_total Rows predicted.",
            "# TYPE mlops_predicted_rows_total counter",
        ]
        for pipeline, n in sorted(self.rows.items()):
            lines.append(f'mlops_predicted_rows_total{{pipeline="{pipeline}"}} {n}')
        lines += [
            "# HELP mlops_model_version Registry version served per pipeline (0: none).",
            "# TYPE mlops_model_version gauge",
        ]
        for pipeline, state in sorted(store.states.items()):
            version = state.served.version if state.served else "0"
            number = version if version.isdigit() else "0"
            lines.append(f'mlops_model_version{{pipeline="{pipeline}",model_name="{state.name}"}} {number}')
        lines += [
            "# HELP mlops_model_swaps_total Versions swapped in.",
            "# TYPE mlops_model_swaps_total counter",
            f"mlops_model_swaps_total {store.swaps}",
            "# HELP mlops_model_load_failures_total Versions that failed to load or validate (not served).",
            "# TYPE mlops_model_load_failures_total counter",
            f"mlops_model_load_failures_total {store.failures}",
            "# HELP mlops_inference_log_files_total Inference log files written.",
            "# TYPE mlops_inference_log_files_total counter",
            f"mlops_inference_log_files_total {inference_log.files_written}",
            "# HELP mlops_inference_log_errors_total Inference log writes that failed (rows kept for a retry).",
            "# TYPE mlops_inference_log_errors_total counter",
            f"mlops_inference_log_errors_total {inference_log.errors}",
        ]
        return "\n".join(lines) + "\n"


# The ASGI app --------------------------------------------------------------------------------------------


class ModelServer:
    """A plain ASGI app (no framework: fewer layers per request) with its background poller and log flusher."""

    def __init__(self, conf: ServerSettings, configs: Sequence[PipelineConfig] | None = None) -> None:
        self.conf = conf
        configs = list(configs) if configs is not None else load_pipelines(conf.pipelines_dir)
        self.store = ModelStore(configs, conf.tracking_uri)
        self.inference_log = InferenceLog(open_lake(conf.lake_root), conf.flush_rows)
        self.metrics = Metrics()
        self._token = conf.token.encode()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._limiter: contextlib.AbstractContextManager[Any] | None = None
        self._fast_failed: set[tuple[str, str]] = set()  # models whose fast-path failure was logged
        self.started_at = _now()

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
                self._authorize(headers)
                body = await self._read_body(receive, headers)
                status, payload = 200, self._predict(pipeline, body, request_id)
            elif path == "/health":
                self._require(method, "GET")
                status, payload = 200, self._health()
            elif path == "/version":
                self._require(method, "GET")
                self._authorize(headers)
                status, payload = 200, {"pipelines": self.store.versions()}
            elif path == "/metrics":
                self._require(method, "GET")
                text = self.metrics.render(self.store, self.inference_log)
                await _respond(send, 200, text.encode(), b"text/plain; version=0.0.4", request_id)
                self.metrics.observe(route, pipeline, 200, time.perf_counter() - started)
                return
            elif path == "/admin/reload":
                self._require(method, "POST")
                self._authorize(headers)
                await asyncio.to_thread(self.store.check_all, True)
                status, payload = 200, {"pipelines": self.store.versions()}
            else:
                route = "other"
                raise RequestError(404, f"no route {path} (routes: /predict/<pipeline>, /health, /version, /metrics)")
        except RequestError as exc:
            status, payload = exc.status, {"error": exc.message, "request_id": request_id}
        except Exception as exc:  # a bug must cost one request, not the server
            log.exception("request %s on %s failed", request_id, path)
            status, payload = 500, {"error": f"internal error: {type(exc).__name__}: {exc}", "request_id": request_id}
        if route == "/predict" and pipeline not in self.store.states:
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

    def _authorize(self, headers: Mapping[str, str]) -> None:
        auth = headers.get("authorization")
        if not auth:
            raise RequestError(401, "missing API token: send the header 'Authorization: Bearer <token>'")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self._token):
            raise RequestError(403, "invalid API token")

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

    def _predict(self, pipeline: str, body: bytes, request_id: str) -> dict[str, Any]:
        state = self.store.states.get(pipeline)
        if state is None:
            raise RequestError(404, f"unknown pipeline {pipeline!r} (served: {', '.join(sorted(self.store.states))})")
        served = state.served  # taken once: a swap during this request does not change its model
        if served is None:
            raise RequestError(503, f"pipeline {pipeline!r} has no model loaded: {state.error or 'not checked yet'}")
        at = datetime.now(UTC)
        rows = parse_rows(body, served, self.conf.max_rows)
        scores = self._score(served, rows)
        predictions = [None if math.isnan(s) else s for s in scores.tolist()]
        self.inference_log.add(pipeline, served, request_id, at, rows, scores)
        self.metrics.rows[pipeline] = self.metrics.rows.get(pipeline, 0) + len(rows)
        return {
            "pipeline": pipeline,
            "model_name": served.name,
            "model_version": served.version,
            "predictions": predictions,
            "request_id": request_id,
        }

    def _score(self, served: ServedModel, rows: list[dict[str, Any]]) -> np.ndarray:
        """Positive-class probabilities: through the fast path when the model has one, else the pipeline."""
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
        frame = pd.DataFrame.from_records(rows, columns=list(served.columns))
        try:
            return training.positive_scores(served.model, frame)
        except (ValueError, TypeError) as exc:  # values the model cannot take despite the types
            raise RequestError(422, f"the model cannot score these rows: {exc}") from exc

    def _health(self) -> dict[str, Any]:
        loaded = {p: s.served.version if s.served else None for p, s in self.store.states.items()}
        return {"status": "ok", "started_at": self.started_at, "models": loaded}


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


# Command line --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m airflow_mlops.serving", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8088)
    parser.add_argument(
        "--tracking-uri", default=os.environ.get(ENV_TRACKING_URI), help=f"default: ${ENV_TRACKING_URI}"
    )
    parser.add_argument("--token", default=os.environ.get(ENV_TOKEN), help=f"API token; default: ${ENV_TOKEN}")
    lake, pipelines = settings.LAKE_ROOT, settings.PIPELINES_DIR
    parser.add_argument("--lake-root", default=settings.lake_root(), help=f"default: ${lake.env}, ${lake.airflow_env}")
    parser.add_argument("--pipelines-dir", type=Path, help=f"default: ${pipelines.env}, ${pipelines.airflow_env}")
    parser.add_argument("--poll-seconds", type=float, default=5.0, help="champion alias check interval")
    parser.add_argument("--max-rows", type=int, default=1000, help="largest batch per request")
    parser.add_argument("--flush-seconds", type=float, default=30.0, help="inference log write interval")
    parser.add_argument("--flush-rows", type=int, default=5000, help="inference log write after this many rows")
    parser.add_argument("--log-level", default="info")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until SIGINT/SIGTERM; the inference log is flushed on the way out.

    After a graceful shutdown uvicorn re-raises the signal, so the exit status is that of the signal.
    """
    import uvicorn

    args = parse_args(argv)
    problems = [
        f"{what} is required ({how})"
        for what, value, how in (
            ("an API token", args.token, f"--token or ${ENV_TOKEN}"),
            ("the MLflow tracking URI", args.tracking_uri, f"--tracking-uri or ${ENV_TRACKING_URI}"),
            ("the lake root", args.lake_root, f"--lake-root or ${settings.LAKE_ROOT.env}"),
        )
        if not value
    ]
    if problems:
        print("model server: " + "; ".join(problems))
        return 2
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no progress bars in a service log
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    conf = ServerSettings(
        tracking_uri=args.tracking_uri,
        token=args.token,
        lake_root=args.lake_root,
        poll_seconds=args.poll_seconds,
        max_rows=args.max_rows,
        flush_seconds=args.flush_seconds,
        flush_rows=args.flush_rows,
        pipelines_dir=args.pipelines_dir,
    )
    app = ModelServer(conf)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        lifespan="on",
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=30,
    )
    return 0
