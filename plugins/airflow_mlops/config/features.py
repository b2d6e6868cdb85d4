"""The `features:` section of a pipeline config: base rows, joins, derived features and the label."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import Field

from airflow_mlops.config.expressions import Expression, ExpressionError, Kind, parse_expression
from airflow_mlops.config.problems import Loc
from airflow_mlops.config.schema import Strict


class JoinConfig(Strict):
    """A left join of another source onto the base rows."""

    source: str = Field(description="Name of the joined source.")
    keys: list[str] = Field(min_length=1, description="Join columns, with the same name on both sides.")
    columns: dict[str, str] = Field(
        min_length=1, description="Columns to take from the source: {source_column: feature_name}."
    )


class LabelConfig(Strict):
    """The training label, computed from base columns."""

    name: str = Field(description="Column name of the label in the feature store.")
    expr: str = Field(
        description=(
            "Expression giving the label: a condition for train.task binary (e.g. `arr_delay > 15`), a number for"
            " regression (e.g. `arr_delay`), a text or whole number for multiclass."
        )
    )
    known: str | None = Field(
        None, description="Expression true where the label is known; elsewhere the label is null."
    )
    source: str | None = Field(
        None,
        description=(
            "A partitioned source of its own that brings the outcomes later (e.g. arrivals landing a day after the"
            " departures): `expr` and `known` read its columns, and each of its rows labels the feature row with the"
            " same `key` and `timestamp`. Training uses only rows whose label has landed by its logical date; the"
            " monitor judges quality only on predictions whose label has landed. Default: the label comes with the"
            " base rows."
        ),
    )
    key: list[str] | None = Field(
        None,
        min_length=1,
        description="With `source`: its columns matching `features.key`, in that order (default: the same names).",
    )
    timestamp: str | None = Field(
        None,
        description="With `source`: its column matching `features.timestamp` (default: the same name).",
    )


class FeaturesConfig(Strict):
    """How features are built from the validated sources."""

    base: str = Field(description="The partitioned source whose rows become feature rows.")
    key: list[str] = Field(
        min_length=1, description="Columns identifying a row within a date (used for joins to outcomes)."
    )
    timestamp: str = Field(description="Event time column of the base source.")
    keep: list[str] = Field(default_factory=list, description="Base columns kept as features or for slicing.")
    joins: list[JoinConfig] = Field(default_factory=list)
    derived: dict[str, str] = Field(
        default_factory=dict,
        description="{feature: expression over the base and joined columns and the features derived before it}.",
    )
    label: LabelConfig


@dataclass(frozen=True)
class CompiledFeatures:
    """The parsed expressions of a features section, ready to evaluate."""

    derived: dict[str, Expression]
    label: Expression
    known: Expression | None
    task: str = "binary"

    def matches(self, features: FeaturesConfig, task: str = "binary") -> bool:
        """Whether these were parsed from this section's texts for `task` (a copied config may have other ones)."""
        return (
            task == self.task
            and {k: e.text for k, e in self.derived.items()} == features.derived
            and self.label.text == features.label.expr
            and (self.known.text if self.known else None) == features.label.known
        )


LABEL_KINDS: dict[str, tuple[tuple[Kind, ...], str]] = {
    "binary": (("bool",), "a condition (train.task binary)"),
    "multiclass": (("string", "number"), "a text or a number (train.task multiclass)"),
    "regression": (("number",), "a number (train.task regression)"),
}
"""What the label expression must give for each train.task."""


def compile_features(
    features: FeaturesConfig,
    columns: Mapping[str, Kind],
    task: str = "binary",
    label_columns: Mapping[str, Kind] | None = None,
) -> tuple[CompiledFeatures | None, list[tuple[Loc, str]]]:
    """Parse every expression of the section over the base and joined `columns`; each derived feature may
    use the ones before it; the label must suit `task` and reads `label_columns` when it has a source of its own.
    Returns the compiled section (None when any is refused) and the problems."""
    problems: list[tuple[Loc, str]] = []
    known_columns: dict[str, Kind] = dict(columns)
    derived: dict[str, Expression] = {}
    for name, text in features.derived.items():
        try:
            derived[name] = parse_expression(text, known_columns)
        except ExpressionError as exc:
            problems.append((("features", "derived", name), str(exc)))
            continue
        known_columns[name] = derived[name].kind

    label_known = dict(label_columns) if label_columns is not None else known_columns

    def parse(loc: Loc, text: str, kinds: tuple[Kind, ...], what: str) -> Expression | None:
        try:
            expression = parse_expression(text, label_known)
        except ExpressionError as exc:
            problems.append((loc, str(exc)))
            return None
        if expression.kind not in kinds:
            problems.append((loc, f"must be {what}, but gives a {expression.kind}: `{text.strip()}`"))
            return None
        return expression

    label_kinds, label_what = LABEL_KINDS[task]
    label = parse(("features", "label", "expr"), features.label.expr, label_kinds, label_what)
    known = None
    if features.label.known is not None:
        known = parse(("features", "label", "known"), features.label.known, ("bool",), "a condition")
    if problems or label is None:
        return None, problems
    return CompiledFeatures(derived, label, known, task), problems
