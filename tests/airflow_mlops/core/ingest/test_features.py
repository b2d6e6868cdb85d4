"""Feature build on small frames: joins, derived features, the label and its failure paths."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from airflow_mlops import settings
from airflow_mlops.config import PipelineConfigError, parse_pipeline
from airflow_mlops.core.ingest.features import FeatureBuildError, build_features
from airflow_mlops.core.ingest.labels import build_labels
from tests.fixtures.flights import inline_label_config, inline_label_data

SHIPPED = settings.pipelines_dir() / "flight_delays.yaml"
CFG = inline_label_config()  # these rows carry their outcome; the outcomes feed is test_labels.py's
TS = pd.Timestamp("2013-01-01T10:00:00Z")


def flights(**overrides) -> pd.DataFrame:
    base = {
        "year": [2013, 2013, 2013],
        "month": [1, 1, 1],
        "day": [1, 1, 1],
        "dep_time": [517.0, None, 600.0],
        "sched_dep_time": [515, 529, 600],
        "dep_delay": [2.0, None, 0.0],
        "arr_time": [830.0, None, 700.0],
        "sched_arr_time": [819, 830, 2350],
        "arr_delay": [11.0, None, 40.0],
        "carrier": ["UA", "AA", "B6"],
        "flight": [1545, 1141, 725],
        "tailnum": ["N1", None, "N3"],
        "origin": ["EWR", "JFK", "JFK"],
        "dest": ["IAH", "MIA", "BQN"],
        "air_time": [227.0, None, 50.0],
        "distance": [1400, 1089, 1576],
        "hour": [5, 5, 6],
        "minute": [15, 29, 0],
        "time_hour": [TS, TS, TS + pd.Timedelta(hours=1)],
    }
    base.update(overrides)
    return pd.DataFrame(base)


def weather() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "origin": ["EWR", "JFK"],
            "year": [2013, 2013],
            "month": [1, 1],
            "day": [1, 1],
            "hour": [5, 5],
            "temp": [39.0, 41.0],
            "dewp": [26.0, 27.0],
            "humid": [59.0, 60.0],
            "wind_dir": [270.0, 260.0],
            "wind_speed": [10.0, 12.0],
            "wind_gust": [None, None],
            "precip": [0.0, 0.1],
            "pressure": [1012.0, 1011.0],
            "visib": [10.0, 9.0],
            "time_hour": [TS, TS],
        }
    )


def planes() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "tailnum": ["N1", "N3"],
            "year": [2004.0, None],
            "type": ["a", "b"],
            "manufacturer": ["m", "n"],
            "model": ["x", "y"],
            "engines": [2, 2],
            "seats": [55, 200],
            "speed": [None, None],
            "engine": ["t", "t"],
        }
    )


def test_joins_derived_and_label() -> None:
    out = build_features(CFG, "2013-01-01", {"flights": flights(), "weather": weather(), "planes": planes()})
    assert list(out.columns[:6]) == ["ds", "carrier", "flight", "origin", "time_hour", "month"]
    assert out["ds"].unique().tolist() == ["2013-01-01"]
    row = out.set_index("carrier")
    # weather joined by origin and hour; no weather for JFK 11:00 UTC -> null, not a dropped row
    assert row.loc["UA", "temp"] == 39.0 and row.loc["AA", "temp"] == 41.0 and pd.isna(row.loc["B6", "temp"])
    assert row.loc["UA", "plane_age"] == 9 and pd.isna(row.loc["AA", "plane_seats"])
    assert row.loc["UA", "day_of_week"] == 1  # 2013-01-01 was a Tuesday
    assert row.loc["B6", "sched_block_minutes"] == (23 * 60 + 50) - 6 * 60
    # label: 40 min late -> True, 11 -> False, cancelled (no arr_delay) -> unknown
    assert row.loc["B6", "delayed"] is True or row.loc["B6", "delayed"] == True  # noqa: E712
    assert row.loc["UA", "delayed"] == False  # noqa: E712
    assert pd.isna(row.loc["AA", "delayed"])
    assert str(out["delayed"].dtype) == "boolean" and str(out["carrier"].dtype) == "string"
    assert set(CFG.feature_columns) <= set(out.columns)


def test_same_input_gives_same_output() -> None:
    frames = {"flights": flights(), "weather": weather(), "planes": planes()}
    shuffled = {**frames, "flights": frames["flights"].iloc[::-1]}
    pd.testing.assert_frame_equal(
        build_features(CFG, "2013-01-01", frames), build_features(CFG, "2013-01-01", shuffled)
    )


def test_duplicate_join_keys_are_refused() -> None:
    w = pd.concat([weather(), weather().iloc[:1]])
    with pytest.raises(FeatureBuildError, match=r"join of 'weather': 1 rows share a key \['origin', 'time_hour'\]"):
        build_features(CFG, "2013-01-01", {"flights": flights(), "weather": w, "planes": planes()})


def test_an_expression_failing_on_the_data_names_the_feature() -> None:
    data = inline_label_data()
    data["features"]["derived"]["speed"] = "distance / air_time"
    cfg = parse_pipeline(yaml.safe_dump(data), "x.yaml")
    frames = {"flights": flights().drop(columns=["air_time"]), "weather": weather(), "planes": planes()}
    with pytest.raises(FeatureBuildError, match=r"derived feature 'speed': cannot evaluate 'distance / air_time'"):
        build_features(cfg, "2013-01-01", frames)


def test_a_copied_config_with_a_refused_expression_does_not_build() -> None:
    cfg = CFG.model_copy(
        update={"features": CFG.features.model_copy(update={"derived": {"speed": "distance / air_tme"}})}
    )
    with pytest.raises(PipelineConfigError, match=r"features.derived.speed: unknown column 'air_tme'"):
        build_features(cfg, "2013-01-01", {"flights": flights(), "weather": weather(), "planes": planes()})


@pytest.mark.parametrize(
    ("task", "expr", "dtype", "values"),
    [
        ("regression", "arr_delay", "Float64", {"UA": 11.0, "B6": 40.0}),
        ("multiclass", "where(arr_delay > 15, 'late', 'on_time')", "string", {"UA": "on_time", "B6": "late"}),
        ("multiclass", "where(arr_delay > 30, 2, where(arr_delay > 15, 1, 0))", "Int64", {"UA": 0, "B6": 2}),
    ],
)
def test_the_label_of_each_task(task: str, expr: str, dtype: str, values: dict) -> None:
    data = inline_label_data()
    data["features"]["label"]["expr"] = expr
    data["train"]["task"] = task
    data["train"].pop("metric")  # the task's default primary metric
    cfg = parse_pipeline(yaml.safe_dump(data), "x.yaml")
    out = build_features(cfg, "2013-01-01", {"flights": flights(), "weather": weather(), "planes": planes()})
    row = out.set_index("carrier")
    assert str(out["delayed"].dtype) == dtype
    assert {k: row.loc[k, "delayed"] for k in values} == values
    assert pd.isna(row.loc["AA", "delayed"])  # cancelled: not known

    # The same label from an outcomes feed of its own: the same values and type, unknown ones left out.
    data = yaml.safe_load(SHIPPED.read_text())
    data["features"]["label"]["expr"] = expr
    data["train"]["task"] = task
    data["train"].pop("metric")
    late = build_labels(parse_pipeline(yaml.safe_dump(data), "x.yaml"), flights()).set_index("carrier")
    assert str(late["delayed"].dtype) == dtype and set(late.index) == set(values)
    assert {k: late.loc[k, "delayed"] for k in values} == values


def test_a_fractional_multiclass_label_is_refused() -> None:
    data = inline_label_data()
    data["features"]["label"]["expr"] = "arr_delay / 7"
    data["train"]["task"] = "multiclass"
    data["train"].pop("metric")
    cfg = parse_pipeline(yaml.safe_dump(data), "x.yaml")
    with pytest.raises(FeatureBuildError, match="multiclass label must be a text or a whole number"):
        build_features(cfg, "2013-01-01", {"flights": flights(), "weather": weather(), "planes": planes()})
