"""Derived features of base-column rows without pandas: the model's expression trees replayed on numpy arrays.

`BaseRows.complete` runs the model's DerivedFeatures step in pandas (~4-10 ms a request, most of it Series
overhead). For the trees and values whose pandas result is plain numpy arithmetic, `FastDerive` gives the
same numbers in microseconds: each column is the numpy array pandas would hold (same dtype), each operation
the numpy operation pandas dispatches to. Anything else raises `Unsupported`, and the pandas path decides
(also how to word an error): trees with other nodes or inputs of other types when the model is loaded;
values it does not convert the same way (date-times in other spellings, integers beyond 2**53, divisions by
zero, numpy errors) per request. `check` compares both paths on rows when the model is loaded.
"""

from __future__ import annotations

import calendar
import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from airflow_mlops_model.expressions import BINARY, columns_of
from airflow_mlops_model.steps import DerivedFeatures

EXACT_INT = 2**53  # integers every conversion path turns into the same float64
_NAN = float("nan")
# ISO 8601 as clients write it (what `client_rows` sends); pandas also reads other spellings: those go its way.
_ISO = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|[+-]\d{2}:\d{2})?)?")
_NUMERIC_INPUTS = frozenset({"int64", "float64"})
_DIVISIONS = frozenset({"/", "//", "%"})  # pandas fills integer divisions by zero its own way: not replayed
_UNARY: Mapping[str, Callable[[Any], Any]] = {"-": operator.neg, "+": operator.pos}
# Calls whose pandas result is the numpy function on the values (Series.abs is np.abs; the others are numpy's).
_CALLS: Mapping[str, Callable[..., Any]] = {
    "abs": np.abs, "minimum": np.minimum, "maximum": np.maximum, "log": np.log, "log1p": np.log1p, "exp": np.exp,
    "expm1": np.expm1, "sqrt": np.sqrt, "floor": np.floor, "ceil": np.ceil,
}  # fmt: skip


def _quarter(t: datetime) -> int:
    return (t.month - 1) // 3 + 1


def _days_in_month(t: datetime) -> int:
    return calendar.monthrange(t.year, t.month)[1]


# pandas' `Series.dt` fields of a UTC timestamp: int32 (float64 with NaN when a value is missing) ...
_DT_NUMBERS: Mapping[str, Callable[[datetime], int]] = {
    "year": lambda t: t.year, "quarter": _quarter, "month": lambda t: t.month, "day": lambda t: t.day,
    "hour": lambda t: t.hour, "minute": lambda t: t.minute, "second": lambda t: t.second,
    "dayofweek": datetime.weekday, "day_of_week": datetime.weekday, "weekday": datetime.weekday,
    "dayofyear": lambda t: t.timetuple().tm_yday, "day_of_year": lambda t: t.timetuple().tm_yday,
    "days_in_month": _days_in_month,
}  # fmt: skip
# ... and booleans (false when missing).
_DT_FLAGS: Mapping[str, Callable[[datetime], bool]] = {
    "is_month_start": lambda t: t.day == 1,
    "is_month_end": lambda t: t.day == _days_in_month(t),
    "is_quarter_start": lambda t: t.day == 1 and t.month in (1, 4, 7, 10),
    "is_quarter_end": lambda t: t.month in (3, 6, 9, 12) and t.day == _days_in_month(t),
    "is_year_start": lambda t: t.month == 1 and t.day == 1,
    "is_year_end": lambda t: t.month == 12 and t.day == 31,
    "is_leap_year": lambda t: calendar.isleap(t.year),
}


class Unsupported(Exception):
    """A tree, an input type or a value the fast path does not replay exactly: the pandas path takes it."""


class _Dates(list[datetime | None]):
    """A date-time input column: UTC times (naive) or None, what pandas holds as datetime64[ns, UTC]."""


