"""The tree of a parsed expression, and its plain-data form that the feature build and the models evaluate.

Built only by `expressions.parse_expression`, which checks every node first. `Expression.data` is the tree as
nested lists of names, strings and numbers; `airflow_mlops_model.expressions` evaluates that form with
vectorised pandas operations, both in the feature build and inside every logged model (one implementation,
so a feature is computed the same way offline and online). pandas is imported only when evaluating.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["number", "bool", "string", "datetime"]
"""What a column or an expression holds, as far as the checks are concerned."""


class Node:
    """A checked piece of an expression; `data` is its plain-data form (see airflow_mlops_model.expressions)."""

    kind: Kind

    def data(self) -> list[Any]:
        raise NotImplementedError


@dataclass(frozen=True)
class Column(Node):
    name: str
    kind: Kind

    def data(self) -> list[Any]:
        return ["column", self.name]


@dataclass(frozen=True)
class Constant(Node):
    value: int | float | str | bool
    kind: Kind

    def data(self) -> list[Any]:
        return ["constant", self.value, self.kind]


@dataclass(frozen=True)
class Unary(Node):
    op: str
    operand: Node
    kind: Kind

    def data(self) -> list[Any]:
        return ["unary", self.op, self.operand.data()]


@dataclass(frozen=True)
class Binary(Node):
    op: str
    left: Node
    right: Node
    kind: Kind

    def data(self) -> list[Any]:
        return ["binary", self.op, self.left.data(), self.right.data()]


@dataclass(frozen=True)
class Logical(Node):
    """`and`/`&` and `or`/`|`: element-wise, with the precedence of `and` and `or` (as in DataFrame.eval)."""

    op: str
    operands: tuple[Node, ...]
    kind: Kind

    def data(self) -> list[Any]:
        return ["logical", self.op, [o.data() for o in self.operands]]


@dataclass(frozen=True)
class Compare(Node):
    """`a < b`, and `a < b < c` as `(a < b) & (b < c)`; a missing value compares false."""

    ops: tuple[str, ...]
    operands: tuple[Node, ...]
    kind: Kind

    def data(self) -> list[Any]:
        return ["compare", list(self.ops), [o.data() for o in self.operands]]


@dataclass(frozen=True)
class DtField(Node):
    operand: Node
    field: str
    kind: Kind

    def data(self) -> list[Any]:
        return ["dt", self.operand.data(), self.field]


@dataclass(frozen=True)
class Call(Node):
    name: str
    args: tuple[Node | None, ...]
    """Arguments in parameter order; None for an optional one not given."""
    values: tuple[Any, ...]
    """The constant list of `isin`."""
    kind: Kind

    def data(self) -> list[Any]:
        return ["call", self.name, [a.data() if a is not None else None for a in self.args], list(self.values)]


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

    @property
    def data(self) -> list[Any]:
        """The tree as plain data, the form a logged model holds."""
        return self.root.data()

    def evaluate(self, frame: Any) -> Any:
        from airflow_mlops_model.expressions import evaluate

        return evaluate(self.data, frame)
