"""Tests of Great Expectations validation with the real suites: real days pass, every bad case is named."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from airflow_mlops import config, settings
from airflow_mlops.config import PipelineConfig
from airflow_mlops.core.ingest.landing import read_landing_csv
from airflow_mlops.core.ingest.validation import SuiteError, ValidationOutcome, date_parameters, validate_frame
from tests.fixtures.bad_corpus import BAD_CASES, EXPECTED, real_day_csv, real_planes_csv

DS = "2013-01-01"
LABEL = f"raw/flight_delays/flights/date={DS}"
REALLY_NULLABLE = {
    "flights": {"dep_time", "dep_delay", "arr_time", "arr_delay", "air_time", "tailnum"},
    "weather": {"temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "pressure"},
    "planes": {"year", "speed"},
}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cfg() -> PipelineConfig:
    return config.load_pipeline(settings.include_dir() / "pipelines" / "flight_delays.yaml")


def suite_path(cfg: PipelineConfig, source: str) -> Path:
    return settings.expectations_dir() / cfg.sources[source].suite


@pytest.fixture(scope="module")
def flights_day(cfg: PipelineConfig) -> pd.DataFrame:
    return read_landing_csv(real_day_csv("flights", DS), dict(cfg.sources["flights"].columns), "flights.csv")


@pytest.fixture(scope="module")
def flights_outcome(cfg: PipelineConfig, flights_day: pd.DataFrame) -> ValidationOutcome:
    return validate_frame(flights_day, suite_path(cfg, "flights"), date_parameters(DS))


def test_real_flights_day_passes(cfg: PipelineConfig, flights_outcome: ValidationOutcome) -> None:
    suite = json.loads(suite_path(cfg, "flights").read_text())
    assert flights_outcome.success, flights_outcome.error_message(LABEL)
    assert flights_outcome.failures == []
    assert flights_outcome.suite_name == "flights"
    assert len(flights_outcome.checks) == len(suite["expectations"])
    assert flights_outcome.statistics["unsuccessful_expectations"] == 0
    assert not flights_outcome.detailed  # a passing run stays BOOLEAN_ONLY
    assert flights_outcome.result["success"] is True
    json.dumps(flights_outcome.result)  # JSON-able as documented
    assert (
        flights_outcome.error_message(LABEL)
        == f"{LABEL}: all {len(suite['expectations'])} expectations of suite 'flights' passed"
    )


def test_checks_follow_suite_order(cfg: PipelineConfig, flights_outcome: ValidationOutcome) -> None:
    suite = json.loads(suite_path(cfg, "flights").read_text())
    assert [c.expectation_type for c in flights_outcome.checks] == [e["type"] for e in suite["expectations"]]


def test_real_weather_and_planes_pass(cfg: PipelineConfig) -> None:
    weather = read_landing_csv(real_day_csv("weather", DS), dict(cfg.sources["weather"].columns), "weather.csv")
    outcome = validate_frame(weather, suite_path(cfg, "weather"), date_parameters(DS))
    assert outcome.success, outcome.error_message("weather")
    planes = read_landing_csv(real_planes_csv(), dict(cfg.sources["planes"].columns), "planes.csv")
    outcome = validate_frame(planes, suite_path(cfg, "planes"), date_parameters(DS))
    assert outcome.success, outcome.error_message("planes")


def test_always_detailed_reports_observed_values(cfg: PipelineConfig, flights_day: pd.DataFrame) -> None:
    outcome = validate_frame(flights_day, suite_path(cfg, "flights"), date_parameters(DS), always_detailed=True)
    assert outcome.success and outcome.detailed
    by_kind = {(c.expectation_type, c.column): c for c in outcome.checks}
    assert by_kind[("expect_table_row_count_to_be_between", None)].observed == "observed 842"
    assert by_kind[("expect_column_values_to_be_in_type_list", "dep_delay")].observed == "dtype float64"
    assert by_kind[("expect_column_values_to_not_be_null", "carrier")].observed == "0 null values of 842 rows"
    # The date parameters are resolved into the rule.
    year_rules = [c.rule for c in outcome.checks if c.column == "year" and "between" in c.expectation_type]
    assert year_rules == ["min_value=2013, max_value=2013"]


def test_parquet_round_trip_keeps_validity(cfg: PipelineConfig, flights_day: pd.DataFrame) -> None:
    # The ingest DAG validates the raw Parquet partition, not the frame read from the CSV.
    buf = io.BytesIO()
    flights_day.to_parquet(buf, index=False, engine="pyarrow")
    back = pd.read_parquet(io.BytesIO(buf.getvalue()), engine="pyarrow")
    outcome = validate_frame(back, suite_path(cfg, "flights"), date_parameters(DS))
    assert outcome.success, outcome.error_message("round trip")


@pytest.mark.parametrize("case", [c for c, e in EXPECTED.items() if e.stage == "validate"])
def test_bad_case_fails_naming_column_and_rule(cfg: PipelineConfig, case: str) -> None:
    bad = BAD_CASES[case](real_day_csv("flights", DS))
    df = read_landing_csv(bad, dict(cfg.sources["flights"].columns), "flights.csv")
    outcome = validate_frame(df, suite_path(cfg, "flights"), date_parameters(DS))
    assert not outcome.success
    assert outcome.detailed  # a failure triggers the detailed rerun
    message = outcome.error_message(LABEL)
    assert message.startswith(f"{LABEL}: {len(outcome.failures)} expectation")
    for part in EXPECTED[case].contains:
        assert part in message, message
    assert all(f.observed for f in outcome.failures), message


def test_wrong_type_survives_parquet(cfg: PipelineConfig) -> None:
    bad = BAD_CASES["wrong_type"](real_day_csv("flights", DS))
    df = read_landing_csv(bad, dict(cfg.sources["flights"].columns), "flights.csv")
    buf = io.BytesIO()
    df.to_parquet(buf, index=False, engine="pyarrow")
    back = pd.read_parquet(io.BytesIO(buf.getvalue()), engine="pyarrow")
    message = validate_frame(back, suite_path(cfg, "flights"), date_parameters(DS)).error_message(LABEL)
    for part in EXPECTED["wrong_type"].contains:
        assert part in message, message


def test_every_failure_is_in_the_message(cfg: PipelineConfig, flights_day: pd.DataFrame) -> None:
    df = flights_day.copy()
    df.loc[:4, "hour"] = 99
    df = df.drop(columns=["minute"])
    outcome = validate_frame(df, suite_path(cfg, "flights"), date_parameters("2013-01-02"))
    message = outcome.error_message(LABEL)
    failed = {(f.column, f.expectation_type) for f in outcome.failures}
    assert ("hour", "expect_column_values_to_be_between") in failed
    assert ("minute", "expect_column_values_to_not_be_null") in failed
    assert ("day", "expect_column_values_to_be_between") in failed
    assert (None, "expect_table_columns_to_match_set") in failed
    for f in outcome.failures:
        assert f.describe() in message
    assert "[hour] expect_column_values_to_be_between (min_value=0, max_value=23): 5 unexpected values" in message
    assert "[table] expect_table_columns_to_match_set" in message and "missing [minute]" in message
    assert "[day] expect_column_values_to_be_between (min_value=2, max_value=2): 842 unexpected values" in message


def test_missing_suite_parameter_is_an_error(cfg: PipelineConfig, flights_day: pd.DataFrame) -> None:
    with pytest.raises(SuiteError, match=r"flights\.json: suite parameters \['day'\] are used"):
        validate_frame(flights_day, suite_path(cfg, "flights"), {"year": 2013, "month": 1})


def test_unreadable_suite_names_the_file(tmp_path: Path, flights_day: pd.DataFrame) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(SuiteError, match=r"broken\.json: cannot read the suite"):
        validate_frame(flights_day, broken, {})
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"name": "x", "expectations": [{"type": "expect_no_such_thing", "kwargs": {}}]}))
    # GX itself would only log this and drop the expectation, leaving a suite that checks less.
    with pytest.raises(SuiteError, match=r"wrong.json: expectation 1 \(expect_no_such_thing\) is not valid"):
        validate_frame(flights_day, wrong, {})
    typo = tmp_path / "typo.json"
    typo.write_text(
        json.dumps(
            {
                "name": "x",
                "expectations": [
                    {"type": "expect_column_values_to_be_between", "kwargs": {"column": "hour", "min_vale": 0}}
                ],
            }
        )
    )
    with pytest.raises(SuiteError, match=r"typo.json: expectation 1 \(expect_column_values_to_be_between\)"):
        validate_frame(flights_day, typo, {})


def test_edited_suite_file_is_reloaded(tmp_path: Path, flights_day: pd.DataFrame) -> None:
    path = tmp_path / "s.json"
    suite: dict[str, Any] = {
        "name": "s",
        "expectations": [
            {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1, "max_value": 10_000}}
        ],
    }
    path.write_text(json.dumps(suite))
    assert validate_frame(flights_day, path, {}).success
    suite["expectations"][0]["kwargs"]["max_value"] = 10
    path.write_text(json.dumps(suite, indent=1))  # a different size, so a new cache key even at equal mtime
    assert not validate_frame(flights_day, path, {}).success


@pytest.mark.parametrize("source", ["flights", "weather", "planes"])
def test_suites_match_the_declared_columns(cfg: PipelineConfig, source: str) -> None:
    """Suite and pipeline config must agree: the column set, one type check per column, not-null where needed."""
    suite = json.loads(suite_path(cfg, source).read_text())
    declared = dict(cfg.sources[source].columns)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for e in suite["expectations"]:
        by_type.setdefault(e["type"], []).append(e["kwargs"])
    assert by_type["expect_table_columns_to_match_set"] == [{"column_set": list(declared), "exact_match": True}]
    typed = [
        k["column"]
        for t in ("expect_column_values_to_be_in_type_list", "expect_column_values_to_be_of_type")
        for k in by_type.get(t, [])
    ]
    assert sorted(typed) == sorted(declared)
    not_null = {k["column"] for k in by_type["expect_column_values_to_not_be_null"]}
    assert not_null == set(declared) - REALLY_NULLABLE[source]
    assert len(by_type["expect_table_row_count_to_be_between"]) == 1
