"""Smoke test of a deployed model: the right version, one prediction per row, offline-equal, within budget."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow_mlops.core.train.tasks import prediction_difference

Predict = Callable[[list[dict[str, Any]]], tuple[list[Any], str]]
"""Sends rows to the server; returns its predictions (numbers, or per-class objects for multiclass) and the
model version that answered."""


@dataclass(frozen=True)
class SmokeResult:
    passed: bool
    version: str
    rows: int
    max_abs_diff: float
    p99_ms: float
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if self.passed:
            return f"version {self.version}: {self.rows} rows equal offline, p99 {self.p99_ms:.1f} ms"
        return f"version {self.version} failed the smoke test: " + "; ".join(self.problems)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def smoke_test(
    predict: Predict,
    rows: list[dict[str, Any]],
    expected: Sequence[Any],
    version: str,
    latency_budget_ms: float,
    tolerance: float = 1e-6,
    latency_requests: int = 30,
) -> SmokeResult:
    """Check the served model on sample rows whose offline predictions are `expected`.

    Predictions are compared with `tasks.prediction_difference`: numbers within `tolerance`; a multiclass
    prediction must name the same class and each class probability be within `tolerance`.
    """
    if not rows or len(rows) != len(expected):
        raise ValueError(
            f"smoke test needs rows and one expected prediction per row, got {len(rows)} and {len(expected)}"
        )
    problems: list[str] = []
    got, served = predict(rows)
    if served != version:
        problems.append(f"server answered with version {served}, expected {version}")
    diff = math.inf
    if len(got) != len(rows):
        problems.append(f"{len(got)} predictions for {len(rows)} rows")
    else:
        diff = max(prediction_difference(g, e) for g, e in zip(got, expected, strict=True))
        if not diff <= tolerance:
            problems.append(f"predictions differ from offline ones by up to {diff:.3g} (tolerance {tolerance:g})")
    latencies = []
    for i in range(latency_requests):
        start = time.perf_counter()
        predict([rows[i % len(rows)]])
        latencies.append((time.perf_counter() - start) * 1000)
    p99 = percentile(latencies, 99)
    if p99 > latency_budget_ms:
        problems.append(f"single-row p99 latency {p99:.1f} ms over the budget of {latency_budget_ms:g} ms")
    return SmokeResult(not problems, served, len(rows), diff, p99, problems)
