"""Base of the pipeline config models: strict (unknown keys are errors) and frozen; shared field checks."""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=60)]

CRON_PRESETS: dict[str, str] = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@quarterly": "0 0 1 */3 *",
    "@yearly": "0 0 1 1 *",
}
"""Airflow's cron presets (airflow.utils.dates.cron_presets); `@once` and `@continuous` are refused."""

CONN_ID_PATTERN = re.compile(r"^[\w#!()\-.:/\\]{1,250}$")
"""Airflow's allowed connection ids (airflow.models.connection.RE_SANITIZE_CONN_ID, at most 250 characters)."""

DOTTED_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class Strict(BaseModel):
    # forbid: a misspelt or unsupported key is an error, never silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


def check_relative_file(value: str, folder: str, suffixes: tuple[str, ...], what: str) -> str:
    """A relative path staying inside `folder` (no `..`, drive or backslash) whose name ends with one of `suffixes`."""
    path = PurePosixPath(value)
    if not value or value.startswith(("/", "\\")) or "\\" in value or ".." in path.parts or ":" in value:
        raise ValueError(f"must be a relative path inside the {folder}, without `..`")
    if not path.name.endswith(suffixes) or path.name in suffixes:
        raise ValueError(f"must be a {' or '.join(suffixes)} {what}")
    return value


def check_schedule(value: str | None) -> str | None:
    """A cron expression (5 fields) or one of CRON_PRESETS, checked as Airflow's timetable will read it."""
    if value is None:
        return None
    if value.startswith("@"):
        if value not in CRON_PRESETS:
            raise ValueError(f"unknown preset {value!r} (presets: {', '.join(CRON_PRESETS)})")
        return value
    from croniter import croniter  # the DAG's cron timetable imports it as well

    if len(value.split()) != 5 or not croniter.is_valid(value):
        raise ValueError(f"{value!r} is not a cron expression with 5 fields (minute hour day month weekday)")
    return value


def check_conn_id(value: str | None) -> str | None:
    """An Airflow connection id, by Airflow's own rule."""
    if value is not None and not CONN_ID_PATTERN.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid Airflow connection id (letters, digits and _#!()-.:/\\, 1-250 characters)"
        )
    return value
