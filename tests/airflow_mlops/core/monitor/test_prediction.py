"""Prediction drift of each task's outputs with real Evidently: moved outputs are flagged, the same are not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.core.monitor.drift import InsufficientData
from airflow_mlops.core.monitor.prediction import output_columns
from tests.fixtures.monitoring import OUTPUT_ROWS as ROWS
from tests.fixtures.monitoring import binary_outputs as binary
from tests.fixtures.monitoring import check_outputs as check
from tests.fixtures.monitoring import multiclass_outputs as multiclass
from tests.fixtures.monitoring import regression_outputs as regression


def test_binary_probability_shift_is_flagged_and_the_same_distribution_is_not() -> None:
    reference = binary(0, 2, 5)
    same = check(reference, binary(1, 2, 5), "binary")
    assert not same.drifted and same.main.method == "wasserstein" and same.main.score < 0.1
    assert list(same.drift.columns) == ["prediction"]
    moved = check(reference, binary(2, 3, 4), "binary")  # mean P(true) 0.29 -> 0.43
    assert moved.drifted and moved.main.score > 0.3
    summary = moved.to_dict()
    assert summary["drifted"] is True and summary["score"] == moved.main.score
    assert summary["drifted_columns"] == ["prediction"] and summary["rows_current"] == ROWS


def test_regression_value_shift_is_flagged_and_the_same_distribution_is_not() -> None:
    reference = regression(0, 10.0)
    assert not check(reference, regression(1, 10.0), "regression").drifted
    moved = check(reference, regression(2, 11.0), "regression")  # half a standard deviation
    assert moved.drifted and 0.3 < moved.main.score < 0.7


def test_multiclass_class_mix_shift_is_flagged_and_the_same_mix_is_not() -> None:
    classes = ["early", "on_time", "late"]
    reference = multiclass(0, [2, 5, 2], classes)
    assert output_columns(reference, "multiclass") == (["proba.early", "proba.on_time", "proba.late"], ["prediction"])
    same = check(reference, multiclass(1, [2, 5, 2], classes), "multiclass")
    assert not same.drifted and same.main.method == "jensenshannon"
    assert set(same.drift.columns) == {"prediction", "proba.early", "proba.on_time", "proba.late"}
    moved = check(reference, multiclass(2, [2, 2, 5], classes), "multiclass")  # late becomes the common class
    assert moved.drifted and moved.main.drifted and moved.main.score > 0.1
    assert {"prediction", "proba.late"} <= set(moved.drift.drifted_columns)


def test_multiclass_probabilities_are_shown_but_the_class_mix_decides() -> None:
    reference = multiclass(0, [2, 5, 2], ["a", "b", "c"])
    current = multiclass(1, [2, 5, 2], ["a", "b", "c"])
    proba = current[["proba.a", "proba.b", "proba.c"]].to_numpy() ** 3  # surer of the same class
    current[["proba.a", "proba.b", "proba.c"]] = proba / proba.sum(axis=1, keepdims=True)
    result = check(reference, current, "multiclass")
    assert not result.drifted and not result.main.drifted
    assert "proba.b" in result.drift.drifted_columns  # reported in the table and the figures


def test_multiclass_classes_compare_as_text_and_a_missing_class_is_skipped() -> None:
    reference = multiclass(0, [3, 3, 3], [0, 1, 2])  # whole-number classes in the reference sample
    current = multiclass(1, [3, 3, 3], ["0", "1", "2"]).drop(columns="proba.2")  # text as read back
    result = check(reference, current, "multiclass")
    assert not result.drifted and "proba.2" in result.drift.skipped


def test_only_the_champions_own_outputs_count() -> None:
    reference = binary(0, 2, 5)
    # the previous model's outputs differ by design: they are left out, not read as drift
    current = pd.concat([binary(1, 2, 5), binary(2, 6, 2, version="2")], ignore_index=True)
    result = check(reference, current, "binary")
    assert not result.drifted and result.other_rows == ROWS and result.drift.rows_current == ROWS
    with pytest.raises(InsufficientData, match="too few rows"):
        check(reference, binary(3, 2, 5, version="2"), "binary")
    unscored = binary(4, 2, 5).assign(prediction=np.nan)
    with pytest.raises(InsufficientData, match="too few rows"):
        check(reference, unscored, "binary")


def test_thresholds_and_methods_are_honoured() -> None:
    reference, current = regression(0, 10.0), regression(2, 10.6)
    assert check(reference, current, "regression").drifted
    lenient = check(reference, current, "regression", numeric_threshold=0.5)
    assert not lenient.drifted and lenient.main.threshold == 0.5
    ks = check(reference, current, "regression", numeric_method="ks", numeric_threshold=0.05)
    assert ks.main.method == "ks" and ks.main.score < 0.05 and ks.drifted  # a p-value: drifted below it


def test_a_reference_without_outputs_is_insufficient_data() -> None:
    with pytest.raises(InsufficientData, match="no prediction column"):
        check(binary(0, 2, 5).drop(columns="prediction"), binary(1, 2, 5), "binary")
    with pytest.raises(InsufficientData, match="no class probabilities"):
        check(pd.DataFrame({"prediction": ["a"] * ROWS}), multiclass(1, [1, 1], ["a", "b"]), "multiclass")
