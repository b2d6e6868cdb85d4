"""Evaluation of a checked expression tree held as plain data (nested lists of names, strings and numbers).

The project's config parser (`airflow_mlops.config.expressions`) checks an expression against an allow-list
and hands its tree over in this form; the feature build and every logged model evaluate it with these
functions, so a feature is computed the same way offline and online. Nothing is ever executed from the data:
each node names an operation looked up in the tables below, and anything else is refused. pandas and numpy
are imported when a tree is evaluated (the config parser imports this module while Airflow parses DAGs).

Nodes: ["column", name], ["constant", value, kind], ["unary", op, operand], ["binary", op, left, right],
["logical", op, [operands]], ["compare", [ops], [operands]], ["dt", operand, field],
["call", name, [argument or None, ...], [constants of isin]].
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

BINARY: Mapping[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "//": operator.floordiv,
    "%": operator.mod,
    "**": operator.pow,
}
COMPARE: Mapping[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
UNARY = frozenset({"-", "+", "not", "~"})
LOGICAL = frozenset({"and", "or"})
DT_FIELDS = (
    "year", "quarter", "month", "day", "hour", "minute", "second", "dayofweek", "day_of_week", "weekday",
    "dayofyear", "day_of_year", "days_in_month", "is_month_start", "is_month_end", "is_quarter_start",
    "is_quarter_end", "is_year_start", "is_year_end", "is_leap_year",
)  # fmt: skip
"""`<datetime>.dt.<field>`: the parts of a timestamp an expression may read (pandas' `Series.dt` fields)."""
CALLS = (
    "notna", "isna", "abs", "round", "clip", "fillna", "isin", "where", "minimum", "maximum", "log", "log1p",
    "exp", "expm1", "sqrt", "floor", "ceil",
)  # fmt: skip
"""The functions a tree may call (numpy's for minimum, maximum and the one-argument math functions)."""
KINDS = frozenset({"number", "bool", "string", "datetime"})


class TreeError(ValueError):
    """A tree that is not made of the allowed nodes: refused before anything is evaluated."""


def columns_of(tree: Any) -> list[str]:
    """The columns a tree reads, in order of first use; raises TreeError unless every node is allowed."""
    found: dict[str, None] = {}
    _check(tree, found)
    return list(found)


def _check(node: Any, found: dict[str, None]) -> None:
    if not isinstance(node, list | tuple) or not node or not isinstance(node[0], str):
        raise TreeError(f"not an expression node: {node!r:.100}")
    tag, args = node[0], node[1:]
    shapes = {"column": 1, "constant": 2, "unary": 2, "binary": 3, "logical": 2, "compare": 2, "dt": 2, "call": 3}
    if shapes.get(tag) != len(args):
        raise TreeError(f"unknown or malformed node {tag!r:.40}")
    if tag == "column":
        if not isinstance(args[0], str):
            raise TreeError("a column node needs a name")
        found.setdefault(args[0])
    elif tag == "constant":
        value, kind = args
        if kind not in KINDS or isinstance(value, list | tuple | dict) or value is None:
            raise TreeError(f"constant {value!r:.40} of kind {kind!r:.20}")
    elif tag == "unary":
        _allowed(args[0], UNARY, "unary operator")
        _check(args[1], found)
    elif tag == "binary":
        _allowed(args[0], BINARY, "operator")
        _check(args[1], found)
        _check(args[2], found)
    elif tag == "logical":
        _allowed(args[0], LOGICAL, "logical operator")
        _check_all(args[1], found, minimum=2)
    elif tag == "compare":
        if not isinstance(args[0], list | tuple) or len(args[1]) != len(args[0]) + 1:
            raise TreeError("a comparison needs one operator between each two operands")
        for op in args[0]:
            _allowed(op, COMPARE, "comparison")
        _check_all(args[1], found, minimum=2)
    elif tag == "dt":
        _check(args[0], found)
        _allowed(args[1], DT_FIELDS, ".dt field")
    else:
        _allowed(args[0], CALLS, "function")
        if not isinstance(args[1], list | tuple) or not args[1] or args[1][0] is None:
            raise TreeError(f"{args[0]}: needs its first argument")
        for arg in args[1]:
            if arg is not None:
                _check(arg, found)
        if not isinstance(args[2], list | tuple) or any(isinstance(v, list | tuple | dict) for v in args[2]):
            raise TreeError(f"{args[0]}: constants must be plain values")


def _check_all(nodes: Any, found: dict[str, None], minimum: int) -> None:
    if not isinstance(nodes, list | tuple) or len(nodes) < minimum:
        raise TreeError(f"expected at least {minimum} operands")
    for node in nodes:
        _check(node, found)


def _allowed(name: Any, allowed: Any, what: str) -> None:
    if not isinstance(name, str) or name not in allowed:
        raise TreeError(f"{what} {name!r:.40} is not allowed")


# Evaluation --------------------------------------------------------------------------------------------------


def evaluate(tree: Any, frame: Any) -> Any:
    """One value per row of `frame` (a pandas DataFrame): the tree's result as a Series.

    The tree must have passed `columns_of` (the config parser builds only such trees; a model checks its
    trees when it is fitted and before each evaluation is unnecessary)."""
    return _series(_value(tree, frame), frame)


def _series(value: Any, frame: Any) -> Any:
    """The value as a Series over the frame's rows (a constant is repeated)."""
    import pandas as pd

    return value if isinstance(value, pd.Series) else pd.Series(value, index=frame.index)


def _value(node: Any, frame: Any) -> Any:
    tag = node[0]
    if tag == "column":
        return frame[node[1]]
    if tag == "constant":
        return node[1]
    if tag == "unary":
        value = _value(node[2], frame)
        if node[1] == "-":
            return -value
        if node[1] == "+":
            return +value
        return ~value  # `not` and `~`, as DataFrame.eval reads them: element-wise
    if tag == "binary":
        return BINARY[node[1]](_value(node[2], frame), _value(node[3], frame))
    if tag == "logical":
        func = operator.and_ if node[1] == "and" else operator.or_
        values = [_value(o, frame) for o in node[2]]
        result = values[0]
        for value in values[1:]:
            result = func(result, value)
        return result
    if tag == "compare":
        return _compare(node[1], node[2], frame)
    if tag == "dt":
        return getattr(_series(_value(node[1], frame), frame).dt, node[2])
    if tag == "call":
        return _call(node[1], node[2], node[3], frame)
    raise TreeError(f"unknown node {tag!r:.40}")


def _as_bool(value: Any) -> Any:
    """A nullable boolean result as plain booleans, missing as false (what a comparison with NaN gives)."""
    import pandas as pd

    if isinstance(value, pd.Series) and isinstance(value.dtype, pd.BooleanDtype):
        return value.fillna(False).astype(bool)
    return value


def _timestamp(text: str, like: Any) -> Any:
    """A date/time constant in the time zone of the column it is compared with (naive text: that zone)."""
    import pandas as pd

    stamp = pd.Timestamp(text)
    tz = getattr(getattr(like, "dt", None), "tz", None)
    if tz is not None:
        return stamp.tz_localize(tz) if stamp.tzinfo is None else stamp.tz_convert(tz)
    return stamp.tz_convert(None) if stamp.tzinfo is not None else stamp


def _compare(ops: list[str], operands: list[Any], frame: Any) -> Any:
    """`a < b`, and `a < b < c` as `(a < b) & (b < c)`; a missing value compares false."""
    values = [_value(o, frame) for o in operands]
    for i, node in enumerate(operands):
        if node[0] == "constant" and node[2] == "datetime":
            values[i] = _timestamp(str(node[1]), values[i - 1] if i else values[i + 1])
    result = _as_bool(COMPARE[ops[0]](values[0], values[1]))
    for i in range(1, len(ops)):
        result = result & _as_bool(COMPARE[ops[i]](values[i], values[i + 1]))
    return result


def _call(name: str, nodes: list[Any], constants: list[Any], frame: Any) -> Any:
    import numpy as np

    args = [_value(a, frame) if a is not None else None for a in nodes]
    if name in ("notna", "isna", "abs"):
        return getattr(_series(args[0], frame), name)()
    if name == "round":
        return _series(args[0], frame).round(args[1] if len(args) > 1 and args[1] is not None else 0)
    if name == "clip":
        return _series(args[0], frame).clip(args[1], args[2])
    if name == "fillna":
        return _series(args[0], frame).fillna(args[1])
    if name == "isin":
        return _series(args[0], frame).isin(list(constants))
    if name == "where":
        condition = _series(args[0], frame).fillna(False).astype(bool)
        return _series(args[1], frame).where(condition, args[2])
    if name not in CALLS:
        raise TreeError(f"function {name!r:.40} is not allowed")
    # minimum, maximum and the one-argument math functions: numpy's, as DataFrame.eval called them
    return getattr(np, name)(*args)
