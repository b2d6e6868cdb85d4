"""What a source's Great Expectations suite says about its columns, checked against the declared columns.

Read as plain JSON (no Great Expectations import): every column an expectation names must be declared by the
source, with a type the expectation can hold. `python -m airflow_mlops validate` runs these checks.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

DTYPE_NAMES: dict[str, frozenset[str]] = {
    "int64": frozenset({"int", "int64", "Int64", "Int64Dtype"}),
    "float64": frozenset({"float", "float64", "Float64", "Float64Dtype"}),
    "string": frozenset({"str", "string", "StringDtype"}),
    "bool": frozenset({"bool", "boolean", "BooleanDtype"}),
    "datetime": frozenset({"Timestamp", "datetime64", "datetime64[ns]", "datetime64[ns, UTC]", "DatetimeTZDtype"}),
}
"""Names a type expectation may use for the pandas dtypes each declared type becomes at ingest."""

NUMERIC = frozenset({"int64", "float64"})
TEXT = frozenset({"string"})

NUMERIC_EXPECTATIONS = frozenset(
    {
        "expect_column_mean_to_be_between",
        "expect_column_median_to_be_between",
        "expect_column_stdev_to_be_between",
        "expect_column_sum_to_be_between",
        "expect_column_quantile_values_to_be_between",
    }
)
TEXT_EXPECTATIONS = frozenset(
    {
        "expect_column_values_to_match_regex",
        "expect_column_values_to_not_match_regex",
        "expect_column_values_to_match_regex_list",
        "expect_column_values_to_not_match_regex_list",
        "expect_column_values_to_match_like_pattern",
        "expect_column_values_to_not_match_like_pattern",
        "expect_column_value_lengths_to_be_between",
        "expect_column_value_lengths_to_equal",
    }
)
BOUNDED_EXPECTATIONS = frozenset(
    {"expect_column_values_to_be_between", "expect_column_min_to_be_between", "expect_column_max_to_be_between"}
)
SUITE_PARAMETERS = frozenset({"year", "month", "day"})
"""The `{"$PARAMETER": name}` values ingest gives a suite: the logical date's parts."""


class SuiteReadError(ValueError):
    """The suite file is not JSON holding a list of expectations."""


def read_suite(path: Path) -> list[dict[str, Any]]:
    """The expectations of a suite file (type and kwargs of each)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SuiteReadError(f"cannot read the suite {path}: {exc}") from exc
    entries = raw.get("expectations") if isinstance(raw, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise SuiteReadError(f"{path} is not a suite: 'expectations' must be a list of objects")
    return entries


def _columns(kwargs: Mapping[str, Any]) -> Iterator[str]:
    for key in ("column", "column_A", "column_B"):
        if isinstance(kwargs.get(key), str):
            yield kwargs[key]
    for key in ("column_list", "column_set"):
        if isinstance(kwargs.get(key), list):
            yield from (c for c in kwargs[key] if isinstance(c, str))


def _parameters(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if set(node) == {"$PARAMETER"}:
            yield str(node["$PARAMETER"])
        else:
            for value in node.values():
                yield from _parameters(value)
    elif isinstance(node, list):
        for value in node:
            yield from _parameters(value)


def _bound_kinds(kwargs: Mapping[str, Any]) -> frozenset[str] | None:
    """Declared types a `min_value`/`max_value` pair can be compared with (None: anything)."""
    bounds = [kwargs.get(k) for k in ("min_value", "max_value") if kwargs.get(k) is not None]
    if not bounds:
        return None
    if all((isinstance(b, int | float) and not isinstance(b, bool)) or isinstance(b, dict) for b in bounds):
        return NUMERIC  # suite parameters are the logical date's year, month and day: integers
    if all(isinstance(b, str) for b in bounds):
        return frozenset({"datetime", "string"})
    return None


def suite_problems(
    entries: list[dict[str, Any]], declared: Mapping[str, str], source: str
) -> list[tuple[str | None, str]]:
    """Problems of a suite against a source's declared columns, as (declared column or None, message)."""
    problems: list[tuple[str | None, str]] = []
    for i, entry in enumerate(entries, 1):
        kind = str(entry.get("type") or entry.get("expectation_type") or "(no type)")
        kwargs: dict[str, Any] = entry["kwargs"] if isinstance(entry.get("kwargs"), dict) else {}
        where = f"expectation {i} ({kind})"
        for name in sorted(set(_parameters(kwargs)) - SUITE_PARAMETERS):
            problems.append((None, f"{where} uses suite parameter {name!r}; ingest gives only year, month, day"))
        for column in _columns(kwargs):
            if column not in declared:
                problems.append((None, f"{where} names column {column!r}, not declared by source {source!r}"))
        exact = kind.endswith("ordered_list") or (kind.endswith("match_set") and kwargs.get("exact_match", True))
        if kind.startswith("expect_table_columns_to_match") and exact:
            listed = set(_columns(kwargs))
            for name in declared:
                if name not in listed:
                    problems.append((name, f"{where} does not list this declared column: every batch fails"))
        target = kwargs.get("column")
        if not isinstance(target, str) or target not in declared:
            continue
        dtype = declared[target]
        wanted: frozenset[str] | None = None
        if kind == "expect_column_values_to_be_in_type_list" and isinstance(kwargs.get("type_list"), list):
            names = {str(t) for t in kwargs["type_list"]}
            if not names & DTYPE_NAMES[dtype]:
                problems.append((target, f"{where} wants one of {sorted(names)}; the column is declared {dtype}"))
        elif kind == "expect_column_values_to_be_of_type" and kwargs.get("type_") is not None:
            if str(kwargs["type_"]) not in DTYPE_NAMES[dtype]:
                problems.append((target, f"{where} wants {kwargs['type_']}; the column is declared {dtype}"))
        elif kind in NUMERIC_EXPECTATIONS:
            wanted = NUMERIC
        elif kind in TEXT_EXPECTATIONS:
            wanted = TEXT
        elif kind in BOUNDED_EXPECTATIONS:
            wanted = _bound_kinds(kwargs)
        if wanted is not None and dtype not in wanted:
            needed = " or ".join(sorted(wanted))
            problems.append((target, f"{where} needs a {needed} column; the column is declared {dtype}"))
    return problems
