"""The tree of a parsed expression: each node evaluates itself on a frame with vectorised pandas operations.

Built only by `expressions.parse_expression`, which checks every node first. pandas and numpy are imported
when an expression is evaluated, never at import (DAG files import the config package).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["number", "bool", "string", "datetime"]
"""What a column or an expression holds, as far as the checks are concerned."""


# The tree ---------------------------------------------------------------------------------------------------


def _series(value: Any, frame: Any) -> Any:
    """The value as a Series over the frame's rows (a constant is repeated)."""
    import pandas as pd

    return value if isinstance(value, pd.Series) else pd.Series(value, index=frame.index)


class Node:
    """A checked piece of an expression; `evaluate` gives a Series or, for constants, a scalar."""

    kind: Kind

    def evaluate(self, frame: Any) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class Column(Node):
    name: str
    kind: Kind

    def evaluate(self, frame: Any) -> Any:
        return frame[self.name]


@dataclass(frozen=True)
class Constant(Node):
    value: int | float | str | bool
    kind: Kind

    def evaluate(self, frame: Any) -> Any:
        return self.value


@dataclass(frozen=True)
class Unary(Node):
    op: str
    operand: Node
    kind: Kind

    def evaluate(self, frame: Any) -> Any:
        value = self.operand.evaluate(frame)
        if self.op == "-":
            return -value
        if self.op == "+":
            return +value
        return ~value  # `not` and `~`, as DataFrame.eval reads them: element-wise


@dataclass(frozen=True)
class Binary(Node):
    op: str
    func: Callable[[Any, Any], Any]
    left: Node
    right: Node
    kind: Kind

    def evaluate(self, frame: Any) -> Any:
        return self.func(self.left.evaluate(frame), self.right.evaluate(frame))


@dataclass(frozen=True)
class Logical(Node):
    """`and`/`&` and `or`/`|`: element-wise, with the precedence of `and` and `or` (as in DataFrame.eval)."""

    op: str
    operands: tuple[Node, ...]
    kind: Kind

    def evaluate(self, frame: Any) -> Any:
        func = operator.and_ if self.op == "and" else operator.or_
        values = [o.evaluate(frame) for o in self.operands]
        result = values[0]
        for value in values[1:]:
            result = func(result, value)
        return result


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


@dataclass(frozen=True)
class Compare(Node):
    """`a < b`, and `a < b < c` as `(a < b) & (b < c)`; a missing value compares false."""

    funcs: tuple[Callable[[Any, Any], Any], ...]
    operands: tuple[Node, ...]
    kind: Kind

    def evaluate(self, frame: Any) -> Any:
        values = [o.evaluate(frame) for o in self.operands]
        for i, node in enumerate(self.operands):
            if isinstance(node, Constant) and node.kind == "datetime":
                values[i] = _timestamp(str(node.value), values[i - 1] if i else values[i + 1])
        result = _as_bool(self.funcs[0](values[0], values[1]))
        for i in range(1, len(self.funcs)):
            result = result & _as_bool(self.funcs[i](values[i], values[i + 1]))
        return result


@dataclass(frozen=True)
class DtField(Node):
    operand: Node
    field: str
    kind: Kind

    def evaluate(self, frame: Any) -> Any:
        return getattr(_series(self.operand.evaluate(frame), frame).dt, self.field)


@dataclass(frozen=True)
class Call(Node):
    name: str
    args: tuple[Node | None, ...]
    """Arguments in parameter order; None for an optional one not given."""
    values: tuple[Any, ...]
    """The constant list of `isin`."""
    kind: Kind

    def evaluate(self, frame: Any) -> Any:
        import numpy as np

        args = [a.evaluate(frame) if a is not None else None for a in self.args]
        name = self.name
        if name in ("notna", "isna", "abs"):
            return getattr(_series(args[0], frame), name)()
        if name == "round":
            return _series(args[0], frame).round(args[1] if args[1] is not None else 0)
        if name == "clip":
            return _series(args[0], frame).clip(args[1], args[2])
        if name == "fillna":
            return _series(args[0], frame).fillna(args[1])
        if name == "isin":
            return _series(args[0], frame).isin(list(self.values))
        if name == "where":
            condition = _series(args[0], frame).fillna(False).astype(bool)
            return _series(args[1], frame).where(condition, args[2])
        # minimum, maximum and the one-argument math functions: numpy's, as DataFrame.eval called them
        return getattr(np, name)(*args)


@dataclass(frozen=True)
class Expression:
    """A parsed and checked expression; `evaluate` gives one value per row of a frame."""

    text: str
    root: Node
    columns: frozenset[str]
    """The columns it reads."""

    @property
    def kind(self) -> Kind:
        return self.root.kind

    def evaluate(self, frame: Any) -> Any:
        return _series(self.root.evaluate(frame), frame)
