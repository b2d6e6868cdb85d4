"""Fast scoring of validated request rows: the fitted pipeline's learned encoding replayed on one numpy matrix."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from airflow_mlops.core.train import training

# Largest integer every conversion path (float(), numpy, pandas) turns into the same float64; bigger ones go
# the sklearn way, which decides what they mean.
EXACT_INT = 2**53
SMALL_BATCH = 8  # up to this many rows, trees are walked in Python (faster than the compiled walker's calls)
TOLERANCE = 1e-9  # largest difference to the sklearn path accepted when the fast path is checked at load time
_NAN = float("nan")


class Unsupported(Exception):
    """The pipeline has a shape the fast path does not replay; the message says which part."""


class InexactInput(Exception):
    """A row holds an integer beyond 2**53: the sklearn path (pandas) decides how it becomes a float."""


@dataclass(frozen=True)
class _Categorical:
    """One categorical input: the model-matrix values of each known string, of missing and of unseen strings."""

    column: str
    table: Mapping[str, tuple[float, ...]]
    missing: tuple[float, ...]
    unknown: tuple[float, ...]


class FastPath:
    """Scores request rows (dicts of str/None and int/float/None, already validated) like the pipeline does.

    Build with `compile_pipeline`; `scores` equals `training.positive_scores` on the same rows as a frame.
    """

    def __init__(
        self,
        categorical: Sequence[_Categorical],
        numeric: Sequence[str],
        fill: np.ndarray,
        shift: np.ndarray,
        scale: np.ndarray,
        order: np.ndarray | None,
        estimator: Any,
        positive: int,
        kind: str,
    ) -> None:
        self._categorical = tuple((c.column, c.table, c.missing, c.unknown) for c in categorical)
        self._numeric = tuple(numeric)
        self._num_start = sum(len(c.missing) for c in categorical)
        self.width = self._num_start + len(self._numeric)
        self._fill = fill
        self._impute = bool(np.any(~np.isnan(fill)))
        self._shift = shift
        self._scale = scale
        self._order = order
        self._estimator = estimator
        self._positive = positive
        self.kind = kind
        self._forest = _Forest(estimator) if kind == "hist_gradient_boosting" else None

    def matrix(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """The matrix the final estimator takes, in its column order."""
        out = np.empty((len(rows), self.width), dtype=np.float64)
        categorical = self._categorical
        numeric = self._numeric
        for i, row in enumerate(rows):
            values: list[float] = []
            for column, table, missing, unknown in categorical:
                value = row[column]
                values.extend(missing if value is None else table.get(value, unknown))
            for column in numeric:
                value = row[column]
                if value is None:
                    value = _NAN
                elif type(value) is int and not -EXACT_INT <= value <= EXACT_INT:
                    raise InexactInput(f"{column}: {value}")
                values.append(value)
            out[i] = values
        if numeric:
            # The same operations, in the same order, as SimpleImputer then StandardScaler (neutral when absent).
            block = out[:, self._num_start :]
            if self._impute:
                block = np.where(np.isnan(block), self._fill, block)
            block -= self._shift
            block /= self._scale
            out[:, self._num_start :] = block
        if self._order is not None:
            out = out[:, self._order]
        return out

    def scores(self, rows: Sequence[Mapping[str, Any]], small_batch: int = SMALL_BATCH) -> np.ndarray:
        """Probability of the positive class for each row; trees are walked in Python up to `small_batch` rows."""
        x = self.matrix(rows)
        if self._forest is not None:
            proba = self._forest.proba(x, in_python=len(rows) <= small_batch)
        else:
            proba = self._estimator.predict_proba(x)
        return np.asarray(proba)[:, self._positive].astype("float64")


class _Forest:
    """A fitted HistGradientBoostingClassifier's trees, walked without its input checks and re-encoding.

    Both walkers give HistGradientBoosting's bits: its decisions (NaN, then categorical bitsets, then
    `value <= threshold`) and its summation order (baseline, then tree after tree).
    """

    def __init__(self, estimator: Any) -> None:
        # The walker HistGradientBoosting's predict calls; private, hence imported (and checked) here.
        from sklearn.ensemble._hist_gradient_boosting._predictor import _predict_from_raw_data

        self._walk = _predict_from_raw_data
        self._bitsets, self._f_idx_map = estimator._bin_mapper.make_known_categories_bitsets()
        self._trees = [[(p.nodes, p.raw_left_cat_bitsets) for p in it] for it in estimator._predictors]
        self._baseline = np.asarray(estimator._baseline_prediction, dtype=np.float64)
        self._loss = estimator._loss
        # The same trees as Python tuples, one list for all: each call of the compiled walker costs ~6 us
        # (buffer checks), a Python walk of one row through all trees ~1 us per tree.
        self._nodes: list[tuple[int, float, int, int, bool, tuple[int, ...] | None, tuple[int, ...] | None]] = []
        self._roots: list[list[int]] = [[] for _ in range(self._baseline.shape[1])]
        known = [tuple(int(w) for w in row) for row in self._bitsets]
        for iteration in self._trees:
            for k, (nodes, left_cat_bitsets) in enumerate(iteration):
                start = len(self._nodes)
                self._roots[k].append(start)
                for node in nodes.tolist():
                    node = dict(zip(nodes.dtype.names, node, strict=True))
                    if node["is_leaf"]:  # feature -1 marks a leaf; its value takes the threshold's place
                        self._nodes.append((-1, float(node["value"]), 0, 0, False, None, None))
                        continue
                    left_bits = known_bits = None
                    if node["is_categorical"]:
                        left_bits = tuple(int(w) for w in left_cat_bitsets[node["bitset_idx"]])
                        known_bits = known[int(self._f_idx_map[node["feature_idx"]])]
                    self._nodes.append(
                        (
                            int(node["feature_idx"]),
                            float(node["num_threshold"]),
                            start + int(node["left"]),
                            start + int(node["right"]),
                            bool(node["missing_go_to_left"]),
                            left_bits,
                            known_bits,
                        )
                    )

    def proba(self, x: np.ndarray, in_python: bool) -> np.ndarray:
        raw = self._raw_python(x) if in_python else self._raw_compiled(x)
        return np.asarray(self._loss.predict_proba(raw))

    def _raw_compiled(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        walk, bitsets, f_idx_map = self._walk, self._bitsets, self._f_idx_map
        leaves = np.empty((self._baseline.shape[1], len(self._trees) + 1, n), dtype=np.float64)
        leaves[:, 0, :] = self._baseline.T
        for t, iteration in enumerate(self._trees, start=1):
            for k, (nodes, left_cat_bitsets) in enumerate(iteration):
                walk(nodes, x, left_cat_bitsets, bitsets, f_idx_map, 1, leaves[k, t])
        return np.asfortranarray(np.cumsum(leaves, axis=1)[:, -1, :].T)  # cumsum adds in order

    def _raw_python(self, x: np.ndarray) -> np.ndarray:
        nodes = self._nodes
        baseline = self._baseline[0].tolist()
        raw = np.empty((x.shape[0], len(baseline)), dtype=np.float64, order="F")
        for r, row in enumerate(x.tolist()):
            for k, roots in enumerate(self._roots):
                total = baseline[k]
                for i in roots:
                    while True:
                        feature, threshold, left, right, missing_left, left_bits, known_bits = nodes[i]
                        if feature < 0:
                            total += threshold
                            break
                        value = row[feature]
                        if value != value:  # NaN
                            i = left if missing_left else right
                        elif left_bits is None:
                            i = left if value <= threshold else right
                        elif value < 0:
                            i = left if missing_left else right
                        elif value >= 256:  # never an encoded category; the compiled cast is undefined there
                            raise InexactInput(f"categorical code {value}")
                        else:
                            code = int(value) & 255  # the compiled walker's cast to uint8
                            if left_bits[code >> 5] >> (code & 31) & 1:
                                i = left
                            elif known_bits is not None and known_bits[code >> 5] >> (code & 31) & 1:
                                i = right
                            else:  # a category unseen in training goes the way of missing values
                                i = left if missing_left else right
                raw[r, k] = total
        return raw


# Building ------------------------------------------------------------------------------------------------


def compile_pipeline(
    model: Any, categorical: Sequence[str], numeric: Sequence[str], example: Any = None
) -> tuple[FastPath | None, str]:
    """The fast path of a fitted `training.build_estimator` pipeline, checked against the sklearn path.

    Returns (fast path, description) or (None, why not): shapes it does not replay, and any difference
    above TOLERANCE on the input example, an all-missing row, unseen categories and every known category.
    """
    try:
        fast = _build(model, list(categorical), list(numeric))
        checked = check(fast, model, categorical, numeric, example)
    except Unsupported as exc:
        return None, str(exc)
    except Exception as exc:  # anything unexpected in a model's internals means: use the plain path
        return None, f"{type(exc).__name__}: {exc}"
    return fast, f"{fast.kind} estimator, checked on {checked} rows"


def check(fast: FastPath, model: Any, categorical: Sequence[str], numeric: Sequence[str], example: Any) -> int:
    """Compare the fast path with `training.positive_scores`; raise Unsupported on a difference."""
    rows = probe_rows(fast, categorical, numeric, example)
    columns = [*categorical, *numeric]
    with training.thread_limit(1):
        expected = training.positive_scores(model, pd.DataFrame.from_records(rows, columns=columns))
        # Both tree walkers: the compiled one (large batches) and the Python one (small batches).
        for small_batch in (0, len(rows)):
            got = fast.scores(rows, small_batch=small_batch)
            same_nan = np.array_equal(np.isnan(expected), np.isnan(got))
            gap = float(np.nanmax(np.abs(expected - got), initial=0.0))
            if not same_nan or not gap <= TOLERANCE:
                raise Unsupported(f"fast path differs from the sklearn path by {gap:.3g} on {len(rows)} check rows")
    return len(rows)


def probe_rows(
    fast: FastPath, categorical: Sequence[str], numeric: Sequence[str], example: Any
) -> list[dict[str, Any]]:
    """Rows as a client sends them: the example's, all missing, unseen categories, every known category."""
    rows: list[dict[str, Any]] = []
    if isinstance(example, pd.DataFrame) and len(example) and set(categorical) | set(numeric) <= set(example.columns):
        for record in example.to_dict("records"):
            rows.append(
                {
                    **{c: None if _missing(record[c]) else str(record[c]) for c in categorical},
                    **{c: None if _missing(record[c]) else float(record[c]) for c in numeric},
                }
            )
    rows.append(dict.fromkeys([*categorical, *numeric]))
    numbers = rows[0] if len(rows) > 1 else dict.fromkeys(numeric, 1.0)
    keys = {column: sorted(table) for column, table, _, _ in fast._categorical}
    rows.append({**{c: _unseen(keys.get(c, [])) for c in categorical}, **{c: numbers[c] for c in numeric}})
    for r in range(max((len(k) for k in keys.values()), default=0)):
        rows.append(
            {
                **{c: keys[c][r % len(keys[c])] if keys.get(c) else None for c in categorical},
                **{c: numbers[c] for c in numeric},
            }
        )
    return rows


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def _unseen(known: Sequence[str]) -> str:
    value = "\x00unseen"
    while value in known:
        value += "\x00"
    return value