class FastDerive:
    """Adds a DerivedFeatures step's columns to rows of base columns (dicts as `check_rows` passed them)."""

    def __init__(self, derive: DerivedFeatures, categorical: Sequence[str] = ()) -> None:
        """Raises Unsupported for a tree or an input type it does not replay (`categorical`: the derived
        columns the model reads as text)."""
        self._declared = dict(derive._declared())
        kinds: dict[str, str] = {}
        for column, declared in self._declared.items():
            if declared in _NUMERIC_INPUTS:
                kinds[column] = "number"
            elif declared == "datetime":
                kinds[column] = "datetime"
        self._derived: list[tuple[str, Any]] = []
        reads: dict[str, None] = {}
        for name, tree in derive.derived:
            if name in self._declared:  # the step uses such an input as it is sent, not computed
                raise Unsupported(f"{name} is also an input")
            for column in columns_of(tree):
                if column not in kinds:
                    raise Unsupported(f"{name} reads {column!r} of type {self._declared.get(column, 'derived')}")
                if column in self._declared:
                    reads.setdefault(column)
            if _kind(tree, kinds) != "number":
                raise Unsupported(f"{name} is not a number")
            kinds[name] = "number"
            self._derived.append((name, tree))
        self._inputs = [(c, self._declared[c]) for c in reads]
        self._categorical = frozenset(categorical)

    @property
    def columns(self) -> list[str]:
        return [name for name, _ in self._derived]

    def complete(self, rows: Sequence[dict[str, Any]]) -> None:
        """Adds the derived columns to each row (in place), as `BaseRows.complete` does; Unsupported leaves the
        rows untouched."""
        values: dict[str, Any] = {}
        for column, declared in self._inputs:
            cells = [row[column] for row in rows]
            values[column] = _dates(cells) if declared == "datetime" else _numbers(cells, declared)
        out: list[tuple[str, list[Any]]] = []
        with np.errstate(all="ignore"):  # pandas computes under the same setting: warnings are not errors
            for name, tree in self._derived:
                result = _value(tree, values)
                if not isinstance(result, np.ndarray) or result.shape != (len(rows),):
                    raise Unsupported(f"{name} is not one value per row")
                values[name] = result
                out.append((name, self._answer(name, result)))
        for name, answers in out:
            for row, value in zip(rows, answers, strict=True):
                row[name] = value

    def _answer(self, name: str, result: np.ndarray) -> list[Any]:
        """The column as `BaseRows.complete` writes it: text or None, or float or None."""
        kind = result.dtype.kind
        if kind in "iu" and result.size and int(np.abs(result).max()) > EXACT_INT:
            raise Unsupported(f"{name}: an integer beyond 2**53")
        if kind not in "iufb":
            raise Unsupported(f"{name}: values of dtype {result.dtype}")
        if name in self._categorical:
            return [None if v != v else str(v) for v in result.tolist()]
        return [None if v != v else v for v in result.astype(np.float64).tolist()]


def _kind(node: Any, kinds: Mapping[str, str]) -> str:
    """What a (checked) tree gives: a number (array or scalar) or a date-time column; Unsupported otherwise."""
    tag = node[0]
    if tag == "column":
        return kinds[node[1]]
    if tag == "constant":
        value, kind = node[1], node[2]
        if kind != "number" or isinstance(value, bool) or not isinstance(value, int | float):
            raise Unsupported(f"constant {value!r:.40} of kind {kind}")
        return "number"
    if tag == "unary" and node[1] in _UNARY:
        return _number(node[2], kinds)
    if tag == "binary":
        _number(node[2], kinds)
        return _number(node[3], kinds)
    if tag == "dt" and (node[2] in _DT_NUMBERS or node[2] in _DT_FLAGS):
        if node[1][0] != "column" or _kind(node[1], kinds) != "datetime":
            raise Unsupported(".dt of something else than a date-time column")
        return "number"
    if tag == "call" and node[1] in _CALLS and not node[3]:
        arguments = node[2]
        if None in arguments or len(arguments) != (2 if node[1] in ("minimum", "maximum") else 1):
            raise Unsupported(f"{node[1]} with other arguments")
        for argument in arguments:
            _number(argument, kinds)
        return "number"
    raise Unsupported(f"node {tag} {node[1] if len(node) > 1 and isinstance(node[1], str) else ''}".strip())


def _number(node: Any, kinds: Mapping[str, str]) -> str:
    if _kind(node, kinds) != "number":
        raise Unsupported("a date-time used as a number")
    return "number"


def _value(node: Any, values: Mapping[str, Any]) -> Any:
    """The node's value as the pandas evaluator holds it: a numpy array where it holds a Series (same dtype),
    the Python scalar where it holds one."""
    tag = node[0]
    if tag == "column":
        return values[node[1]]
    if tag == "constant":
        return node[1]
    if tag == "unary":
        return _op(_UNARY[node[1]], _value(node[2], values))
    if tag == "binary":
        left, right = _value(node[2], values), _value(node[3], values)
        if node[1] in _DIVISIONS and np.any(np.asarray(right) == 0):
            raise Unsupported(f"a division by zero ({node[1]})")
        return _op(BINARY[node[1]], left, right)
    if tag == "dt":
        return _field(values[node[1][1]], node[2])
    return _op(_CALLS[node[1]], *[_value(a, values) for a in node[2]])


