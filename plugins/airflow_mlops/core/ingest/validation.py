"""Great Expectations 1.x validation of a typed frame against a suite file, with failures named by column and rule."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

# Before GX is imported: it reads these when its first context is made.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import great_expectations as gx
from great_expectations.data_context.types.base import ProgressBarsConfig
from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

from airflow_mlops.core.ingest.landing import UNCONVERTIBLE_ATTR

DETAILED_RESULT_FORMAT: dict[str, Any] = {"result_format": "SUMMARY", "partial_unexpected_count": 5}
"""Result format of the second run, made only when the quick BOOLEAN_ONLY run fails."""

_HIDDEN_KWARGS = frozenset(
    {
        "column",
        "column_list",
        "column_A",
        "column_B",
        "batch_id",
        "result_format",
        "catch_exceptions",
        "include_config",
        "meta",
    }
)
_SHOWN_VALUES = 5
_ORDER_KEY = "airflow_mlops_order"


class SuiteError(ValueError):
    """A suite file that cannot be used: unreadable, not a GX suite, or missing a suite parameter."""


@dataclass(frozen=True)
class Check:
    """The result of one expectation, reduced to what a person needs to read."""

    expectation_type: str
    columns: tuple[str, ...]
    """Columns it checks; empty for a table-level expectation (row count, column set)."""
    rule: str
    """Its parameters after suite parameters are resolved, e.g. `min_value=1, max_value=12`."""
    success: bool
    observed: str
    """What was found: unexpected counts and examples, the observed value, or '' when not computed."""
    notes: str = ""

    @property
    def column(self) -> str | None:
        """The column, the columns joined by ', ', or None for a table-level expectation."""
        return ", ".join(self.columns) or None

    def describe(self) -> str:
        """One line: `[column] expectation_type (rule): observed`."""
        where = f"[{self.column}]" if self.columns else "[table]"
        rule = f" ({self.rule})" if self.rule else ""
        observed = f": {self.observed}" if self.observed else ""
        return f"{where} {self.expectation_type}{rule}{observed}"


@dataclass
class ValidationOutcome:
    """The verdict of a suite on one frame, its checks in suite order and GX's own result."""

    success: bool
    suite_name: str
    checks: list[Check]
    statistics: dict[str, Any]
    result: dict[str, Any]
    """GX's ExpectationSuiteValidationResult as a JSON-able dict (the detailed run's, if one was made)."""
    parameters: dict[str, Any] = field(default_factory=dict)
    detailed: bool = False
    """True when observed values were computed (a SUMMARY run), False after a passing BOOLEAN_ONLY run."""

    @property
    def failures(self) -> list[Check]:
        """The checks that failed, in suite order."""
        return [c for c in self.checks if not c.success]

    def error_message(self, file_label: str) -> str:
        """One message naming the file and every failed expectation with its column, rule and findings."""
        failures = self.failures
        if not failures:
            return f"{file_label}: all {len(self.checks)} expectations of suite {self.suite_name!r} passed"
        noun = "expectation" if len(failures) == 1 else "expectations"
        body = "; ".join(f.describe() for f in failures)
        return f"{file_label}: {len(failures)} {noun} of suite {self.suite_name!r} failed: {body}"


def validate_frame(
    df: pd.DataFrame, suite_path: Path, parameters: dict[str, Any], *, always_detailed: bool = False
) -> ValidationOutcome:
    """Validate a frame (as `read_landing_csv` makes it) against a GX suite file.

    Args:
        df: the data; `df.attrs` from ingest adds the unconvertible values to type failures.
        suite_path: an ExpectationSuite JSON file (include/expectations/<name>.json).
        parameters: values of the suite's `{"$PARAMETER": name}` references, e.g. `date_parameters(ds)`.
            Parameters the suite does not use are ignored; one it uses and is not given is a SuiteError.
        always_detailed: compute observed values even when everything passes (slower, for a full report).

    The suite first runs with BOOLEAN_ONLY (no unexpected values collected: about half the time of SUMMARY
    on 1M rows); only when it fails, or when asked, it
    runs again with SUMMARY to find unexpected counts and examples.
    """
    suite, suite_json = _load_suite(suite_path)
    missing = sorted(_parameter_names(suite_json) - set(parameters))
    if missing:
        raise SuiteError(f"{suite_path}: suite parameters {missing} are used by the suite but were not given")
    params = dict(parameters)
    result = _run(df, suite, params, "BOOLEAN_ONLY")
    detailed = False
    if always_detailed or not result.success:
        result = _run(df, suite, params, DETAILED_RESULT_FORMAT)
        detailed = True
    return _outcome(result, suite_json, df, params, detailed)


