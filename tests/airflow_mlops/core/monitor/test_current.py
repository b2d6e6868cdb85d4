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


def test_late_labels_judge_only_the_predictions_and_requests_whose_outcome_landed(lake_root, flights_cfg) -> None:
    """flight_delays' labels come from the outcomes feed: quality joins them by flight key and hour to the batch
    predictions and to the logged requests that carried the key; rows without a landed outcome are not judged."""
    from airflow_mlops.config import PipelineConfig
    from airflow_mlops.core.lake import paths
    from airflow_mlops.core.lake.storage import open_lake
    from airflow_mlops.core.monitor.current import load_current
    from tests.fixtures.training_data import synthetic_features

    data = flights_cfg.model_dump(mode="json")
    data["monitor"]["window_days"] = 3
    data["monitor"]["quality"]["label_delay_days"] = 0  # judged as soon as the outcome lands
    cfg = PipelineConfig.model_validate(data)
    lake = open_lake(str(lake_root))
    days = ["2013-03-01", "2013-03-02", "2013-03-03"]
    rows = synthetic_features(cfg, days, rows_per_day=40, seed=3).drop_duplicates(["carrier", "flight", "origin"])
    keys = ["carrier", "flight", "origin", "time_hour"]
    for ds, part in rows.groupby("ds"):
        part = part.reset_index(drop=True)
        lake.write_parquet(
            lake.uri(paths.features(cfg.name, ds)), part.assign(delayed=pd.NA).astype({"delayed": "boolean"})
        )
        lake.write_parquet(
            lake.uri(paths.predictions(cfg.name, ds)),
            part[["ds", *keys]].assign(prediction=0.5, model_name="m", model_version="3"),
        )
    # The outcomes of 03-01 landed on 03-02 (all known), those of 03-02 on 03-03 (half of them); 03-03's are to come.
    first, second = rows[rows.ds == days[0]], rows[rows.ds == days[1]]
    lake.write_parquet(lake.uri(paths.labels(cfg.name, days[1])), first[[*keys, "delayed"]].dropna())
    half = second.iloc[: len(second) // 2]
    lake.write_parquet(lake.uri(paths.labels(cfg.name, days[2])), half[[*keys, "delayed"]].dropna())
    # Requests of 03-01 to the model server: one carried the flight key (its hour as the ISO text a client
    # sends), one did not.
    served = first.iloc[:2][list(dict.fromkeys([*keys, *cfg.feature_columns]))].reset_index(drop=True)
    served = served.assign(prediction=0.9, model_version="3", model_name="m")
    sent = served.iloc[:1].assign(time_hour=served["time_hour"].iloc[:1].dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    lake.write_parquet(lake.uri(paths.inference_log_partition(cfg.name, days[0]) + "/a.parquet"), sent)
    lake.write_parquet(
        lake.uri(paths.inference_log_partition(cfg.name, days[0]) + "/b.parquet"),
        served.iloc[1:].drop(columns=["flight"]),
    )

    current = load_current(lake, cfg, days[2], ["temp"], ["carrier"], "3")
    batch = int(first["delayed"].notna().sum()) + int(half["delayed"].notna().sum())
    assert current.label_landings == days[1:]
    assert current.served_labelled_rows == int(first.iloc[:1]["delayed"].notna().sum()) == 1
    assert len(current.quality) == batch + 1
    assert current.unlabelled_rows == len(rows) - batch  # 03-03, half of 03-02 and the cancelled flights
    assert sorted(current.quality["prediction"].unique()) == [0.5, 0.9]
