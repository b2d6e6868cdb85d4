"""The expression language of `features.derived` and `features.label`: an allow-listed tree, parsed at config load.

An expression is read with Python's `ast` parser (which only parses) and every node is checked against a
short allow-list: column names, numbers, strings, arithmetic, comparisons, boolean operators, `.dt.<field>`
and the functions of `FUNCTIONS`. Anything else (attributes, calls outside the list, subscripts, `@`
variables, lambdas, comprehensions) is refused with the offending part. The tree is then evaluated with
vectorised pandas operations, the same operations `DataFrame.eval` applied before, so features keep their
values and types. pandas and numpy are imported only when an expression is evaluated (DAG files parse this).
"""

from __future__ import annotations

import ast
import io
import math
import tokenize
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from airflow_mlops.config.expression_tree import (
    Binary,
    Call,
    Column,
    Compare,
    Constant,
    DtField,
    Expression,
    Kind,
    Logical,
    Node,
    Unary,
)
from airflow_mlops_model.expressions import BINARY, COMPARE
from airflow_mlops_model.expressions import CALLS as MODEL_CALLS
from airflow_mlops_model.expressions import DT_FIELDS as MODEL_DT_FIELDS

__all__ = ["COLUMN_KINDS", "DT_FIELDS", "FUNCTIONS", "Expression", "ExpressionError", "Kind", "parse_expression"]

COLUMN_KINDS: dict[str, Kind] = {
    "int64": "number",
    "float64": "number",
    "string": "string",
    "bool": "bool",
    "datetime": "datetime",
}
"""Kind of each declared column type."""

MAX_CHARS = 1000
MAX_NODES = 200
MAX_DEPTH = 32
MAX_INT = 2**63 - 1

# Operators as `ast` parses them, with the functions the evaluator applies (also used to fold constants).
BINARY_OPERATORS: dict[type[ast.operator], tuple[str, Callable[[Any, Any], Any]]] = {
    op_type: (op, BINARY[op])
    for op_type, op in (
        (ast.Add, "+"),
        (ast.Sub, "-"),
        (ast.Mult, "*"),
        (ast.Div, "/"),
        (ast.FloorDiv, "//"),
        (ast.Mod, "%"),
        (ast.Pow, "**"),
    )
}
COMPARISONS: dict[type[ast.cmpop], tuple[str, Callable[[Any, Any], Any]]] = {
    op_type: (op, COMPARE[op])
    for op_type, op in (
        (ast.Eq, "=="),
        (ast.NotEq, "!="),
        (ast.Lt, "<"),
        (ast.LtE, "<="),
        (ast.Gt, ">"),
        (ast.GtE, ">="),
    )
}

DT_FIELDS: dict[str, Kind] = {f: "bool" if f.startswith("is_") else "number" for f in MODEL_DT_FIELDS}
"""`<datetime>.dt.<field>`: the parts of a timestamp an expression may read (pandas' `Series.dt` fields)."""


class ExpressionError(ValueError):
    """An expression is refused; `part` is the offending piece of its text."""

    def __init__(self, reason: str, part: str | None = None) -> None:
        super().__init__(f"{reason}: `{part}`" if part else reason)
        self.reason = reason
        self.part = part


# Functions -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Function:
    """One allowed function: `name(x, ...)`, and `x.name(...)` when `method` is set."""

    params: tuple[str, ...]
    """Parameter names; the first is the value the function works on."""
    required: int
    kinds: tuple[tuple[Kind, ...] | None, ...]
    """Allowed kinds of each parameter (None: any kind)."""
    result: Kind | None
    """Kind of the result (None: the kind of the first argument)."""
    method: bool
    doc: str
    example: str


_NUM: tuple[Kind, ...] = ("number", "bool")


def _unary_math(doc: str, example: str) -> Function:
    return Function(("x",), 1, (_NUM,), "number", False, doc, example)