def _build(model: Any, categorical: list[str], numeric: list[str]) -> FastPath:
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    steps = getattr(model, "steps", None)
    if steps and isinstance(steps[0][1], training.DerivedFeatures):
        steps = steps[1:]  # the server computes derived features before the fast path sees a row
    if not isinstance(model, Pipeline) or not steps or len(steps) != 3:
        raise Unsupported("not a FeatureFrame -> ColumnTransformer -> estimator pipeline")
    (_, frame), (_, prep), (_, estimator) = steps
    if not isinstance(frame, training.FeatureFrame) or not isinstance(prep, ColumnTransformer):
        raise Unsupported("not a FeatureFrame -> ColumnTransformer -> estimator pipeline")
    if list(frame.categorical) != categorical or list(frame.numeric) != numeric:
        raise Unsupported("the served columns are not the FeatureFrame's columns")
    if getattr(prep, "sparse_output_", False):
        raise Unsupported("the ColumnTransformer gives a sparse matrix")
    if not hasattr(estimator, "predict_proba"):
        raise Unsupported(f"{type(estimator).__name__} has no predict_proba")
    classes = list(getattr(model, "classes_", []))
    if 1 not in classes:
        raise Unsupported(f"model classes {classes} do not include the positive class 1")
    kind = "hist_gradient_boosting" if _is_hgb(estimator) else "generic"

    # Where each input column lands in the ColumnTransformer's output, and how numbers are transformed.
    prep_positions: dict[str, list[int]] = {}
    fill: dict[str, float] = {}
    shift: dict[str, float] = {}
    scale: dict[str, float] = {}
    encoders: dict[str, tuple[Any, int]] = {}  # categorical column -> (its encoder, its index there)
    for name, transformer, columns in prep.transformers_:
        if isinstance(transformer, str) and transformer == "drop":
            continue
        if not isinstance(columns, list | tuple) or not all(isinstance(c, str) for c in columns):
            raise Unsupported(f"transformer {name!r} selects columns by something else than their names")
        if not columns:
            continue
        where = prep.output_indices_[name]
        cats = [c for c in columns if c in categorical]
        if cats and len(cats) != len(columns):
            raise Unsupported(f"transformer {name!r} mixes categorical and numeric columns")
        if cats:
            encoder, widths = _categorical_encoder(name, transformer, len(cats))
            for i, c in enumerate(cats):
                encoders[c] = (encoder, i)
        else:
            widths = [1] * len(columns)
            for c, values in zip(columns, _numeric_steps(name, transformer, len(columns)), strict=True):
                fill[c], shift[c], scale[c] = values
        if sum(widths) != where.stop - where.start:
            raise Unsupported(f"transformer {name!r} gives {where.stop - where.start} columns, expected {sum(widths)}")
        at = where.start
        for c, width in zip(columns, widths, strict=True):
            if c in prep_positions:
                raise Unsupported(f"column {c!r} is used by two transformers")
            prep_positions[c] = list(range(at, at + width))
            at += width
    unused = [c for c in [*categorical, *numeric] if c not in prep_positions]
    if unused:
        raise Unsupported(f"column(s) {', '.join(unused)} are dropped by the ColumnTransformer")
    n_prep = sum(len(p) for p in prep_positions.values())

    # HistGradientBoosting re-encodes its categorical features itself (fit-time ColumnTransformer).
    remap = list(range(n_prep))
    inner = getattr(estimator, "_preprocessor", None) if kind == "hist_gradient_boosting" else None
    if inner is not None:
        remap = _inner_positions(inner, n_prep, {p for c in numeric for p in prep_positions[c]})
    n_features = getattr(estimator, "n_features_in_", n_prep)
    if n_features != n_prep:
        raise Unsupported(f"the estimator takes {n_features} columns, the encoding gives {n_prep}")

    tables = _category_tables(model, inner, categorical, numeric, encoders, prep_positions, remap)
    # `matrix` builds categoricals then numbers; `order` puts them where the estimator expects them.
    built = [remap[p] for c in categorical for p in prep_positions[c]] + [remap[prep_positions[c][0]] for c in numeric]
    order = np.argsort(np.asarray(built, dtype=np.intp))
    if sorted(built) != list(range(n_prep)):
        raise Unsupported("the encoded columns do not cover the estimator's input exactly once")
    return FastPath(
        categorical=tables,
        numeric=numeric,
        fill=np.asarray([fill[c] for c in numeric], dtype=np.float64),
        shift=np.asarray([shift[c] for c in numeric], dtype=np.float64),
        scale=np.asarray([scale[c] for c in numeric], dtype=np.float64),
        order=None if np.array_equal(order, np.arange(n_prep)) else order,
        estimator=estimator,
        positive=classes.index(1),
        kind=kind,
    )


