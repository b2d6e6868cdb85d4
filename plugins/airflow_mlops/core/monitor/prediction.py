"""Prediction drift: the champion's outputs on the current window against its outputs on its reference sample."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from airflow_mlops.core.monitor.current import MODEL_VERSION, PREDICTION
from airflow_mlops.core.monitor.drift import (
    DEFAULT_CATEGORICAL_METHOD,
    DEFAULT_CATEGORICAL_THRESHOLD,
    DEFAULT_NUMERIC_METHOD,
    DEFAULT_NUMERIC_THRESHOLD,
    ColumnDrift,
    DriftResult,
    InsufficientData,
    detect_drift,
)
from airflow_mlops.core.train.tasks import PROBA_PREFIX


@dataclass(frozen=True)
class PredictionDrift:
    """Drift of the model's outputs: `prediction` (P(true), the value or the predicted class) and, for
    multiclass, each `proba.<class>`; drifted when `prediction` drifted (class probabilities are shown only)."""

    task: str
    drift: DriftResult
    champion_version: str
    other_rows: int = 0
    """Current rows left out: predicted by another model version, or without a prediction."""

    @property
    def main(self) -> ColumnDrift:
        """The result of the `prediction` column: the headline score."""
        return self.drift.columns[PREDICTION]

    @property
    def drifted(self) -> bool:
        return self.drift.drifted

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (for XCom, MLflow and alerts)."""
        summary = self.drift.to_dict()
        return {
            "task": self.task,
            "drifted": self.drifted,
            "score": self.main.score,
            "method": self.main.method,
            "threshold": self.main.threshold,
            "drifted_columns": summary["drifted_columns"],
            "champion_version": self.champion_version,
            "rows_reference": self.drift.rows_reference,
            "rows_current": self.drift.rows_current,
            "rows_left_out": self.other_rows,
            "columns": summary["columns"],
            "skipped": summary["skipped"],
        }


def output_columns(reference: pd.DataFrame, task: str) -> tuple[list[str], list[str]]:
    """(numeric, categorical) output columns compared for `task`.

    binary: P(label true); regression: the predicted value; multiclass: the predicted class (a category)
    and the probability of each class of the reference.
    """
    if task == "multiclass":
        return [str(c) for c in reference.columns if str(c).startswith(PROBA_PREFIX)], [PREDICTION]
    return [PREDICTION], []


def detect_prediction_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    task: str,
    champion_version: str,
    *,
    numeric_method: str = DEFAULT_NUMERIC_METHOD,
    numeric_threshold: float = DEFAULT_NUMERIC_THRESHOLD,
    categorical_method: str = DEFAULT_CATEGORICAL_METHOD,
    categorical_threshold: float = DEFAULT_CATEGORICAL_THRESHOLD,
    sample_rows: int = 20000,
    min_rows: int = 200,
    seed: int = 0,
    timestamp: datetime | None = None,
) -> PredictionDrift:
    """Compare the champion's outputs on `current` with its outputs on its `reference` sample (Evidently,
    as detect_drift does for features); drifted when `prediction` drifted (multiclass: the class mix).

    reference: the champion's reference sample: `prediction`, and `proba.<class>` for multiclass.
    current: production rows with `prediction` (multiclass: the class, and `proba.<class>`) and
        `model_version`; rows of other versions or without a prediction are left out, since another
        model's outputs differ by design.
    *_method, *_threshold: Evidently stat test and threshold of numeric outputs (probabilities, values) and
        of the predicted class.
    Raises InsufficientData when either side has fewer than `min_rows` usable outputs.
    """
    if PREDICTION not in reference.columns:
        raise InsufficientData(f"champion v{champion_version}'s reference sample has no {PREDICTION} column")
    numeric, categorical = output_columns(reference, task)
    if task == "multiclass" and not numeric:
        raise InsufficientData(f"champion v{champion_version}'s reference sample has no class probabilities")
    wanted = [*numeric, *categorical]
    if MODEL_VERSION in current.columns:
        same = current[MODEL_VERSION].astype("string") == str(champion_version)
        keep = same.fillna(False).to_numpy(dtype=bool)
    else:
        keep = np.zeros(len(current), dtype=bool)
    if PREDICTION in current.columns:
        keep &= current[PREDICTION].notna().to_numpy()
    rows = current.loc[keep].reindex(columns=wanted)  # a class the window never saw: a column of missing values
    ref = reference[wanted]
    if task == "multiclass":  # classes compare as text: either side may hold them as numbers
        ref = ref.assign(**{PREDICTION: ref[PREDICTION].astype("string")})
        rows = rows.assign(**{PREDICTION: rows[PREDICTION].astype("string")})
    methods = dict.fromkeys(numeric, numeric_method) | dict.fromkeys(categorical, categorical_method)
    thresholds = dict.fromkeys(numeric, numeric_threshold) | dict.fromkeys(categorical, categorical_threshold)
    drift = detect_drift(
        ref,
        rows,
        numeric,
        categorical,
        methods=methods,
        thresholds=thresholds,
        # The verdict is that of `prediction`. Multiclass: the class mix decides; class probabilities move
        # with every change of confidence (the 0.1 default flags a recalibrated model the same day) and
        # are shown, not judged.
        critical=[PREDICTION],
        share_threshold=1.0,
        sample_rows=sample_rows,
        min_rows=min_rows,
        seed=seed,
        timestamp=timestamp,
        html=False,  # the monitor's page shows the output columns in its own table
    )
    if PREDICTION not in drift.columns:  # the headline output could not be judged
        raise InsufficientData(f"{PREDICTION}: {drift.skipped.get(PREDICTION, 'not judged')}")
    return PredictionDrift(task, drift, str(champion_version), int((~keep).sum()))