FUNCTIONS: dict[str, Function] = {
    "notna": Function(("x",), 1, (None,), "bool", True, "true where x has a value", "arr_delay.notna()"),
    "isna": Function(("x",), 1, (None,), "bool", True, "true where x is missing", "isna(tailnum)"),
    "abs": Function(("x",), 1, (_NUM,), "number", True, "absolute value", "abs(dep_delay)"),
    "round": Function(
        ("x", "decimals"), 1, (_NUM, ("number",)), "number", True, "round to `decimals` places (0)", "round(temp, 1)"
    ),
    "clip": Function(
        ("x", "lower", "upper"),
        1,
        (_NUM, _NUM, _NUM),
        "number",
        True,
        "x bounded to [lower, upper]",
        "clip(wind_speed, 0, 60)",
    ),
    "fillna": Function(
        ("x", "value"), 2, (None, None), None, True, "x, with `value` where x is missing", "fillna(precip, 0)"
    ),
    "isin": Function(
        ("x", "values"),
        2,
        (None, None),
        "bool",
        True,
        "true where x is one of a list of constants",
        "origin.isin(['JFK', 'LGA'])",
    ),
    "where": Function(
        ("condition", "then", "otherwise"),
        3,
        (("bool",), None, None),
        None,
        False,
        "`then` where the condition holds, else `otherwise`",
        "where(dep_delay > 0, dep_delay, 0)",
    ),
    "minimum": Function(("a", "b"), 2, (_NUM, _NUM), "number", False, "the smaller of a and b", "minimum(temp, 100)"),
    "maximum": Function(("a", "b"), 2, (_NUM, _NUM), "number", False, "the larger of a and b", "maximum(dep_delay, 0)"),
    "log": _unary_math("natural logarithm", "log(distance)"),
    "log1p": _unary_math("log(1 + x)", "log1p(precip)"),
    "exp": _unary_math("e to the power x", "exp(-distance / 1000)"),
    "expm1": _unary_math("exp(x) - 1", "expm1(precip)"),
    "sqrt": _unary_math("square root", "sqrt(distance)"),
    "floor": _unary_math("largest whole number not above x", "floor(temp)"),
    "ceil": _unary_math("smallest whole number not below x", "ceil(temp)"),
}
"""Every function an expression may call."""
assert tuple(FUNCTIONS) == MODEL_CALLS, "the parser's functions are the evaluator's"


# Parsing ----------------------------------------------------------------------------------------------------


def _numeric(kind: Kind) -> bool:
    return kind in ("number", "bool")


def _same_family(a: Kind, b: Kind) -> bool:
    return a == b or (_numeric(a) and _numeric(b))


