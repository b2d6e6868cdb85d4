"""Prometheus metrics of the model server: requests, latency, models served, inference log, in text format."""

from __future__ import annotations

from dataclasses import dataclass, field

from airflow_mlops.serving.inference_log import InferenceLog
from airflow_mlops.serving.models import ModelStore

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


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

    def render(self, store: ModelStore, inference_log: InferenceLog, flush_seconds: float) -> str:
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
            "# HELP mlops_model_load_failures_total Versions that failed to load or validate, or were refused.",
            "# TYPE mlops_model_load_failures_total counter",
            f"mlops_model_load_failures_total {store.failures}",
            "# HELP mlops_inference_log_files_total Inference log files written.",
            "# TYPE mlops_inference_log_files_total counter",
            f"mlops_inference_log_files_total {inference_log.files_written}",
            "# HELP mlops_inference_log_errors_total Inference log writes that failed (rows kept for a retry).",
            "# TYPE mlops_inference_log_errors_total counter",
            f"mlops_inference_log_errors_total {inference_log.errors}",
        ]
        return "\n".join(lines + _log_lines(inference_log, flush_seconds)) + "\n"


def _log_lines(inference_log: InferenceLog, flush_seconds: float) -> list[str]:
    """The inference log's figures: rows accepted, written, dropped (by reason) and at risk in memory."""
    lines = [
        "# HELP mlops_inference_log_rows_accepted_total Rows given to the inference log (predicted rows).",
        "# TYPE mlops_inference_log_rows_accepted_total counter",
        *(
            f'mlops_inference_log_rows_accepted_total{{pipeline="{p}"}} {n}'
            for p, n in sorted(inference_log.rows_accepted.items())
        ),
        "# HELP mlops_inference_log_rows_written_total Rows written to inference log files.",
        "# TYPE mlops_inference_log_rows_written_total counter",
        *(
            f'mlops_inference_log_rows_written_total{{pipeline="{p}"}} {n}'
            for p, n in sorted(inference_log.rows_written.items())
        ),
        "# HELP mlops_inference_log_dropped_rows_total Rows never written: buffer_full (the buffer bound was "
        "reached while writes failed) or unwritable (Parquet cannot hold them).",
        "# TYPE mlops_inference_log_dropped_rows_total counter",
        *(
            f'mlops_inference_log_dropped_rows_total{{pipeline="{p}",reason="{r}"}} {n}'
            for (p, r), n in sorted(inference_log.dropped.items())
        ),
        "# HELP mlops_inference_log_buffered_rows Rows in memory waiting for a write (lost if the process is killed).",
        "# TYPE mlops_inference_log_buffered_rows gauge",
        f"mlops_inference_log_buffered_rows {inference_log.buffered}",
        "# HELP mlops_inference_log_buffer_limit_rows Most rows kept in memory; more are dropped.",
        "# TYPE mlops_inference_log_buffer_limit_rows gauge",
        f"mlops_inference_log_buffer_limit_rows {inference_log.max_buffer_rows}",
        "# HELP mlops_inference_log_flush_interval_seconds Longest time between two writes of the inference log.",
        "# TYPE mlops_inference_log_flush_interval_seconds gauge",
        f"mlops_inference_log_flush_interval_seconds {flush_seconds}",
        "# HELP mlops_inference_log_last_flush_timestamp_seconds When the inference log was last written (Unix time).",
        "# TYPE mlops_inference_log_last_flush_timestamp_seconds gauge",
        f"mlops_inference_log_last_flush_timestamp_seconds {inference_log.last_flush:.3f}",
    ]
    return lines
