"""The first steps of every logged model: derived features computed from base columns, then typed feature columns.

Both take rows from the feature store, from JSON requests and from MLflow's pyfunc alike. This module imports
numpy, pandas and scikit-learn only: MLflow ships it with the model (code_paths), so `mlflow.pyfunc.load_model`
runs the model where this project is not installed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from airflow_mlops_model.expressions import columns_of, evaluate

DECLARED_TYPES = ("int64", "float64", "string", "bool", "datetime")
"""The column types of a pipeline's sources: what each input of a derived feature is read as."""


class DerivedFeatures(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Adds the derived feature columns a row lacks, computed as the feature build computes them.

    `inputs` are the base columns the expressions read, each with its declared source type; `derived` the
    features in config order, each as (name, expression tree as plain data). A derived column the input
    already carries is used as it is (the feature store's rows hold every one, computed by the same trees);
    a missing one is computed from the inputs, typed as the ingest types the landed sources: numbers as
    int64 (float64 when some are missing or fractional) or float64, text as pandas strings, date-times as
    UTC timestamps (ISO 8601 text accepted; naive times taken as UTC), flags as booleans.
    """

    def __init__(self, inputs: Sequence[Sequence[str]] = (), derived: Sequence[Sequence[Any]] = ()) -> None:
        self.inputs = inputs
        self.derived = derived

    def fit(self, X: pd.DataFrame, y: Any = None) -> DerivedFeatures:
        self._reads()  # a malformed tree fails the fit, not a later prediction
        self.transform(X)
        return self

    def _reads(self) -> dict[str, list[str]]:
        """Per derived feature, the columns its tree reads; raises ValueError for a tree outside the allow-list."""
        declared = dict(self._declared())
        known = set(declared)
        reads: dict[str, list[str]] = {}
        for name, tree in self.derived:
            columns = columns_of(tree)
            unknown = [c for c in columns if c not in known]
            if unknown:
                raise ValueError(f"derived feature {name!r} reads undeclared column(s) {', '.join(unknown)}")
            reads[name] = columns
            known.add(name)
        return reads

    def _declared(self) -> list[tuple[str, str]]:
        out = []
        for name, declared in self.inputs:
            if declared not in DECLARED_TYPES:
                raise ValueError(f"input {name!r}: unknown type {declared!r} ({', '.join(DECLARED_TYPES)})")
            out.append((name, declared))
        return out

    @property
    def derived_columns(self) -> list[str]:
        return [name for name, _ in self.derived]

    @property
    def input_columns(self) -> list[str]:
        return [name for name, _ in self.inputs]

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        if not isinstance(X, pd.DataFrame):
            raise TypeError(f"the model expects a pandas DataFrame with named columns, got {type(X).__name__}")
        wanted = [name for name in self.derived_columns if name not in X.columns]
        if not wanted:
            return X
        reads = self._reads()
        needed = dict.fromkeys(c for name in wanted for c in reads[name])
        declared = dict(self._declared())
        missing = [c for c in needed if c in declared and c not in X.columns]
        if missing:
            raise ValueError(
                f"model input lacks column(s) {', '.join(missing)}, needed to compute {', '.join(wanted)} "
                "(send them, or the derived columns themselves)"
            )
        columns = _Columns(X.index)  # a dict, not a growing DataFrame: a one-row request costs far less
        for column in needed:
            if column in declared:
                columns[column] = typed(X[column], declared[column], column)
        computed: dict[str, Any] = {}
        for name, tree in self.derived:
            if name in X.columns:
                columns[name] = X[name]  # later features may read it
            else:
                columns[name] = computed[name] = evaluate(tree, columns)
        return pd.concat([X, pd.DataFrame(computed, index=X.index)], axis=1)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        names = list(input_features) if input_features is not None else self.input_columns
        return np.asarray([*names, *[n for n in self.derived_columns if n not in names]], dtype=object)


class _Columns(dict[str, Any]):
    """Columns by name and the rows' index: all the expression evaluator reads of a frame."""

    def __init__(self, index: pd.Index) -> None:
        super().__init__()
        self.index = index


def typed(values: pd.Series, declared: str, column: str) -> pd.Series:
    """One input column as the ingest types a landed source column of that type; ValueError names the column."""
    if declared == "datetime":
        if isinstance(values.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(values.dtype):
            stamps = pd.to_datetime(values, utc=True)
        else:
            present = values.notna()
            text = values.where(present, None).astype(object)
            try:
                stamps = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
            except (TypeError, ValueError) as exc:
                raise ValueError(f"column {column!r}: expected ISO 8601 date-times: {exc}") from exc
            bad = stamps.isna() & present
            if bad.any():
                example = values[bad].iloc[0]
                raise ValueError(f"column {column!r}: {example!r:.60} is not an ISO 8601 date-time")
        return stamps.astype("datetime64[ns, UTC]")
    if declared == "string":
        if isinstance(values.dtype, pd.StringDtype):
            return values
        return (
            values.where(values.notna(), None)
            .astype(object)
            .map(lambda v: v if v is None else str(v))
            .astype(pd.StringDtype("python"))
        )
    if declared == "bool":
        flags = values.astype("boolean")
        return flags.astype(bool) if not flags.isna().any() else flags
    try:
        number = pd.to_numeric(values, errors="raise")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"column {column!r} must be numeric: {exc}") from exc
    if declared == "int64" and pd.api.types.is_float_dtype(number.dtype):
        whole = number.notna().all() and bool((number % 1 == 0).all())
        return number.astype("int64") if whole else number
    return number


class FeatureFrame(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Selects the feature columns of raw rows and normalises their types.

    Categoricals become Python objects with NaN for missing (None, NaN and pd.NA alike), numbers float64,
    so the model accepts rows from the feature store, from JSON requests and from MLflow's pyfunc alike.
    """

    def __init__(self, numeric: Sequence[str] = (), categorical: Sequence[str] = ()) -> None:
        self.numeric = numeric
        self.categorical = categorical

    def fit(self, X: pd.DataFrame, y: Any = None) -> FeatureFrame:
        self.transform(X)  # fail at fit time on the same problems as at predict time
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        if not isinstance(X, pd.DataFrame):
            raise TypeError(f"the model expects a pandas DataFrame with named feature columns, got {type(X).__name__}")
        missing = [c for c in [*self.categorical, *self.numeric] if c not in X.columns]
        if missing:
            raise ValueError(f"model input lacks feature column(s): {', '.join(missing)}")
        out: dict[str, Any] = {}
        for col in self.categorical:
            values = X[col]
            known = values.notna().to_numpy()
            as_obj = np.full(len(values), np.nan, dtype=object)
            as_obj[known] = values[known].astype(str).to_numpy()
            out[col] = as_obj
        for col in self.numeric:
            try:
                number = pd.to_numeric(X[col], errors="raise")
            except (TypeError, ValueError) as exc:
                raise ValueError(f"model input column {col!r} must be numeric: {exc}") from exc
            out[col] = pd.Series(number, index=X.index).astype("Float64").to_numpy(dtype="float64", na_value=np.nan)
        return pd.DataFrame(out, index=X.index)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.asarray([*self.categorical, *self.numeric], dtype=object)


def base_columns(derive: DerivedFeatures | None, feature_columns: Sequence[str]) -> list[str]:
    """The columns of a row a client sends: the feature columns but the derived ones, then the other inputs."""
    if derive is None:
        return list(feature_columns)
    derived = set(derive.derived_columns)
    own = [c for c in feature_columns if c not in derived]
    return [*own, *[c for c in derive.input_columns if c not in own]]


def input_types(derive: DerivedFeatures | None) -> Mapping[str, str]:
    """The declared type of each input of the derived features."""
    return dict(derive._declared()) if derive is not None else {}
