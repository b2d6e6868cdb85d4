"""Drift detection with Evidently on realistic feature frames: planted shifts are found, noise is not."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.config import PipelineConfig
from airflow_mlops.core.monitor.drift import DriftResult, InsufficientData, detect_drift
from airflow_mlops.core.train.training import FeatureSpec, feature_spec
from tests.fixtures.training_data import day_range, flight_config, synthetic_features

DAYS = day_range("2013-03-01", 20)  # both frames cover the same days, so month/day/day_of_week do not drift
ROWS_PER_DAY = 500  # 10000 rows a side


@pytest.fixture(scope="module")
def cfg() -> PipelineConfig:
    return flight_config()


@pytest.fixture(scope="module")
def reference(cfg: PipelineConfig) -> pd.DataFrame:
    return synthetic_features(cfg, DAYS, rows_per_day=ROWS_PER_DAY, seed=11)


@pytest.fixture(scope="module")
def current(cfg: PipelineConfig) -> pd.DataFrame:
    """An independent sample of the same distribution as `reference`."""
    return synthetic_features(cfg, DAYS, rows_per_day=ROWS_PER_DAY, seed=12)


@pytest.fixture(scope="module")
def spec(cfg: PipelineConfig, reference: pd.DataFrame) -> FeatureSpec:
    return feature_spec(cfg, reference)


@pytest.fixture(scope="module")
def one_column(spec: FeatureSpec) -> float:
    """A share threshold at which a single drifted column makes the whole result drifted."""
    return 1 / (len(spec.numeric) + len(spec.categorical))


def drift(reference: pd.DataFrame, current: pd.DataFrame, spec: FeatureSpec, **kwargs: object) -> DriftResult:
    return detect_drift(reference, current, spec.numeric, spec.categorical, **kwargs)  # type: ignore[arg-type]


def shifted(frame: pd.DataFrame, column: str, sds: float, reference: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    out[column] = out[column] + sds * float(reference[column].std())
    return out


def test_same_distribution_has_no_drift(
    reference: pd.DataFrame, current: pd.DataFrame, spec: FeatureSpec, one_column: float
) -> None:
    result = drift(reference, current, spec, share_threshold=one_column)
    assert set(result.columns) == {*spec.numeric, *spec.categorical}
    assert result.drifted_columns == []
    assert not result.drifted and result.share == 0.0
    assert (result.rows_reference, result.rows_current) == (len(reference), len(current))
    assert result.columns["temp"].method == "wasserstein" and result.columns["carrier"].method == "jensenshannon"
    assert "<html" in result.html.lower()
    summary = json.loads(json.dumps(result.to_dict()))
    assert "html" not in summary and summary["columns"]["temp"]["drifted"] is False


def test_planted_shift_of_0_3_sd_is_detected(
    reference: pd.DataFrame, current: pd.DataFrame, spec: FeatureSpec, one_column: float
) -> None:
    result = drift(reference, shifted(current, "temp", 0.3, reference), spec, share_threshold=one_column)
    assert result.drifted_columns == ["temp"]
    temp = result.columns["temp"]
    assert temp.score >= temp.threshold == 0.1
    assert result.drifted and result.share == pytest.approx(one_column)
    # Under the default share rule one column out of many is no dataset drift, unless it is critical.
    critical = drift(reference, shifted(current, "temp", 0.3, reference), spec, critical=["temp"])
    assert critical.share < critical.share_threshold == 0.3
    assert critical.drifted and critical.critical_drifted == ["temp"]


def test_shift_of_0_05_sd_is_not_detected(
    reference: pd.DataFrame, current: pd.DataFrame, spec: FeatureSpec, one_column: float
) -> None:
    result = drift(reference, shifted(current, "temp", 0.05, reference), spec, share_threshold=one_column)
    assert not result.columns["temp"].drifted
    assert not result.drifted and result.drifted_columns == []


def test_changed_category_mix_is_detected(
    reference: pd.DataFrame, current: pd.DataFrame, spec: FeatureSpec, one_column: float
) -> None:
    mixed = current.copy()
    rng = np.random.default_rng(3)
    moved = rng.random(len(mixed)) < 0.4  # 40% of flights move to B6: its share goes from ~1/6 to ~1/2
    mixed.loc[moved, "carrier"] = "B6"
    result = drift(reference, mixed, spec, share_threshold=one_column)
    assert result.drifted_columns == ["carrier"]
    assert result.drifted


def test_per_column_method_and_threshold_are_used(
    reference: pd.DataFrame, current: pd.DataFrame, spec: FeatureSpec
) -> None:
    result = detect_drift(
        reference,
        shifted(current, "temp", 0.3, reference),
        ["temp", "humid"],
        ["carrier"],
        methods={"temp": "ks", "carrier": "psi"},
        thresholds={"temp": 0.01, "carrier": 0.2},
    )
    temp, carrier = result.columns["temp"], result.columns["carrier"]
    assert (temp.method, temp.threshold, carrier.method, carrier.threshold) == ("ks", 0.01, "psi", 0.2)
    assert temp.drifted and temp.score < 0.01  # a p-value: drift below the threshold
    assert not carrier.drifted


def test_sampling_bounds_rows_and_is_deterministic(
    reference: pd.DataFrame, current: pd.DataFrame, spec: FeatureSpec
) -> None:
    first = detect_drift(reference, current, ["temp", "humid"], ["carrier"], sample_rows=1000, seed=5)
    again = detect_drift(reference, current, ["temp", "humid"], ["carrier"], sample_rows=1000, seed=5)
    assert first.to_dict() == again.to_dict()
    assert first.rows_current == len(current)  # the input size is reported, the sample is what is compared


def test_insufficient_data(reference: pd.DataFrame, current: pd.DataFrame, spec: FeatureSpec) -> None:
    with pytest.raises(InsufficientData, match=r"current 150 \(need 200 each\)"):
        drift(reference, current.head(150), spec)
    with pytest.raises(InsufficientData, match="no feature columns"):
        detect_drift(reference, current, [], [])
    # A column without values (e.g. a join that matched nothing) is skipped, not reported as drift.
    empty_temp = current.assign(temp=np.nan)
    result = detect_drift(reference, empty_temp, ["temp", "humid"], ["carrier"], share_threshold=0.01)
    assert "temp" in result.skipped and "temp" not in result.columns and not result.drifted
    with pytest.raises(InsufficientData, match="no column has enough values"):
        detect_drift(reference, empty_temp, ["temp"], [])


def test_bad_input_names_the_column(reference: pd.DataFrame, current: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match=r"reference frame has no column\(s\) \['nope'\]"):
        detect_drift(reference, current, ["nope"], [])
    with pytest.raises(ValueError, match=r"\['carrier'\] are listed as both"):
        detect_drift(reference, current, ["carrier"], ["carrier"])
    with pytest.raises(ValueError, match="numeric drift column 'carrier'"):
        detect_drift(reference, current, ["carrier"], [])