def _op(func: Callable[..., Any], *args: Any) -> Any:
    try:
        result = func(*args)
    except (ArithmeticError, ValueError, TypeError) as exc:  # pandas raises or decides: its path answers
        raise Unsupported(f"{type(exc).__name__}: {exc}") from exc
    if isinstance(result, np.generic) or (isinstance(result, np.ndarray) and not result.shape):
        raise Unsupported("a numpy scalar where pandas holds a Python one")
    return result


def _field(dates: _Dates, field: str) -> np.ndarray:
    if field in _DT_FLAGS:
        flag = _DT_FLAGS[field]
        return np.array([t is not None and flag(t) for t in dates], dtype=bool)
    number = _DT_NUMBERS[field]
    if None in dates:
        return np.array([_NAN if t is None else float(number(t)) for t in dates], dtype=np.float64)
    return np.array([number(t) for t in dates], dtype=np.int32)  # type: ignore[arg-type]


def _numbers(cells: list[Any], declared: str) -> np.ndarray:
    """A number column as `typed` makes it of the DataFrame `BaseRows.complete` builds from these cells."""
    types = set(map(type, cells))
    if types == {int}:  # DataFrame.from_records: int64; to_numeric keeps it
        if any(not -EXACT_INT <= v <= EXACT_INT for v in cells):
            raise Unsupported("an integer beyond 2**53")
        return np.array(cells, dtype=np.int64)
    if not types <= {int, float, type(None)}:
        raise Unsupported(f"values of type(s) {', '.join(sorted(t.__name__ for t in types))}")
    out = np.array([_NAN if v is None else float(v) for v in cells], dtype=np.float64)  # float64, NaN for None
    if not np.all(np.isnan(out) | (np.abs(out) <= EXACT_INT)):
        raise Unsupported("a number beyond 2**53")
    if declared == "int64" and not np.isnan(out).any() and bool((out % 1 == 0).all()):
        return out.astype(np.int64)  # whole numbers of an integer column: int64, as `typed` gives
    return out


def _dates(cells: list[Any]) -> _Dates:
    """ISO 8601 text (naive: UTC) or None as UTC times; Unsupported for anything pandas might read otherwise."""
    out = _Dates()
    naive = shifted = False
    for cell in cells:
        if cell is None:
            out.append(None)
            continue
        match = _ISO.fullmatch(cell) if type(cell) is str else None
        if match is None:
            raise Unsupported(f"date-time {cell!r:.40} in another form")
        year, month, day, hour, minute, second, fraction, zone = match.groups()
        if not 1678 <= int(year) <= 2261:  # pandas' nanosecond timestamps cover 1677-09-21 to 2262-04-11
            raise Unsupported(f"date-time {cell!r:.40} near the bounds of pandas' timestamps")
        try:
            stamp = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0),
                             int((fraction or "0").ljust(6, "0")[:6]))  # fmt: skip
        except ValueError as exc:  # e.g. February 30: pandas words the error
            raise Unsupported(str(exc)) from exc
        if not zone:
            naive = True
        elif zone != "Z":
            hours, minutes = int(zone[1:3]), int(zone[4:6])
            if hours > 23 or minutes > 59:
                raise Unsupported(f"time zone offset {zone}")
            offset = timedelta(hours=hours, minutes=minutes)
            stamp = stamp - offset if zone[0] == "+" else stamp + offset
            shifted = shifted or bool(offset)
        out.append(stamp)
    if naive and shifted:
        # pandas (2.3) reads a naive time that follows one with an offset in the same column at that offset
        raise Unsupported("naive date-times mixed with ones at an offset from UTC")
    return out


def check(fast: FastDerive, pandas_complete: Callable[[list[dict[str, Any]]], None],
          rows: Sequence[Mapping[str, Any]]) -> int:  # fmt: skip
    """Compare the fast path with the pandas path on `rows`, each alone and all at once; Unsupported on a
    difference. A batch either path refuses is skipped; returns how many batches both completed."""
    compared = 0
    for batch in [*([row] for row in rows), list(rows)]:
        want = [dict(row) for row in batch]
        got = [dict(row) for row in batch]
        try:
            pandas_complete(want)
            fast.complete(got)
        except (ValueError, TypeError, Unsupported):
            continue
        for a, b in zip(want, got, strict=True):
            for name in fast.columns:
                if not _same(a[name], b[name]):
                    raise Unsupported(f"{name}: {b[name]!r} where the model's step gives {a[name]!r}")
        compared += 1
    return compared


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b