def _is_hgb(estimator: Any) -> bool:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return isinstance(estimator, HistGradientBoostingClassifier) and all(
        hasattr(estimator, a) for a in ("_predictors", "_bin_mapper", "_baseline_prediction", "_loss")
    )


def _categorical_encoder(name: str, transformer: Any, n_columns: int) -> tuple[Any, list[int]]:
    """The encoder of a categorical transformer (optionally after a constant imputer) and its output widths."""
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

    steps = [s for _, s in transformer.steps] if isinstance(transformer, Pipeline) else [transformer]
    *before, encoder = steps
    for step in before:
        if not (isinstance(step, SimpleImputer) and step.strategy == "constant" and not step.add_indicator):
            raise Unsupported(f"transformer {name!r}: {type(step).__name__} before the encoder")
    if isinstance(encoder, OrdinalEncoder):
        widths = [1] * n_columns
    elif isinstance(encoder, OneHotEncoder):
        widths = [int(w) for w in getattr(encoder, "_n_features_outs", [])]
    else:
        raise Unsupported(f"transformer {name!r}: categorical encoder {type(encoder).__name__}")
    if len(widths) != n_columns or len(encoder.categories_) != n_columns:
        raise Unsupported(f"transformer {name!r}: cannot tell the output columns of each input column")
    return encoder, widths


