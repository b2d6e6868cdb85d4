"""Request bodies of /predict: JSON read within the row limit, each row checked against the served model's inputs."""

from __future__ import annotations

import json
import math
import operator
import re
import reprlib
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

from airflow_mlops.serving.inference_log import Logged

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # what the Parquet inference log can hold as an integer
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_ROWS_START = re.compile(r'[ \t\n\r]*\{[ \t\n\r]*"rows"[ \t\n\r]*:[ \t\n\r]*\[')
_DECODER = json.JSONDecoder()
_SHOW = reprlib.Repr()
_SHOW.maxstring = 60
_SHOW.maxother = 60
_SHOW.maxlevel = 2  # values in error messages: short, and never recursing into a deeply nested one


class RequestError(Exception):
    """A request the server refuses: HTTP status and a message naming the field or the problem."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Inputs(Logged, Protocol):
    """What the checks need of a served model: its input columns by kind, its name and version."""

    @property
    def categorical(self) -> tuple[str, ...]: ...
    @property
    def numeric(self) -> tuple[str, ...]: ...


class Rows(NamedTuple):
    """A request's rows, checked against its form (the model's feature columns, or its base columns)."""

    rows: list[dict[str, Any]]
    form: Inputs
    field: str  # the request field holding them, as error messages name it (rows, dataframe_records, ...)
    exact: bool  # False: integers are not range-checked yet (see `parse_rows`)
    keys: list[dict[str, Any]] | None = None  # the `keys` a client sent with the rows (`checked_keys`)


def show(value: Any) -> str:
    """A value for an error message: its type and a short repr."""
    return f"{type(value).__name__} {_SHOW.repr(value)}"


def field_name(key: str) -> str:
    """A field name for an error message: as it is, unless long or unprintable."""
    return key if len(key) <= 60 and key.isprintable() else _SHOW.repr(key)


def decode(body: bytes) -> str:
    """The body as text; 400 unless it is UTF-8 (so strings hold no surrogates but those of \\u escapes)."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(400, f"request body is not UTF-8 text: byte {exc.start} is invalid") from exc


