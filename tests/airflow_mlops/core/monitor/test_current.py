"""The current window's rows: the bounded uniform sample and the join of predictions to their features."""

from __future__ import annotations

import numpy as np
import pandas as pd

from airflow_mlops.core.monitor.current import RowSample, _join_features, window_days


def test_row_sample_is_uniform_bounded_and_deterministic() -> None:
    def sample(seed: int) -> pd.DataFrame:
        s = RowSample(1000, seed)
        for part in range(50):
            s.add(pd.DataFrame({"v": np.arange(part * 400, (part + 1) * 400)}), f"part-{part}")
            assert s._held <= 2 * 1000 + 400
        assert s.seen == 20000
        return s.frame(["v"])

    first = sample(1)
    assert len(first) == 1000 and first["v"].is_unique
    assert sample(1)["v"].tolist() == first["v"].tolist()
    assert sample(2)["v"].tolist() != first["v"].tolist()
    # uniform over the parts: each tenth of the rows holds about a tenth of the sample
    counts = np.bincount(first["v"].to_numpy() // 2000, minlength=10)
    assert counts.min() > 60 and counts.max() < 140
    assert RowSample(10, 0).frame(["a", "b"]).columns.tolist() == ["a", "b"]


def test_predictions_join_their_features_by_position_or_by_key() -> None:
    keys = ["carrier", "flight", "time_hour"]
    features = pd.DataFrame(
        {"carrier": ["AA", "AA", "B6"], "flight": [1, 1, 2], "time_hour": [5, 5, 6], "temp": [1.0, 2.0, 3.0]}
    )
    predictions = features[keys].assign(prediction=[0.1, 0.2, 0.3])
    notes: list[str] = []
    by_position = _join_features(predictions, features, keys, notes, "d")
    assert by_position["temp"].tolist() == [1.0, 2.0, 3.0]  # repeated keys still join row by row
    shuffled = predictions.iloc[[2, 0]]
    by_key = _join_features(shuffled, features, keys, notes, "d")
    # the repeated key (AA, 1, 5) is ambiguous: left out rather than given the wrong features
    assert by_key[["carrier", "temp", "prediction"]].values.tolist() == [["B6", 3.0, 0.3]]
    assert _join_features(predictions, None, keys, notes, "d").empty and notes == []
    assert _join_features(predictions, features.drop(columns="flight"), keys, notes, "d").empty
    assert notes == ["d: cannot join predictions to features: no column(s) flight"]


def test_window_days_end_on_the_logical_date() -> None:
    assert window_days("2013-03-02", 3) == ["2013-02-28", "2013-03-01", "2013-03-02"]