def _rewrite_booleans(text: str) -> str:
    """`&` and `|` as `and` and `or` (their precedence in DataFrame.eval); refuses `@` and backticks."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError) as exc:
        raise ExpressionError(f"not a valid expression ({exc.args[0]})") from None
    line_starts = [0]
    for line in text.splitlines(keepends=True):
        line_starts.append(line_starts[-1] + len(line))
    spans: list[tuple[int, int, str]] = []
    for tok in tokens:
        if tok.type == tokenize.OP and tok.string == "@":
            raise ExpressionError("`@` (a Python variable or matrix product) is not allowed", tok.line.strip())
        if tok.type == tokenize.ERRORTOKEN and tok.string == "`":
            raise ExpressionError("backticks are not supported: columns are named by identifiers", tok.line.strip())
        if tok.type == tokenize.OP and tok.string in ("&", "|"):
            start = line_starts[tok.start[0] - 1] + tok.start[1]
            spans.append((start, start + 1, " and " if tok.string == "&" else " or "))
    for start, end, word in reversed(spans):
        text = text[:start] + word + text[end:]
    return text


class _Parser:
    def __init__(self, text: str, columns: Mapping[str, Kind]) -> None:
        self.text = text
        self.columns = columns
        self.used: set[str] = set()

    def part(self, node: ast.AST) -> str:
        return ast.get_source_segment(self.text, node) or ast.dump(node)

    def refuse(self, node: ast.AST, reason: str) -> ExpressionError:
        return ExpressionError(reason, self.part(node))

    def node(self, node: ast.expr, depth: int = 0) -> Node:
        if depth > MAX_DEPTH:
            raise self.refuse(node, f"nested more than {MAX_DEPTH} levels deep")
        if isinstance(node, ast.Constant):
            return self.constant(node, node.value)
        if isinstance(node, ast.Name):
            return self.column(node)
        if isinstance(node, ast.UnaryOp):
            return self.unary(node, depth)
        if isinstance(node, ast.BinOp):
            return self.binary(node, depth)
        if isinstance(node, ast.BoolOp):
            return self.logical(node, depth)
        if isinstance(node, ast.Compare):
            return self.compare(node, depth)
        if isinstance(node, ast.Call):
            return self.call(node, depth)
        if isinstance(node, ast.Attribute):
            return self.attribute(node, depth)
        raise self.refuse(node, f"{_describe(node)} is not allowed")

    def constant(self, node: ast.AST, value: Any) -> Constant:
        if isinstance(value, bool):
            return Constant(value, "bool")
        if isinstance(value, int):
            if abs(value) > MAX_INT:
                raise self.refuse(node, "integer outside the 64-bit range")
            return Constant(value, "number")
        if isinstance(value, float):
            if not math.isfinite(value):
                raise self.refuse(node, "number is not finite")
            return Constant(value, "number")
        if isinstance(value, str):
            return Constant(value, "string")
        raise self.refuse(node, f"constant {value!r} is not allowed (numbers, strings, True and False are)")

    def column(self, node: ast.Name) -> Column:
        kind = self.columns.get(node.id)
        if kind is None:
            known = ", ".join(self.columns)
            raise self.refuse(node, f"unknown column {node.id!r} (columns: {known})")
        self.used.add(node.id)
        return Column(node.id, kind)

    def unary(self, node: ast.UnaryOp, depth: int) -> Node:
        operand = self.node(node.operand, depth + 1)
        if isinstance(node.op, ast.USub | ast.UAdd):
            op = "-" if isinstance(node.op, ast.USub) else "+"
            if not _numeric(operand.kind):
                raise self.refuse(node, f"{op} needs a number, not a {operand.kind}")
            if isinstance(operand, Constant):
                return self.constant(node, -operand.value if op == "-" else operand.value)  # type: ignore[operator]
            return Unary(op, operand, "number")
        op = "not" if isinstance(node.op, ast.Not) else "~"
        if operand.kind != "bool":
            raise self.refuse(node, f"{op} needs a condition (true/false), not a {operand.kind}")
        return Unary(op, operand, "bool")

    def binary(self, node: ast.BinOp, depth: int) -> Node:
        entry = BINARY_OPERATORS.get(type(node.op))
        if entry is None:
            raise self.refuse(node, f"operator {type(node.op).__name__} is not allowed (+ - * / // % ** are)")
        op, func = entry
        left, right = self.node(node.left, depth + 1), self.node(node.right, depth + 1)
        if op == "+" and left.kind == right.kind == "string":
            kind: Kind = "string"
        elif _numeric(left.kind) and _numeric(right.kind):
            kind = "number"
        else:
            raise self.refuse(node, f"cannot apply {op} to a {left.kind} and a {right.kind}")
        if isinstance(left, Constant) and isinstance(right, Constant):
            return self.constant(node, self.fold(node, op, func, left.value, right.value))
        return Binary(op, left, right, kind)

    def fold(self, node: ast.AST, op: str, func: Callable[[Any, Any], Any], a: Any, b: Any) -> Any:
        """Compute an operation of two constants now, refusing one that would not fit in 64 bits."""
        if op == "**" and isinstance(b, int | float) and abs(b) > 64 and abs(a) > 1:
            raise self.refuse(node, "constant power too large")
        try:
            return func(a, b)
        except (ArithmeticError, ValueError) as exc:
            raise self.refuse(node, f"cannot compute: {exc}") from None

    def logical(self, node: ast.BoolOp, depth: int) -> Node:
        op = "and" if isinstance(node.op, ast.And) else "or"
        operands = tuple(self.node(v, depth + 1) for v in node.values)
        for value, operand in zip(node.values, operands, strict=True):
            if operand.kind != "bool":
                raise self.refuse(value, f"{op} (and & |) combines conditions (true/false), not a {operand.kind}")
        return Logical(op, operands, "bool")

    def compare(self, node: ast.Compare, depth: int) -> Node:
        ops = []
        for cmp in node.ops:
            entry = COMPARISONS.get(type(cmp))
            if entry is None:
                raise self.refuse(node, f"comparison {type(cmp).__name__} is not allowed (== != < <= > >= are)")
            ops.append(entry[0])
        values = [node.left, *node.comparators]
        operands = [self.node(v, depth + 1) for v in values]
        for i in range(len(operands) - 1):
            for j, other in ((i, i + 1), (i + 1, i)):
                this = operands[j]
                if operands[other].kind == "datetime" and isinstance(this, Constant) and this.kind == "string":
                    operands[j] = self.date_constant(values[j], str(this.value))
            a, b = operands[i], operands[i + 1]
            if not _same_family(a.kind, b.kind):
                raise self.refuse(node, f"cannot compare a {a.kind} with a {b.kind}")
        return Compare(tuple(ops), tuple(operands), "bool")

    def date_constant(self, node: ast.AST, text: str) -> Constant:
        """A date or time written as text, e.g. '2013-06-01' or '2013-06-01 12:00', compared with a datetime."""
        try:
            datetime.fromisoformat(text)
        except ValueError:
            raise self.refuse(node, f"{text!r} is not a date or time (YYYY-MM-DD or YYYY-MM-DD HH:MM[:SS])") from None
        return Constant(text, "datetime")

    def attribute(self, node: ast.Attribute, depth: int) -> Node:
        inner = node.value
        if isinstance(inner, ast.Attribute) and inner.attr == "dt":
            kind = DT_FIELDS.get(node.attr)
            if kind is None:
                raise self.refuse(node, f"unknown .dt field {node.attr!r} (fields: {', '.join(DT_FIELDS)})")
            operand = self.node(inner.value, depth + 1)
            if operand.kind != "datetime":
                raise self.refuse(node, f".dt needs a datetime, not a {operand.kind}")
            return DtField(operand, node.attr, kind)
        raise self.refuse(
            node, f"attribute {node.attr!r} is not allowed (only .dt.<field> and the methods {_methods()})"
        )

    def call(self, node: ast.Call, depth: int) -> Node:
        target = node.func
        if isinstance(target, ast.Name):
            name, given = target.id, list(node.args)
        elif isinstance(target, ast.Attribute):
            name, given = target.attr, [target.value, *node.args]
            if name in FUNCTIONS and not FUNCTIONS[name].method:
                raise self.refuse(node, f"{name} is a function: write {name}(...), not x.{name}(...)")
        else:
            raise self.refuse(node, "only the listed functions may be called")
        spec = FUNCTIONS.get(name)
        if spec is None:
            raise self.refuse(node, f"function {name!r} is not allowed (functions: {', '.join(FUNCTIONS)})")
        args: list[ast.expr | None] = [*given, *([None] * (len(spec.params) - len(given)))]
        if len(given) > len(spec.params):
            raise self.refuse(node, f"{name} takes at most {len(spec.params)} arguments")
        for kw in node.keywords:
            if kw.arg is None or kw.arg not in spec.params[1:]:
                raise self.refuse(node, f"{name} has no argument {kw.arg or '**'!r} ({', '.join(spec.params)})")
            index = spec.params.index(kw.arg)
            if args[index] is not None:
                raise self.refuse(node, f"{name}: argument {kw.arg!r} given twice")
            args[index] = kw.value
        if any(a is None for a in args[: spec.required]):
            raise self.refuse(node, f"{name} needs {', '.join(spec.params[: spec.required])}")
        if name == "clip" and args[1] is None and args[2] is None:
            raise self.refuse(node, "clip needs lower or upper")
        values: tuple[Any, ...] = ()
        if name == "isin":
            values = self.constant_list(args[1])
            args[1] = None
        nodes = tuple(self.node(a, depth + 1) if a is not None else None for a in args)
        for i, (arg, kinds) in enumerate(zip(nodes, spec.kinds, strict=True)):
            if arg is not None and kinds is not None and arg.kind not in kinds:
                raise self.refuse(node, f"{name}: {spec.params[i]} must be a {' or '.join(kinds)}, not a {arg.kind}")
        first = nodes[0]
        assert first is not None
        kind = spec.result or first.kind
        if name == "round" and nodes[1] is not None and not isinstance(nodes[1], Constant):
            raise self.refuse(node, "round: decimals must be a whole number")
        if name in ("fillna", "where"):
            a, b = (nodes[0], nodes[1]) if name == "fillna" else (nodes[1], nodes[2])
            assert a is not None and b is not None
            if not _same_family(a.kind, b.kind):
                raise self.refuse(node, f"{name}: a {a.kind} and a {b.kind} do not mix")
            kind = "number" if a.kind != b.kind else a.kind
        for value in values:
            if not _same_family(first.kind, "string" if isinstance(value, str) else "number"):
                raise self.refuse(node, f"isin: {value!r} cannot equal a {first.kind}")
        return Call(name, nodes, values, kind)

    def constant_list(self, node: ast.expr | None) -> tuple[Any, ...]:
        if not isinstance(node, ast.List | ast.Tuple):
            raise ExpressionError(
                "isin needs a list of constants, e.g. ['JFK', 'LGA']", self.part(node) if node else None
            )
        items = []
        for item in node.elts:
            value = self.node(item)
            if not isinstance(value, Constant):
                raise self.refuse(item, "isin takes constants only")
            items.append(value.value)
        return tuple(items)


def _methods() -> str:
    return ", ".join(f".{n}()" for n, f in FUNCTIONS.items() if f.method)


def _describe(node: ast.AST) -> str:
    names = {
        ast.Subscript: "indexing ([...])",
        ast.Lambda: "a lambda",
        ast.ListComp: "a comprehension",
        ast.SetComp: "a comprehension",
        ast.DictComp: "a comprehension",
        ast.GeneratorExp: "a generator",
        ast.IfExp: "an if-else expression (use where(condition, then, otherwise))",
        ast.NamedExpr: "an assignment (:=)",
        ast.JoinedStr: "an f-string",
        ast.List: "a list (only as the argument of isin)",
        ast.Tuple: "a tuple",
        ast.Dict: "a dict",
        ast.Set: "a set",
        ast.Starred: "unpacking (*)",
        ast.Await: "await",
        ast.Yield: "yield",
        ast.YieldFrom: "yield",
    }
    return names.get(type(node), type(node).__name__)


def parse_expression(text: str, columns: Mapping[str, Kind]) -> Expression:
    """Parse and check one expression over columns of the given kinds; raises ExpressionError naming the part."""
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError("empty expression")
    if len(text) > MAX_CHARS:
        raise ExpressionError(f"longer than {MAX_CHARS} characters")
    source = _rewrite_booleans(text.strip())
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        where = f" at column {exc.offset}" if exc.offset else ""
        raise ExpressionError(f"not a valid expression ({exc.msg}{where})", text.strip()) from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise ExpressionError(f"not a valid expression ({type(exc).__name__})") from None
    count = sum(1 for _ in ast.walk(tree))
    if count > MAX_NODES:
        raise ExpressionError(f"more than {MAX_NODES} parts (found {count})")
    parser = _Parser(source, columns)
    root = parser.node(tree.body)
    if not parser.used:
        raise ExpressionError("uses no column: it must give one value per row", text.strip())
    return Expression(text, root, frozenset(parser.used))