def date_parameters(ds: str) -> dict[str, int]:
    """Suite parameters of a logical date `YYYY-MM-DD`: {"year", "month", "day"} as ints."""
    year, month, day = (int(part) for part in ds.split("-"))
    return {"year": year, "month": month, "day": day}


# --- GX plumbing: one ephemeral context, data source and batch definition per process -------------

_LOCK = threading.Lock()
_BATCH_DEFINITION: Any = None
_SUITES: dict[tuple[str, int, int], tuple[Any, dict[str, Any]]] = {}


def _batch_definition() -> Any:
    global _BATCH_DEFINITION
    if _BATCH_DEFINITION is None:
        context = gx.get_context(mode="ephemeral")
        context.enable_analytics(False)
        context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        asset = context.data_sources.add_pandas("airflow_mlops").add_dataframe_asset("frame")
        _BATCH_DEFINITION = asset.add_batch_definition_whole_dataframe("whole_frame")
    return _BATCH_DEFINITION


def _run(df: pd.DataFrame, suite: Any, params: dict[str, Any], result_format: Any) -> Any:
    # GX keeps the current context and validators in process-wide state: one validation at a time.
    with _LOCK:
        batch = _batch_definition().get_batch(batch_parameters={"dataframe": df})
        return batch.validate(suite, result_format=result_format, expectation_parameters=params)


def check_suite(path: Path) -> None:
    """Raise SuiteError when Great Expectations would not accept the suite file (what validation would hit)."""
    _load_suite(path)


def _load_suite(path: Path) -> tuple[Any, dict[str, Any]]:
    """The suite object and its JSON, cached per file version (parsing builds pydantic models)."""
    try:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
        if key in _SUITES:
            return _SUITES[key]
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SuiteError(f"{path}: cannot read the suite: {exc}") from exc
    if not isinstance(raw, dict):
        raise SuiteError(f"{path}: a suite must be a JSON object, got {type(raw).__name__}")
    entries = raw.get("expectations")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise SuiteError(f"{path}: not a Great Expectations suite: 'expectations' must be a list of objects")
    with _LOCK:
        _batch_definition()  # building a suite needs an active context
        expectations = []
        for i, entry in enumerate(entries):
            # Built one by one: ExpectationSuite() itself only logs an invalid expectation and drops it.
            # The index in meta restores suite order (GX returns results grouped by column).
            try:
                conf = ExpectationConfiguration(**{**entry, "meta": {**(entry.get("meta") or {}), _ORDER_KEY: i}})
                expectations.append(conf.to_domain_obj())
            except Exception as exc:  # GX raises many kinds (pydantic, TypeError, its own) for a bad entry
                kind = entry.get("type", "(no type)")
                raise SuiteError(f"{path}: expectation {i + 1} ({kind}) is not valid: {exc}") from exc
        try:
            suite = gx.ExpectationSuite(**{**raw, "expectations": expectations})
        except Exception as exc:
            raise SuiteError(f"{path}: not a Great Expectations suite: {exc}") from exc
        if len(suite.expectations) != len(entries):
            raise SuiteError(f"{path}: {len(entries) - len(suite.expectations)} expectations were not accepted by GX")
    _SUITES[key] = (suite, raw)
    return suite, raw


def _parameter_names(node: Any) -> set[str]:
    if isinstance(node, dict):
        if set(node) == {"$PARAMETER"}:
            return {str(node["$PARAMETER"])}
        return set().union(*(_parameter_names(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_parameter_names(v) for v in node))
    return set()


# --- From GX's result to checks ------------------------------------------------------------------


def _outcome(
    result: Any, suite_json: dict[str, Any], df: pd.DataFrame, params: dict[str, Any], detailed: bool
) -> ValidationOutcome:
    checks = []
    for res in sorted(result.results, key=lambda r: int((r.expectation_config.meta or {}).get(_ORDER_KEY, 0))):
        config = res.expectation_config
        kwargs = dict(config.kwargs)
        checks.append(
            Check(
                expectation_type=config.type,
                columns=_columns(kwargs),
                rule=_rule(kwargs),
                success=bool(res.success),
                observed=_observed(config.type, kwargs, res, df, detailed),
                notes=str((config.meta or {}).get("notes", "")),
            )
        )
    return ValidationOutcome(
        success=bool(result.success),
        suite_name=str(result.suite_name or suite_json.get("name", "")),
        checks=checks,
        statistics=dict(result.statistics),
        result=result.to_json_dict(),
        parameters=params,
        detailed=detailed,
    )


def _columns(kwargs: dict[str, Any]) -> tuple[str, ...]:
    if "column" in kwargs:
        return (str(kwargs["column"]),)
    if "column_list" in kwargs:
        return tuple(str(c) for c in kwargs["column_list"])
    return tuple(str(kwargs[k]) for k in ("column_A", "column_B") if k in kwargs)


def _rule(kwargs: dict[str, Any]) -> str:
    parts = [f"{k}={_fmt(v)}" for k, v in kwargs.items() if k not in _HIDDEN_KWARGS and v is not None]
    return ", ".join(parts)


def _fmt(value: Any, limit: int = 8) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | tuple | set):
        items = [_fmt(v) for v in value]
        if len(items) > limit:
            return f"[{', '.join(items[:3])}, ... {len(items)} values]"
        return f"[{', '.join(items)}]"
    if isinstance(value, dict) and "$PARAMETER" in value:
        return f"${value['$PARAMETER']}"
    return str(value)