def load_payload(text: str, max_rows: int, columns: int = 1) -> Any:
    """The JSON document; the rows of one that may hold more than `max_rows` rows of `columns` fields are
    counted while parsing, and the request refused with 413 at the first row over the limit, without
    reading (or allocating) the rest.

    Parsed whole at once (faster): a document with fewer commas than `max_rows` x `columns`, i.e. fewer
    values than the largest valid request (rows over the limit are then refused after parsing).
    """
    try:
        # n rows of k fields are separated by n x k - 1 commas: any batch of more than `max_rows` such rows
        # is counted, and a document parsed whole holds fewer values than a valid one may.
        if text.count(",") >= max_rows * max(columns, 1):
            start = _ROWS_START.match(text)
            if start is not None:
                rows = _count_rows(text, start.end(), max_rows)
                if rows is not None:
                    return {"rows": rows}
        return json.loads(text)
    except RecursionError as exc:
        raise RequestError(400, "request body is not valid JSON: nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, and int() of a number over Python's digit limit
        raise RequestError(400, f"request body is not valid JSON: {str(exc)[:200]}") from exc


def _count_rows(text: str, at: int, max_rows: int) -> list[Any] | None:
    """The elements of the 'rows' list starting at `at`, one by one; None when the document goes on after
    the list (the caller then parses it whole: it has at most `max_rows` rows)."""
    rows: list[Any] = []
    at = _WHITESPACE.match(text, at).end()  # type: ignore[union-attr]
    if text.startswith("]", at):
        at += 1
    else:
        while True:
            row, at = _DECODER.raw_decode(text, at)
            rows.append(row)
            if len(rows) > max_rows:
                raise RequestError(413, f"'rows' has more than {max_rows} rows; at most {max_rows} per request")
            at = _WHITESPACE.match(text, at).end()  # type: ignore[union-attr]
            if text.startswith(",", at):
                at = _WHITESPACE.match(text, at + 1).end()  # type: ignore[union-attr]
            elif text.startswith("]", at):
                at += 1
                break
            else:
                raise ValueError(f"expected ',' or ']' after rows[{len(rows) - 1}] at character {at}")
    at = _WHITESPACE.match(text, at).end()  # type: ignore[union-attr]
    if text.startswith("}", at) and not text[at + 1 :].strip(" \t\n\r"):
        return rows
    return None


def parse_rows(body: bytes, served: Inputs, max_rows: int, key_columns: Sequence[str] = ()) -> Rows:
    """The request's rows, each holding exactly the columns of one form with values of the right type, and the
    optional `keys`: one object of the pipeline's `key_columns` per row, kept in the inference log so the
    monitor can join the outcomes that land later (`checked_keys`).

    `exact` False means integers were not range-checked yet (the column-wise check leaves that to the fast
    path, which looks at each number anyway; `check_rows(rows, form, field)` does it otherwise).
    RequestError names the row and the field of the first problem.
    """
    text = decode(body)
    payload = load_payload(text, max_rows, len(served.columns))
    if not isinstance(payload, dict) or "rows" not in payload:
        raise RequestError(422, 'request body must be a JSON object {"rows": [{feature: value, ...}, ...]}')
    extra_keys = sorted(set(payload) - {"rows", "keys"})
    if extra_keys:
        names = ", ".join(field_name(k) for k in extra_keys[:5])
        raise RequestError(422, f"unknown top-level field(s): {names} (only 'rows' and 'keys' are accepted)")
    parsed = checked_rows(payload["rows"], served, max_rows, "rows", "\\u" not in text)
    if "keys" not in payload:
        return parsed
    return parsed._replace(keys=checked_keys(payload["keys"], len(parsed.rows), key_columns))


def checked_keys(keys: Any, rows: int, columns: Sequence[str]) -> list[dict[str, Any]]:
    """`keys`: a list of one object per row holding exactly `columns` (the pipeline's features.key and timestamp),
    each a string (a time as ISO 8601 text), a number or null. RequestError names the first problem."""
    if not columns:
        raise RequestError(422, "'keys' is not accepted here: the pipeline declares no key columns")
    if not isinstance(keys, list):
        raise RequestError(422, f"'keys' must be a list of objects, one per row, got {type(keys).__name__}")
    if len(keys) != rows:
        raise RequestError(422, f"'keys' has {len(keys)} object(s) for {rows} row(s): send one per row")
    wanted = set(columns)
    for i, key in enumerate(keys):
        if not isinstance(key, dict) or key.keys() != wanted:
            got = sorted(field_name(k) for k in key)[:5] if isinstance(key, dict) else type(key).__name__
            raise RequestError(422, f"keys[{i}] must be an object of exactly {', '.join(columns)} (got {got})")
        for col in columns:
            value = key[col]
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise RequestError(422, f"keys[{i}].{col}: expected a string, a number or null, got {show(value)}")
            if isinstance(value, str):
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError as exc:
                    raise RequestError(
                        400, f"keys[{i}].{col}: not valid Unicode text (a lone surrogate {value[exc.start]!r})"
                    ) from exc
            elif isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
                raise RequestError(400, f"keys[{i}].{col}: integer out of range, got {show(value)}")
            elif isinstance(value, float) and math.isinf(value):
                raise RequestError(422, f"keys[{i}].{col}: expected a finite number or null, got {value!r}")
    return keys


def checked_rows(rows: Any, served: Inputs, max_rows: int, field: str, plain_text: bool) -> Rows:
    """`rows` (the request's `field`) checked as `parse_rows` says; `plain_text`: the body holds no \\u escape."""
    if not isinstance(rows, list):
        raise RequestError(422, f"'{field}' must be a list of objects, got {type(rows).__name__}")
    if not rows:
        raise RequestError(422, f"'{field}' is empty: send at least one row")
    if len(rows) > max_rows:
        raise RequestError(413, f"'{field}' has {len(rows)} rows; at most {max_rows} per request")
    form = request_form(rows, served)
    # A lone surrogate can only come from a \u escape (the text is strict UTF-8): without one, strings are
    # plain text and the column-wise check (faster from a few rows on) need not look into them.
    if len(rows) > 4 and plain_text and _plainly_valid(rows, form):
        if form is served:
            return Rows(rows, form, field, exact=False)
        if _integers_in_range(rows, form):  # base rows are completed before scoring: exact from here on
            return Rows(rows, form, field, exact=True)
    check_rows(rows, form, field)
    return Rows(rows, form, field, exact=True)


def request_form(rows: Sequence[Any], served: Inputs) -> Inputs:
    """What the rows are checked against: the model's feature columns, or, for a model that computes derived
    features, its base columns when the first row lacks a derived column."""
    base = getattr(served, "base", None)
    first = rows[0] if rows else None
    if base is not None and isinstance(first, dict) and any(c not in first for c in base.derived):
        return base  # type: ignore[no-any-return]
    return served


def check_rows(rows: Sequence[Any], served: Inputs, field: str = "rows") -> None:
    """Row by row, field by field: RequestError naming the first problem (`field`[i].column)."""
    wanted = set(served.columns)
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise RequestError(422, f"{field}[{i}] must be an object of feature values, got {type(row).__name__}")
        if row.keys() != wanted:
            missing = [c for c in served.columns if c not in row]
            if missing:
                raise RequestError(422, f"{field}[{i}]: missing field(s) {', '.join(missing)}")
            extra = sorted(field_name(k) for k in row if k not in wanted)
            raise RequestError(
                422,
                f"{field}[{i}]: unknown field(s) {', '.join(extra[:5])} (model {served.name} v{served.version} takes "
                f"{', '.join(served.columns)})",
            )
        for col in served.categorical:
            value = row[col]
            if value is None:
                continue
            if not isinstance(value, str):
                raise RequestError(422, f"{field}[{i}].{col}: expected a string or null, got {show(value)}")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise RequestError(
                    400, f"{field}[{i}].{col}: not valid Unicode text (a lone surrogate {value[exc.start]!r})"
                ) from exc
        for col in served.numeric:
            value = row[col]
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise RequestError(422, f"{field}[{i}].{col}: expected a number or null, got {show(value)}")
            if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
                raise RequestError(
                    400, f"{field}[{i}].{col}: integer out of range, got {show(value)} (at most 2**63 - 1 in size)"
                )
            if isinstance(value, float) and math.isinf(value):  # Python's json accepts Infinity
                raise RequestError(422, f"{field}[{i}].{col}: expected a finite number or null, got {value!r}")
        for col in getattr(served, "flags", ()):
            if row[col] is not None and not isinstance(row[col], bool):
                raise RequestError(422, f"{field}[{i}].{col}: expected true, false or null, got {show(row[col])}")


_TEXT_OR_NULL = frozenset({str, type(None)})
_NUMBER_OR_NULL = frozenset({int, float, type(None)})  # bool is a type of its own, hence refused
_FLAG_OR_NULL = frozenset({bool, type(None)})
_INFINITIES = (math.inf, -math.inf)


def _plainly_valid(rows: list[Any], served: Inputs) -> bool:
    """The checks of `check_rows` but the integer range, column by column at C speed, for rows as `json.loads`
    makes them (exact types): True when every row passes; False sends the rows through `check_rows`."""
    wanted = set(served.columns)
    for row in rows:
        if type(row) is not dict or row.keys() != wanted:
            return False
    for col in served.categorical:
        if not set(map(type, map(operator.itemgetter(col), rows))) <= _TEXT_OR_NULL:
            return False
    for col in served.numeric:
        values = list(map(operator.itemgetter(col), rows))
        if not set(map(type, values)) <= _NUMBER_OR_NULL or any(inf in values for inf in _INFINITIES):
            return False
    for col in getattr(served, "flags", ()):
        if not set(map(type, map(operator.itemgetter(col), rows))) <= _FLAG_OR_NULL:
            return False
    return True


def _integers_in_range(rows: list[dict[str, Any]], served: Inputs) -> bool:
    """The integer range check of `check_rows`, column by column, for rows `_plainly_valid` passed."""
    for col in served.numeric:
        integers = [v for v in map(operator.itemgetter(col), rows) if type(v) is int]
        if integers and not INT64_MIN <= min(integers) <= max(integers) <= INT64_MAX:
            return False
    return True
