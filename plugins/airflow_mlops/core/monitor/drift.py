"""Data drift of current feature rows against a reference sample, with Evidently's DataDriftPreset."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

# Distances rather than p-values by default: a p-value test flags ever smaller shifts as the row count
# grows, so the same shift would alarm or not depending on traffic; a distance does not depend on n.
# Wasserstein is normed by the reference std, so 0.1 means "the mass moved about 0.1 standard deviations".
DEFAULT_NUMERIC_METHOD = "wasserstein"
DEFAULT_NUMERIC_THRESHOLD = 0.1
DEFAULT_CATEGORICAL_METHOD = "jensenshannon"
DEFAULT_CATEGORICAL_THRESHOLD = 0.1

_VALUE_DRIFT = "evidently:metric_v2:ValueDrift"


class InsufficientData(ValueError):
    """Too few rows or usable columns to judge drift: an outcome to report, never an alarm."""


@dataclass(frozen=True)
class ColumnDrift:
    """Drift of one column as Evidently judged it (`score` vs `threshold` in the method's own sense)."""

    method: str
    score: float
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class DriftResult:
    """Outcome of one drift check; `html` is the Evidently report, left out of `to_dict()`."""

    drifted: bool
    share: float
    share_threshold: float
    columns: dict[str, ColumnDrift]
    rows_reference: int
    rows_current: int
    critical_drifted: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    html: str = field(default="", repr=False)
    weighted_share: float | None = None
    """The share with each column counted by the champion's importance of it (monitor.drift.weighting:
    importance); when set, it, not `share`, is compared with share_threshold."""
    weights: dict[str, float] = field(default_factory=dict)

    @property
    def drifted_columns(self) -> list[str]:
        return [name for name, col in self.columns.items() if col.drifted]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (for XCom, MLflow and alerts)."""
        return {
            "drifted": self.drifted,
            "share": self.share,
            "share_threshold": self.share_threshold,
            "drifted_columns": self.drifted_columns,
            "critical_drifted": list(self.critical_drifted),
            "rows_reference": self.rows_reference,
            "rows_current": self.rows_current,
            "columns": {
                name: {"method": c.method, "score": c.score, "threshold": c.threshold, "drifted": c.drifted}
                for name, c in self.columns.items()
            },
            "skipped": dict(self.skipped),
            "weighted_share": self.weighted_share,
            "weights": dict(self.weights),
        }


def weigh(result: DriftResult, importance: Mapping[str, float]) -> DriftResult:
    """`result` judged by the importance-weighted share of drifted columns: each checked column counts by its
    permutation importance (negative importance, noise, counts 0). Unchanged when the checked columns have no
    positive importance at all (nothing to weigh by)."""
    weights = {c: max(float(importance.get(c, 0.0)), 0.0) for c in result.columns}
    total = sum(weights.values())
    if total <= 0 or math.isnan(total):
        return result
    weights = {c: w / total for c, w in weights.items()}
    share = sum(w for c, w in weights.items() if result.columns[c].drifted)
    drifted = share >= result.share_threshold or bool(result.critical_drifted)
    return replace(result, drifted=drifted, weighted_share=share, weights=weights)


def detect_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    *,
    methods: Mapping[str, str] | None = None,
    thresholds: Mapping[str, float] | None = None,
    critical: list[str] | None = None,
    share_threshold: float = 0.3,
    sample_rows: int = 20000,
    min_rows: int = 200,
    seed: int = 0,
    timestamp: datetime | None = None,
    html: bool = True,
) -> DriftResult:
    """Compare `current` with `reference` column by column; drifted if enough (or a critical) column drifted.

    reference, current: feature rows; only the named columns are read.
    numeric, categorical: the feature columns by kind.
    methods, thresholds: per-column Evidently stat test and threshold (e.g. {"temp": "ks"}, {"temp": 0.05});
        unnamed columns use Wasserstein (normed) 0.1 for numbers and Jensen-Shannon 0.1 for categories.
    critical: columns whose drift alone makes the result drifted.
    share_threshold: the result is drifted when drifted columns / checked columns >= this.
    sample_rows: each frame is sampled down to at most this many rows, so time and memory stay bounded.
    min_rows: fewer rows in either frame (or fewer non-null values in a column) is insufficient data.
    seed: seed of the sampling, so the same inputs give the same result.
    timestamp: the report's timestamp (pass the logical date; default: now, only for ad hoc use).
    html: render Evidently's report into `html` (the costly part of a small check).
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    overlap = set(numeric) & set(categorical)
    if overlap:
        raise ValueError(f"columns {sorted(overlap)} are listed as both numeric and categorical")
    wanted = [*numeric, *categorical]
    for label, frame in (("reference", reference), ("current", current)):
        missing = [c for c in wanted if c not in frame.columns]
        if missing:
            raise ValueError(f"{label} frame has no column(s) {missing}")
    for label, names in (("methods", methods or {}), ("thresholds", thresholds or {}), ("critical", critical or [])):
        unknown = sorted(set(names) - set(wanted))
        if unknown:
            raise ValueError(f"{label} name column(s) {unknown} that are not drift columns")
    if not wanted:
        raise InsufficientData("no feature columns to compare")
    if len(reference) < min_rows or len(current) < min_rows:
        raise InsufficientData(
            f"too few rows to judge drift: reference {len(reference)}, current {len(current)} (need {min_rows} each)"
        )

    ref = _prepare(reference, numeric, categorical, sample_rows, seed)
    cur = _prepare(current, numeric, categorical, sample_rows, seed + 1)
    # A column (nearly) empty on either side, e.g. a join that found nothing, cannot be judged: skip it.
    skipped: dict[str, str] = {}
    for col in wanted:
        n_ref, n_cur = int(ref[col].notna().sum()), int(cur[col].notna().sum())
        if n_ref < min_rows or n_cur < min_rows:
            skipped[col] = f"too few values (reference {n_ref}, current {n_cur}; need {min_rows})"
    num = [c for c in numeric if c not in skipped]
    cat = [c for c in categorical if c not in skipped]
    if not num and not cat:
        raise InsufficientData(f"no column has enough values to judge drift: {skipped}")

    per_method = {c: DEFAULT_NUMERIC_METHOD for c in num} | {c: DEFAULT_CATEGORICAL_METHOD for c in cat}
    per_threshold = {c: DEFAULT_NUMERIC_THRESHOLD for c in num} | {c: DEFAULT_CATEGORICAL_THRESHOLD for c in cat}
    per_method.update({c: m for c, m in (methods or {}).items() if c in per_method})
    per_threshold.update({c: t for c, t in (thresholds or {}).items() if c in per_threshold})

    definition = DataDefinition(numerical_columns=num, categorical_columns=cat)
    preset = DataDriftPreset(
        columns=[*num, *cat],
        drift_share=share_threshold,
        per_column_method=per_method,  # type: ignore[arg-type]  # Evidently also accepts the method names
        per_column_threshold=per_threshold,
    )
    snapshot = Report([preset], include_tests=True).run(
        Dataset.from_pandas(cur[[*num, *cat]], data_definition=definition),
        Dataset.from_pandas(ref[[*num, *cat]], data_definition=definition),
        timestamp=timestamp,
    )
    columns = _column_results(snapshot.dict())
    lost = sorted(set(num + cat) - set(columns))
    if lost:  # would mean an Evidently output change: fail loudly rather than judge on part of the columns
        raise RuntimeError(f"Evidently returned no drift result for column(s) {lost}")
    columns = {c: columns[c] for c in [*num, *cat]}
    share = sum(c.drifted for c in columns.values()) / len(columns)
    critical_drifted = [c for c in critical or [] if c in columns and columns[c].drifted]
    return DriftResult(
        drifted=share >= share_threshold or bool(critical_drifted),
        share=share,
        share_threshold=share_threshold,
        columns=columns,
        rows_reference=len(reference),
        rows_current=len(current),
        critical_drifted=critical_drifted,
        skipped=skipped,
        html=snapshot.get_html_str(as_iframe=False) if html else "",
    )


def _prepare(frame: pd.DataFrame, numeric: list[str], categorical: list[str], rows: int, seed: int) -> pd.DataFrame:
    """The named columns of at most `rows` sampled rows: numbers as float64, categories as text (NaN if missing)."""
    if len(frame) > rows:
        frame = frame.sample(n=rows, random_state=seed)
    out = pd.DataFrame(index=pd.RangeIndex(len(frame)))
    for col in numeric:
        try:
            out[col] = pd.to_numeric(frame[col]).astype("float64").to_numpy()
        except (TypeError, ValueError) as exc:
            raise ValueError(f"numeric drift column {col!r} has non-numeric values: {exc}") from exc
    for col in categorical:
        out[col] = frame[col].astype("string").to_numpy(dtype=object, na_value=np.nan)
    return out


def _column_results(report: dict[str, Any]) -> dict[str, ColumnDrift]:
    """Per-column method, score, threshold and verdict from a DataDriftPreset snapshot's dict()."""
    failed = {
        t["metric_config"]["metric_id"]
        for t in report["tests"]
        if t.get("metric_config", {}).get("params", {}).get("type") == _VALUE_DRIFT and t["status"] == "FAIL"
    }
    out: dict[str, ColumnDrift] = {}
    for metric in report["metrics"]:
        config = metric.get("config", {})
        if config.get("type") != _VALUE_DRIFT:
            continue
        out[config["column"]] = ColumnDrift(
            method=str(config["method"]),
            score=float(metric["value"]),
            threshold=float(config["threshold"]),
            drifted=metric["id"] in failed,
        )
    return out
