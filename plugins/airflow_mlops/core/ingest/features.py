"""Feature build: joins the validated sources of one date, derives features and the label."""

from __future__ import annotations

import pandas as pd

from airflow_mlops.config import PipelineConfig
from airflow_mlops.config.expressions import Expression
from airflow_mlops.errors import PermanentError

PARTITION_COLUMN = "ds"


class FeatureBuildError(PermanentError, ValueError):
    """The feature definition cannot be applied to the data; the message names the feature."""


def _evaluate(df: pd.DataFrame, expression: Expression, what: str) -> pd.Series:
    try:
        result = expression.evaluate(df)
    except Exception as exc:
        raise FeatureBuildError(f"{what}: cannot evaluate {expression.text!r}: {exc}") from exc
    if not isinstance(result, pd.Series) or len(result) != len(df):
        raise FeatureBuildError(f"{what}: {expression.text!r} must give one value per row")
    return result


def _label(values: pd.Series, task: str, name: str) -> pd.Series:
    """The label as the feature store keeps it: nullable boolean (binary), Float64 (regression), and for
    multiclass text or whole numbers (Int64)."""
    if task == "binary":
        return values.astype("boolean")
    if task == "regression" or pd.api.types.is_numeric_dtype(values.dtype):
        number = pd.to_numeric(values).astype("Float64")
        if task == "regression":
            return number
        whole = number.isna() | (number == number.round())
        if not bool(whole.all()):
            raise FeatureBuildError(f"label {name!r}: a multiclass label must be a text or a whole number")
        return number.astype("Int64")
    return values.astype("string")


def label_column(cfg: PipelineConfig, df: pd.DataFrame, *, empty: bool = False) -> pd.Series:
    """The label of each row of `df` (the base rows, or a label source's rows), null where `known` is false,
    typed as the feature store keeps it; `empty`: all null (the label comes later, from its own source)."""
    spec, compiled, task = cfg.features, cfg.compiled_features, cfg.train.task
    if empty:
        return _label(pd.Series([pd.NA] * len(df), index=df.index, dtype="object"), task, spec.label.name)
    label = _label(_evaluate(df, compiled.label, f"label {spec.label.name!r}"), task, spec.label.name)
    if compiled.known is not None:
        known = _evaluate(df, compiled.known, f"label {spec.label.name!r} (known)").astype(bool)
        label[~known] = pd.NA  # type: ignore[call-overload]
    return label


def join_sources(cfg: PipelineConfig, sources: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The base rows with the joined columns (`features.joins`, left joins): what a client of the model server
    knows of a row, and what the derived features are computed from."""
    spec = cfg.features
    df = sources[spec.base].reset_index(drop=True)
    for join in spec.joins:
        right = sources[join.source][[*join.keys, *join.columns]].rename(columns=join.columns)
        clash = (set(right.columns) - set(join.keys)) & set(df.columns)
        if clash:
            raise FeatureBuildError(f"join of {join.source!r}: columns {sorted(clash)} already exist; rename them")
        if right.duplicated(join.keys).any():
            n = int(right.duplicated(join.keys).sum())
            raise FeatureBuildError(
                f"join of {join.source!r}: {n} rows share a key {join.keys}; joining would duplicate rows"
            )
        df = df.merge(right, on=join.keys, how="left", validate="many_to_one")
    return df


def build_features(cfg: PipelineConfig, ds: str, sources: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Feature rows of one logical date from validated source frames keyed by source name.

    Columns: `ds`, the key, the timestamp, `cfg.feature_columns` and the label (nullable boolean for
    train.task binary, Float64 for regression, text or Int64 for multiclass; null where it is not known yet, and
    always null with a label source of its own: those labels land later, see core.ingest.labels).
    """
    spec, compiled = cfg.features, cfg.compiled_features
    df = join_sources(cfg, sources)
    for name, expression in compiled.derived.items():
        df[name] = _evaluate(df, expression, f"derived feature {name!r}")
    df[spec.label.name] = label_column(cfg, df, empty=cfg.label_source is not None)
    df[PARTITION_COLUMN] = ds
    columns = [PARTITION_COLUMN, *spec.key, spec.timestamp, *cfg.feature_columns, spec.label.name]
    # Key columns may also be features (e.g. origin): keep each column once, first place wins.
    out = df[list(dict.fromkeys(columns))].copy()
    for col in out.columns:
        if out[col].dtype == object:
            out[col] = out[col].astype("string")
    return out.sort_values([*spec.key]).reset_index(drop=True)