def _observed(kind: str, kwargs: dict[str, Any], res: Any, df: pd.DataFrame, detailed: bool) -> str:
    columns = _columns(kwargs)
    absent = [c for c in columns if c not in df.columns]
    if absent:
        return f"column {', '.join(absent)} is missing" if len(absent) == 1 else f"columns {absent} are missing"
    if kind in ("expect_column_values_to_be_in_type_list", "expect_column_values_to_be_of_type") and columns:
        return _type_observed(df, columns[0]) if not res.success or detailed else ""
    unconvertible = df.attrs.get(UNCONVERTIBLE_ATTR) or {}
    text_columns = [c for c in columns if c in unconvertible]
    if text_columns and not res.success:
        declared = unconvertible[text_columns[0]]["type"]
        return f"not checkable: {', '.join(text_columns)} holds values that are not {declared}"
    error = _exception_message(res.exception_info)
    if error:
        return f"error: {error}"
    if not detailed:
        return ""
    found = res.result or {}
    if kind == "expect_table_columns_to_match_set":
        mismatched = (found.get("details") or {}).get("mismatched") or {}
        parts = [
            f"{label} {_fmt(sorted(mismatched[key]), limit=50)}"
            for key, label in (("missing", "missing"), ("unexpected", "unexpected"))
            if mismatched.get(key)
        ]
        return "; ".join(parts) or f"observed {_fmt(found.get('observed_value'), limit=50)}"
    if "unexpected_count" in found:
        return _map_observed(kind, found)
    if "observed_value" in found:
        return f"observed {_fmt(found['observed_value'])}"
    return ""


def _exception_message(info: Any) -> str:
    """The first line of an exception GX caught; its info is flat, or keyed by the metric that raised."""
    if not isinstance(info, dict):
        return ""
    entries = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, dict)]
    for entry in entries:
        if entry.get("raised_exception"):
            lines = str(entry.get("exception_message") or "").strip().splitlines()
            return lines[0] if lines else "unknown error"
    return ""


def _type_observed(df: pd.DataFrame, column: str) -> str:
    text = f"dtype {df[column].dtype}"
    problem = (df.attrs.get(UNCONVERTIBLE_ATTR) or {}).get(column)
    if problem:
        if problem.get("examples"):
            rows = ", ".join(str(r) for r in problem["rows"])
            examples = ", ".join(repr(v) for v in problem["examples"])
            text += f"; {problem['count']} values are not {problem['type']}, e.g. {examples} (data rows {rows})"
        elif problem.get("reason"):
            text += f"; not {problem['type']}: {problem['reason']}"
    return text


def _map_observed(kind: str, found: dict[str, Any]) -> str:
    count = int(found.get("unexpected_count") or 0)
    total = found.get("element_count")
    examples = found.get("partial_unexpected_list") or []
    if kind == "expect_column_values_to_not_be_null":
        return f"{_n(count, 'null value')} of {_n(total, 'row')}"
    if kind == "expect_compound_columns_to_be_unique":
        keys = ", ".join(
            "(" + ", ".join(str(v) for v in row.values()) + ")" if isinstance(row, dict) else str(row)
            for row in examples[:_SHOWN_VALUES]
        )
        return _n(count, "duplicated row") + (f", e.g. {keys}" if keys else "")
    text = f"{_n(count, 'unexpected value')} of {_n(total, 'row')}"
    if found.get("unexpected_percent") is not None:
        text += f" ({found['unexpected_percent']:.1f}%)"
    # Distinct values of GX's sample (its partial_unexpected_counts count within that sample only).
    shown = [_fmt_value(v) for v in dict.fromkeys(_hashable(v) for v in examples)][:_SHOWN_VALUES]
    if shown:
        text += ", e.g. " + ", ".join(shown)
    return text


def _n(count: Any, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _fmt_value(value: Any) -> str:
    return repr(value) if isinstance(value, str) else _fmt(value)


def _hashable(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool | None) else str(value)