def _numeric_steps(name: str, transformer: Any, n_columns: int) -> list[tuple[float, float, float]]:
    """Per column: (value filling NaN or NaN for none, value subtracted, divisor) of a numeric transformer."""
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    fill = np.full(n_columns, np.nan)
    shift = np.zeros(n_columns)
    scale = np.ones(n_columns)
    if (isinstance(transformer, str) and transformer == "passthrough") or (
        # the fitted form of "passthrough"
        isinstance(transformer, FunctionTransformer) and transformer.func is None
    ):
        steps: list[Any] = []
    elif isinstance(transformer, Pipeline):
        steps = [s for _, s in transformer.steps if not (isinstance(s, str) and s == "passthrough")]
    else:
        raise Unsupported(f"transformer {name!r}: numeric {type(transformer).__name__}")
    kinds = [type(s) for s in steps]
    if kinds not in ([], [SimpleImputer], [StandardScaler], [SimpleImputer, StandardScaler]):
        raise Unsupported(f"transformer {name!r}: numeric steps {', '.join(k.__name__ for k in kinds)}")
    for step in steps:
        if isinstance(step, SimpleImputer):
            stats = np.asarray(step.statistics_, dtype=np.float64)
            missing = step.missing_values
            if step.add_indicator or not (isinstance(missing, float) and math.isnan(missing)):
                raise Unsupported(f"transformer {name!r}: imputer with an indicator or non-NaN missing values")
            if stats.shape != (n_columns,) or not np.all(np.isfinite(stats)):
                raise Unsupported(f"transformer {name!r}: imputer without a value for every column")
            fill = stats
        else:
            if step.with_mean:
                shift = np.asarray(step.mean_, dtype=np.float64)
            if step.with_std:
                scale = np.asarray(step.scale_, dtype=np.float64)
            if shift.shape != (n_columns,) or scale.shape != (n_columns,):
                raise Unsupported(f"transformer {name!r}: scaler of another width")
    return list(zip(fill.tolist(), shift.tolist(), scale.tolist(), strict=True))


def _inner_positions(inner: Any, n_prep: int, numeric_positions: set[int]) -> list[int]:
    """Where HistGradientBoosting's own ColumnTransformer puts each of its input columns (numbers unchanged)."""
    from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder

    remap = [-1] * n_prep
    for name, transformer, columns in inner.transformers_:
        if isinstance(transformer, str) and transformer == "drop":
            continue
        positions = np.arange(n_prep)[np.asarray(columns)].tolist() if len(columns) else []
        if not positions:
            continue
        where = inner.output_indices_[name]
        if where.stop - where.start != len(positions):
            raise Unsupported(f"the estimator's transformer {name!r} changes the number of columns")
        if isinstance(transformer, OrdinalEncoder):
            if set(positions) & numeric_positions:
                raise Unsupported("the estimator treats a numeric column as categorical")
        elif not isinstance(transformer, FunctionTransformer):
            raise Unsupported(f"the estimator's transformer {name!r} is a {type(transformer).__name__}")
        for i, p in enumerate(positions):
            remap[p] = where.start + i
    if -1 in remap:
        raise Unsupported("the estimator's own encoding drops a column")
    return remap


def _category_tables(
    model: Any,
    inner: Any,
    categorical: list[str],
    numeric: list[str],
    encoders: Mapping[str, tuple[Any, int]],
    prep_positions: Mapping[str, list[int]],
    remap: Sequence[int],
) -> list[_Categorical]:
    """Run the fitted transforms on every known category, missing and an unseen value: their exact outputs."""
    keys = {c: sorted({v for v in encoders[c][0].categories_[encoders[c][1]].tolist() if isinstance(v, str)})
            for c in categorical}  # fmt: skip
    unseen = {c: _unseen(keys[c]) for c in categorical}
    length = max((len(k) for k in keys.values()), default=0)
    records = [
        {**{c: keys[c][r] if r < len(keys[c]) else None for c in categorical}, **dict.fromkeys(numeric)}
        for r in range(length)
    ]
    records.append(dict.fromkeys([*categorical, *numeric]))  # missing
    records.append({**unseen, **dict.fromkeys(numeric)})
    probe = pd.DataFrame.from_records(records, columns=[*categorical, *numeric])
    with warnings.catch_warnings(), training.thread_limit(1):
        warnings.simplefilter("ignore")  # OneHotEncoder warns about the unseen probe value
        encoded = np.asarray(model[:-1].transform(probe), dtype=np.float64)
        if inner is not None:
            encoded = np.asarray(inner.transform(encoded), dtype=np.float64)
    tables = []
    for c in categorical:
        cols = [remap[p] for p in prep_positions[c]]

        def values(r: int, cols: list[int] = cols) -> tuple[float, ...]:
            return tuple(float(v) for v in encoded[r, cols])

        tables.append(
            _Categorical(
                column=c,
                table={k: values(r) for r, k in enumerate(keys[c])},
                missing=values(length),
                unknown=values(length + 1),
            )
        )
    return tables
