"""Training: the feature window, a time split, the model pipeline, fit, evaluation, gates, model card and plots."""

from __future__ import annotations

import contextlib
import importlib
import io
import math
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from airflow_mlops.config.train import LOWER_IS_BETTER, GatesConfig, ModelConfig, SearchConfig, TrainConfig
from airflow_mlops.core.lake import paths
from airflow_mlops.core.lake.hashing import combine_hashes, frame_hash
from airflow_mlops.core.lake.storage import Lake

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

    from airflow_mlops.config import PipelineConfig

FEATURES_ZONE = "features"
MISSING_SLICE = "(missing)"
DS_COLUMN = "ds"


class TrainingDataError(ValueError):
    """The feature window cannot be used for training; the message names the window, file or column."""


class ModelConfigError(ValueError):
    """The model section of the train config cannot be turned into an estimator; the message names the key."""


# Data window ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataSummary:
    """What a model was trained on: the window, its partitions and their content hash (JSON-safe)."""

    pipeline: str
    window_start: str
    window_end: str
    source_uri: str
    partitions: list[str]
    partition_uris: list[str]
    partition_hashes: dict[str, str]
    content_hash: str
    rows_read: int
    rows_labelled: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DataSummary:
        return cls(**dict(data))


@dataclass
class TrainingData:
    """The labelled rows of a window (column `ds` = partition date) and its summary."""

    frame: pd.DataFrame
    summary: DataSummary

    @property
    def partitions(self) -> list[str]:
        return self.summary.partitions

    @property
    def content_hash(self) -> str:
        return self.summary.content_hash


def window_dates(end_ds: str, window_days: int) -> tuple[str, str]:
    """First and last date (inclusive) of the `window_days` days ending on `end_ds`."""
    end = date.fromisoformat(end_ds)
    return (end - timedelta(days=window_days - 1)).isoformat(), end.isoformat()


def content_hash(partition_hashes: Mapping[str, str]) -> str:
    """sha256 over `ds:hash` lines sorted by date: the same partitions give the same hash in any order."""
    return combine_hashes(f"{ds}:{partition_hashes[ds]}" for ds in sorted(partition_hashes))


def load_window(
    lake: Lake,
    cfg: PipelineConfig,
    end_ds: str,
    window_days: int,
    *,
    min_rows: int = 1,
    min_partitions: int = 1,
) -> TrainingData:
    """Labelled feature rows of the partitions that exist in [end_ds - window_days + 1, end_ds].

    Rows whose label is not known yet (null) are dropped. The label becomes 0/1 (int8). Each partition's
    hash is `frame_hash` of its content (as the ingest computes it), independent of the Parquet writer.
    Raises TrainingDataError when fewer than `min_partitions` partitions or `min_rows` rows are found.
    """
    start, end = window_dates(end_ds, window_days)
    pipeline = cfg.name
    label = cfg.features.label.name
    needed = [*cfg.feature_columns, label]
    source_uri = lake.uri(paths.features_root(pipeline))
    dates = [ds for ds in lake.partitions(FEATURES_ZONE, pipeline, "") if start <= ds <= end]
    frames: list[pd.DataFrame] = []
    hashes: dict[str, str] = {}
    uris: list[str] = []
    rows_read = 0
    for ds in dates:
        uri = lake.uri(paths.features(pipeline, ds))
        if not lake.exists(uri):
            continue  # a partition folder without the features file is not a finished partition
        raw = lake.read_bytes(uri)
        try:
            part = pd.read_parquet(io.BytesIO(raw), engine="pyarrow")
        except Exception as exc:  # pyarrow raises several types for a corrupt file
            raise TrainingDataError(f"{uri}: not a readable Parquet file: {exc}") from exc
        missing = [c for c in needed if c not in part.columns]
        if missing:
            raise TrainingDataError(
                f"{uri}: missing column(s) {', '.join(missing)} (feature columns and label of {pipeline})"
            )
        rows_read += len(part)
        hashes[ds] = frame_hash(part)
        part[DS_COLUMN] = ds  # the partition is the truth for the row's date
        frames.append(part[part[label].notna()])
        uris.append(uri)
    found = sorted(hashes)
    if len(found) < min_partitions:
        raise TrainingDataError(
            f"{source_uri}: window {start}..{end} has {len(found)} feature partition(s), "
            f"at least {min_partitions} needed (ingest the missing days or widen the window)"
        )
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*needed, DS_COLUMN])
    frame[label] = _label_to_int(frame[label], label, source_uri)
    if len(frame) < min_rows:
        raise TrainingDataError(
            f"{source_uri}: window {start}..{end} has {len(frame)} labelled row(s) in {len(found)} partition(s); "
            f"train.min_rows is {min_rows}"
        )
    summary = DataSummary(
        pipeline=pipeline,
        window_start=start,
        window_end=end,
        source_uri=source_uri,
        partitions=found,
        partition_uris=uris,
        partition_hashes=hashes,
        content_hash=content_hash(hashes),
        rows_read=rows_read,
        rows_labelled=len(frame),
    )
    return TrainingData(frame=frame, summary=summary)


def _label_to_int(values: pd.Series, label: str, where: str) -> pd.Series:
    if values.empty:
        return values.astype("int8")
    if pd.api.types.is_bool_dtype(values.dtype):
        return values.astype("int8")
    uniques = set(pd.unique(values))
    if not uniques <= {0, 1}:  # True == 1 and False == 0, so bool-like objects pass too
        shown = ", ".join(sorted(map(repr, uniques))[:5])
        raise TrainingDataError(f"{where}: label column {label!r} must be boolean (0/1), found {shown}")
    return values.astype("int8")


def partition_ranges(partitions: Sequence[str]) -> str:
    """Dates compressed into runs of consecutive days, e.g. `2013-01-01..2013-01-31, 2013-02-02`."""
    days = sorted(date.fromisoformat(p) for p in partitions)
    runs: list[tuple[date, date]] = []
    for day in days:
        if runs and day - runs[-1][1] == timedelta(days=1):
            runs[-1] = (runs[-1][0], day)
        else:
            runs.append((day, day))
    return ", ".join(a.isoformat() if a == b else f"{a.isoformat()}..{b.isoformat()}" for a, b in runs)


# Split ---------------------------------------------------------------------------------------------------


@dataclass
class Split:
    """Train, validation and holdout rows, split by date: every holdout day is after every train day."""

    train: pd.DataFrame
    validation: pd.DataFrame
    holdout: pd.DataFrame
    train_days: list[str]
    validation_days: list[str]
    holdout_days: list[str]

    def summary(self) -> dict[str, Any]:
        """Day ranges and row counts of the three parts (JSON-safe)."""

        def part(days: list[str], rows: pd.DataFrame) -> dict[str, Any]:
            return {
                "start": days[0] if days else None,
                "end": days[-1] if days else None,
                "days": len(days),
                "rows": len(rows),
            }

        return {
            "train": part(self.train_days, self.train),
            "validation": part(self.validation_days, self.validation),
            "holdout": part(self.holdout_days, self.holdout),
        }


def split_by_time(frame: pd.DataFrame, validation_days: int, holdout_days: int) -> Split:
    """Split on the partition dates present: the last `holdout_days` dates are the holdout, the
    `validation_days` before them the validation, the rest the training days. No shuffling."""
    days = sorted(frame[DS_COLUMN].unique().tolist())
    if len(days) < validation_days + holdout_days + 1:
        raise TrainingDataError(
            f"{len(days)} day(s) of data ({days[0] if days else '-'}..{days[-1] if days else '-'}) cannot give "
            f"holdout_days={holdout_days}, validation_days={validation_days} and at least one training day"
        )
    holdout = days[len(days) - holdout_days :]
    validation = days[len(days) - holdout_days - validation_days : len(days) - holdout_days]
    train = days[: len(days) - holdout_days - validation_days]
    # The ranges must not touch: leakage across time would make the holdout optimistic.
    assert max(train) < min(validation or holdout) and (not validation or max(validation) < min(holdout))
    assert (
        not (set(train) & set(validation)) and not (set(validation) & set(holdout)) and not (set(train) & set(holdout))
    )
    by_day = frame[DS_COLUMN]
    return Split(
        train=frame[by_day.isin(train)].reset_index(drop=True),
        validation=frame[by_day.isin(validation)].reset_index(drop=True),
        holdout=frame[by_day.isin(holdout)].reset_index(drop=True),
        train_days=train,
        validation_days=validation,
        holdout_days=holdout,
    )


# Model -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureSpec:
    """Model inputs split by kind, and the label."""

    numeric: list[str]
    categorical: list[str]
    label: str

    @property
    def columns(self) -> list[str]:
        return [*self.categorical, *self.numeric]


def feature_spec(cfg: PipelineConfig, frame: pd.DataFrame | None = None) -> FeatureSpec:
    """Numeric and categorical feature columns from the declared source types (derived ones from `frame`)."""
    declared: dict[str, str] = {}
    base = cfg.sources[cfg.features.base]
    for col in cfg.features.keep:
        declared[col] = base.columns[col]
    for join in cfg.features.joins:
        for src_col, dst in join.columns.items():
            declared[dst] = cfg.sources[join.source].columns[src_col]
    numeric: list[str] = []
    categorical: list[str] = []
    for col in cfg.feature_columns:
        kind = declared.get(col)
        if kind is None:  # derived: its type is whatever the expression gave
            is_text = frame is not None and col in frame.columns and not _is_numeric_dtype(frame[col].dtype)
            kind = "string" if is_text else "float64"
        if kind == "datetime":
            raise ModelConfigError(f"feature column {col!r} is a datetime: derive numbers from it (features.derived)")
        (categorical if kind == "string" else numeric).append(col)
    return FeatureSpec(numeric=numeric, categorical=categorical, label=cfg.features.label.name)


def _is_numeric_dtype(dtype: Any) -> bool:
    return bool(pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype))


class FeatureFrame(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """First step of every model: selects the feature columns of raw rows and normalises their types.

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


def import_estimator(path: str) -> type:
    """The estimator class at an import path like `sklearn.ensemble.HistGradientBoostingClassifier`."""
    module_name, _, class_name = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelConfigError(f"train.model.estimator: cannot import module {module_name!r}: {exc}") from exc
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        raise ModelConfigError(f"train.model.estimator: {module_name!r} has no class {class_name!r}")
    return cls


def build_estimator(
    model_cfg: ModelConfig,
    feature_columns: Sequence[str],
    categorical_columns: Sequence[str],
    seed: int,
    params: Mapping[str, Any] | None = None,
) -> Pipeline:
    """A sklearn Pipeline (FeatureFrame -> encoding -> estimator) that takes raw feature rows.

    `params` (a search candidate) override the configured estimator params.
    """
    from sklearn.base import is_classifier
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    categorical = [c for c in feature_columns if c in set(categorical_columns)]
    numeric = [c for c in feature_columns if c not in set(categorical_columns)]
    cls = import_estimator(model_cfg.estimator)
    estimator = cls()
    if not is_classifier(estimator) or not hasattr(estimator, "predict_proba"):
        raise ModelConfigError(f"train.model.estimator: {model_cfg.estimator} is not a classifier with predict_proba")
    merged = {**model_cfg.params, **(params or {})}
    available = estimator.get_params()
    unknown = sorted(set(merged) - set(available))
    if unknown:
        raise ModelConfigError(f"train.model.params: {model_cfg.estimator} has no parameter(s) {', '.join(unknown)}")
    if "random_state" in available and "random_state" not in merged:
        merged["random_state"] = seed
    if model_cfg.categorical == "native" and categorical:
        if "categorical_features" not in available:
            raise ModelConfigError(
                f"train.model.categorical: {model_cfg.estimator} has no native categorical support; "
                "use ordinal or onehot"
            )
        merged["categorical_features"] = list(range(len(categorical)))  # categoricals come first below
    estimator.set_params(**merged)

    steps: list[tuple[str, Any, list[str]]] = []
    if categorical:
        if model_cfg.categorical == "native":
            # Codes must stay below max_bins; rare values beyond that share one code.
            max_cats = min(int(merged.get("max_bins", 255)), 255)
            cat: Any = OrdinalEncoder(
                handle_unknown="use_encoded_value",
                unknown_value=np.nan,
                encoded_missing_value=np.nan,
                max_categories=max_cats,
            )
        elif model_cfg.categorical == "ordinal":
            cat = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-2)
        else:
            min_freq = model_cfg.min_category_frequency if model_cfg.min_category_frequency > 1 else None
            cat = Pipeline(
                [
                    ("impute", SimpleImputer(strategy="constant", fill_value=MISSING_SLICE)),
                    (
                        "onehot",
                        OneHotEncoder(
                            handle_unknown="infrequent_if_exist", min_frequency=min_freq, sparse_output=False
                        ),
                    ),
                ]
            )
        steps.append(("categorical", cat, categorical))
    if numeric:
        num_steps: list[tuple[str, Any]] = []
        if model_cfg.numeric_impute != "none":
            num_steps.append(("impute", SimpleImputer(strategy=model_cfg.numeric_impute)))
        if model_cfg.scale_numeric:
            num_steps.append(("scale", StandardScaler()))
        steps.append(("numeric", Pipeline(num_steps) if num_steps else "passthrough", numeric))
    prep = ColumnTransformer(steps, remainder="drop", verbose_feature_names_out=False)
    return Pipeline(
        [("features", FeatureFrame(numeric=numeric, categorical=categorical)), ("prep", prep), ("model", estimator)]
    )


# Metrics ---------------------------------------------------------------------------------------------------

_SCORERS = {
    "roc_auc": "roc_auc",
    "average_precision": "average_precision",
    "log_loss": "neg_log_loss",
    "brier": "neg_brier_score",
    "accuracy": "accuracy",
    "f1": "f1",
    "precision": "precision",
    "recall": "recall",
}


def compute_metrics(y_true: np.ndarray, y_score: np.ndarray, threshold: float) -> dict[str, float]:
    """Every supported metric; ranking metrics are NaN when the rows hold one class only."""
    from sklearn import metrics as skm

    y_pred = (y_score >= threshold).astype("int8")
    both = len(np.unique(y_true)) == 2
    clipped = np.clip(y_score, 1e-15, 1 - 1e-15)
    return {
        "roc_auc": float(skm.roc_auc_score(y_true, y_score)) if both else math.nan,
        "average_precision": float(skm.average_precision_score(y_true, y_score)) if both else math.nan,
        "log_loss": float(skm.log_loss(y_true, clipped, labels=[0, 1])) if len(y_true) else math.nan,
        "brier": float(skm.brier_score_loss(y_true, y_score)) if len(y_true) else math.nan,
        "accuracy": float(skm.accuracy_score(y_true, y_pred)) if len(y_true) else math.nan,
        "f1": float(skm.f1_score(y_true, y_pred, zero_division=0)),
        "precision": float(skm.precision_score(y_true, y_pred, zero_division=0)),
        "recall": float(skm.recall_score(y_true, y_pred, zero_division=0)),
    }


def better(metric: str, a: float, b: float) -> bool:
    """Whether `a` is strictly better than `b` for this metric (NaN is never better)."""
    if math.isnan(a):
        return False
    if math.isnan(b):
        return True
    return a < b if metric in LOWER_IS_BETTER else a > b


def positive_scores(model: Any, rows: pd.DataFrame) -> np.ndarray:
    """Probability of the positive class (label 1/True) for each row."""
    proba = np.asarray(model.predict_proba(rows))
    classes = list(getattr(model, "classes_", [0, 1]))
    if 1 not in classes:
        raise ValueError(f"model classes {classes} do not include the positive class 1")
    return proba[:, classes.index(1)].astype("float64")


def thread_limit(threads: int | None) -> contextlib.AbstractContextManager[Any]:
    """Cap OpenMP/BLAS threads (HistGradientBoosting predicts ~20x slower with threads fighting for cores)."""
    if threads is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    limiter: contextlib.AbstractContextManager[Any] = threadpool_limits(limits=threads)
    return limiter


# Fit -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """One tried parameter set and its validation score."""

    params: dict[str, Any]
    validation: float | None
    seconds: float


@dataclass
class FitResult:
    """The final model, the parameters chosen and what the search tried."""

    model: Pipeline
    params: dict[str, Any]
    candidates: list[Candidate]
    validation_metrics: dict[str, float]
    search_stopped_by_time: bool
    refit_with_validation: bool
    seconds: float
    train_rows: int


def _candidate_params(search: SearchConfig | None, seed: int) -> list[dict[str, Any]]:
    """The configured params first, then up to n_iter distinct sampled ones."""
    if search is None:
        return [{}]
    from scipy import stats
    from sklearn.model_selection import ParameterSampler

    space: dict[str, Any] = {}
    for name, choice in search.params.items():
        if isinstance(choice, list):
            space[name] = choice
        elif choice.dist == "uniform":
            space[name] = stats.uniform(choice.low, choice.high - choice.low)
        elif choice.dist == "loguniform":
            space[name] = stats.loguniform(choice.low, choice.high)
        else:
            space[name] = stats.randint(int(choice.low), int(choice.high) + 1)
    out: list[dict[str, Any]] = [{}]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a grid smaller than n_iter is sampled whole
        for params in ParameterSampler(space, n_iter=search.n_iter, random_state=seed):
            clean = {k: v.item() if isinstance(v, np.generic) else v for k, v in params.items()}
            if clean not in out:
                out.append(clean)
    return out


def fit(split: Split, train_cfg: TrainConfig, spec: FeatureSpec) -> FitResult:
    """Fit the configured model; with a search, rank candidates on the validation days within max_seconds.

    The chosen parameters are refitted on train + validation days when `refit_with_validation` (without a
    search that is the only fit); validation metrics are reported when a fit on the train days alone exists.
    Runs within train.model.threads.
    """
    with thread_limit(train_cfg.model.threads):
        return _fit(split, train_cfg, spec)


def _fit(split: Split, train_cfg: TrainConfig, spec: FeatureSpec) -> FitResult:
    started = time.monotonic()
    model_cfg = train_cfg.model
    primary = train_cfg.metric.primary
    x_train, y_train = split.train[spec.columns], split.train[spec.label].to_numpy()
    has_validation = len(split.validation) > 0
    candidates: list[Candidate] = []
    best: tuple[dict[str, Any], Any, float] | None = None
    stopped = False
    budget = train_cfg.search.max_seconds if train_cfg.search else math.inf
    if train_cfg.search is None and model_cfg.refit_with_validation and has_validation:
        # Nothing to choose between: one fit on train + validation days (half the time of fit-then-refit).
        both = pd.concat([split.train, split.validation], ignore_index=True)
        model = _fit_one(model_cfg, spec, train_cfg.seed, {}, both[spec.columns], both[spec.label].to_numpy())
        seconds = round(time.monotonic() - started, 3)
        return FitResult(
            model=model,
            params={k: _plain(v) for k, v in model.named_steps["model"].get_params(deep=False).items()},
            candidates=[Candidate(params={}, validation=None, seconds=seconds)],
            validation_metrics={},
            search_stopped_by_time=False,
            refit_with_validation=True,
            seconds=seconds,
            train_rows=len(both),
        )
    for params in _candidate_params(train_cfg.search, train_cfg.seed):
        if candidates and time.monotonic() - started > budget:
            stopped = True
            break
        t0 = time.monotonic()
        model = _fit_one(model_cfg, spec, train_cfg.seed, params, x_train, y_train)
        score = None
        if has_validation:
            y_val = split.validation[spec.label].to_numpy()
            p_val = positive_scores(model, split.validation[spec.columns])
            score = compute_metrics(y_val, p_val, train_cfg.metric.threshold)[primary]
        candidates.append(Candidate(params=params, validation=score, seconds=round(time.monotonic() - t0, 3)))
        if best is None or (score is not None and better(primary, score, best[2])):
            best = (params, model, math.nan if score is None else score)
    assert best is not None
    params, model, _ = best
    validation_metrics: dict[str, float] = {}
    if has_validation:
        y_val = split.validation[spec.label].to_numpy()
        validation_metrics = compute_metrics(
            y_val, positive_scores(model, split.validation[spec.columns]), train_cfg.metric.threshold
        )
    refit = model_cfg.refit_with_validation and has_validation
    if refit:
        both = pd.concat([split.train, split.validation], ignore_index=True)
        model = _fit_one(model_cfg, spec, train_cfg.seed, params, both[spec.columns], both[spec.label].to_numpy())
    final_params = {k: _plain(v) for k, v in model.named_steps["model"].get_params(deep=False).items()}
    return FitResult(
        model=model,
        params=final_params,
        candidates=candidates,
        validation_metrics=validation_metrics,
        search_stopped_by_time=stopped,
        refit_with_validation=refit,
        seconds=round(time.monotonic() - started, 3),
        train_rows=len(split.train) + (len(split.validation) if refit else 0),
    )


def _fit_one(
    model_cfg: ModelConfig, spec: FeatureSpec, seed: int, params: Mapping[str, Any], x: pd.DataFrame, y: np.ndarray
) -> Pipeline:
    model = build_estimator(model_cfg, spec.columns, spec.categorical, seed, params)
    if len(np.unique(y)) < 2:
        raise TrainingDataError(
            f"training rows hold only one label value ({np.unique(y).tolist()}): cannot fit a classifier"
        )
    try:
        model.fit(x, y)
    except ValueError as exc:
        raise ModelConfigError(
            f"fitting {model_cfg.estimator} with {dict(params) or 'the configured params'} failed: {exc} "
            "(estimators without NaN support need train.model.numeric_impute)"
        ) from exc
    return model


def _plain(value: Any) -> Any:
    """A JSON/MLflow-friendly form of an estimator parameter."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return repr(value)


# Evaluation ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SliceMetric:
    """The primary metric on the holdout rows of one value of a slice column."""

    column: str
    value: str
    rows: int
    positives: int
    primary: float | None
    gated: bool


@dataclass
class Evaluation:
    """A model scored on the holdout: metrics, slices and disparity. Scores are kept for plots, not serialised."""

    name: str
    primary_metric: str
    metrics: dict[str, float]
    rows: int
    positives: int
    slices: list[SliceMetric]
    disparity: dict[str, float | None]
    max_disparity: float | None
    y_true: np.ndarray | None = field(default=None, repr=False, compare=False)
    y_score: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def primary(self) -> float:
        return self.metrics[self.primary_metric]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (NaN becomes None; the score arrays are left out)."""
        return {
            "name": self.name,
            "primary_metric": self.primary_metric,
            "metrics": {k: _none_if_nan(v) for k, v in self.metrics.items()},
            "rows": self.rows,
            "positives": self.positives,
            "slices": [asdict(s) for s in self.slices],
            "disparity": self.disparity,
            "max_disparity": self.max_disparity,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Evaluation:
        return cls(
            name=data["name"],
            primary_metric=data["primary_metric"],
            metrics={k: math.nan if v is None else float(v) for k, v in data["metrics"].items()},
            rows=int(data["rows"]),
            positives=int(data["positives"]),
            slices=[SliceMetric(**s) for s in data["slices"]],
            disparity=dict(data["disparity"]),
            max_disparity=data["max_disparity"],
        )


def _none_if_nan(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


def evaluate(
    model: Any, holdout: pd.DataFrame, train_cfg: TrainConfig, spec: FeatureSpec, name: str = "challenger"
) -> Evaluation:
    """Score a model on the holdout: all metrics, the primary per slice, and the disparity per slice column."""
    if holdout.empty:
        raise TrainingDataError("the holdout has no rows: nothing to evaluate on")
    primary = train_cfg.metric.primary
    gates = train_cfg.gates
    y_true = holdout[spec.label].to_numpy().astype("int8")
    with thread_limit(train_cfg.model.threads):
        y_score = positive_scores(model, holdout[spec.columns])
    metrics = compute_metrics(y_true, y_score, train_cfg.metric.threshold)
    slices: list[SliceMetric] = []
    disparity: dict[str, float | None] = {}
    for col in gates.slice_columns:
        if col not in holdout.columns:
            raise TrainingDataError(f"slice column {col!r} is not in the holdout rows (train.gates.slice_columns)")
        keys = holdout[col].astype("string").fillna(MISSING_SLICE).to_numpy()
        gated_values: list[float] = []
        for value in sorted(set(keys.tolist())):
            mask = keys == value
            rows = int(mask.sum())
            value_primary = _none_if_nan(
                compute_metrics(y_true[mask], y_score[mask], train_cfg.metric.threshold)[primary]
            )
            gated = rows >= gates.min_slice_rows and value_primary is not None
            if gated and value_primary is not None:
                gated_values.append(value_primary)
            slices.append(SliceMetric(col, str(value), rows, int(y_true[mask].sum()), value_primary, gated))
        disparity[col] = max(gated_values) - min(gated_values) if len(gated_values) >= 2 else None
    found = [d for d in disparity.values() if d is not None]
    return Evaluation(
        name=name,
        primary_metric=primary,
        metrics=metrics,
        rows=len(holdout),
        positives=int(y_true.sum()),
        slices=slices,
        disparity=disparity,
        max_disparity=max(found) if found else None,
        y_true=y_true,
        y_score=y_score,
    )


# Gates -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ForceRequest:
    """A person registering a challenger whatever the gates say, and why."""

    by: str
    reason: str

    def __post_init__(self) -> None:
        if not self.by.strip() or not self.reason.strip():
            raise ValueError("force needs both who (by) and why (reason)")


@dataclass(frozen=True)
class GateResult:
    """One gate: its threshold, what was observed, and the outcome."""

    name: str
    threshold: float | None
    observed: float | None
    passed: bool
    detail: str


@dataclass(frozen=True)
class GateDecision:
    """Whether the challenger gets the `challenger` alias, and why."""

    outcome: Literal["passed", "failed", "forced"]
    first_run: bool
    reason: str
    gates: list[GateResult]
    force: ForceRequest | None = None

    @property
    def passed(self) -> bool:
        """All gates passed (force aside)."""
        return all(g.passed for g in self.gates)

    @property
    def promote(self) -> bool:
        """The version gets the `challenger` alias (gates passed, or forced)."""
        return self.outcome in ("passed", "forced")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GateDecision:
        force = data.get("force")
        return cls(
            outcome=data["outcome"],
            first_run=bool(data["first_run"]),
            reason=data["reason"],
            gates=[GateResult(**g) for g in data["gates"]],
            force=ForceRequest(**force) if force else None,
        )


def decide(
    challenger: Evaluation, champion: Evaluation | None, gates: GatesConfig, force: ForceRequest | None = None
) -> GateDecision:
    """Apply the gates to the challenger (against the champion on the same holdout, when there is one)."""
    metric = challenger.primary_metric
    lower = metric in LOWER_IS_BETTER
    observed = _none_if_nan(challenger.primary)
    results: list[GateResult] = []

    if gates.min_primary is None:
        results.append(GateResult("min_primary", None, observed, True, "disabled"))
    else:
        ok = observed is not None and (observed <= gates.min_primary if lower else observed >= gates.min_primary)
        sign = "<=" if lower else ">="
        results.append(
            GateResult("min_primary", gates.min_primary, observed, ok, f"holdout {metric} {sign} {gates.min_primary}")
        )

    if gates.min_improvement is None:
        results.append(GateResult("min_improvement", None, None, True, "disabled"))
    elif champion is None:
        results.append(
            GateResult(
                "min_improvement", gates.min_improvement, None, True, "no champion: first run, nothing to compare"
            )
        )
    else:
        champ = _none_if_nan(champion.primary)
        if champ is None:
            results.append(
                GateResult(
                    "min_improvement",
                    gates.min_improvement,
                    None,
                    observed is not None,
                    f"champion {metric} undefined on this holdout",
                )
            )
        elif observed is None:
            results.append(
                GateResult(
                    "min_improvement",
                    gates.min_improvement,
                    None,
                    False,
                    f"challenger {metric} undefined on this holdout",
                )
            )
        else:
            gain = champ - observed if lower else observed - champ
            results.append(
                GateResult(
                    "min_improvement",
                    gates.min_improvement,
                    gain,
                    gain >= gates.min_improvement,
                    f"challenger {observed:.4f} vs champion {champ:.4f} ({metric}, better direction)",
                )
            )

    if gates.max_slice_disparity is None:
        results.append(GateResult("max_slice_disparity", None, challenger.max_disparity, True, "disabled"))
    elif challenger.max_disparity is None:
        results.append(
            GateResult(
                "max_slice_disparity",
                gates.max_slice_disparity,
                None,
                True,
                f"no slice column had two slices with >= {gates.min_slice_rows} rows",
            )
        )
    else:
        worst = max(challenger.disparity, key=lambda c: challenger.disparity[c] or -1.0)
        results.append(
            GateResult(
                "max_slice_disparity",
                gates.max_slice_disparity,
                challenger.max_disparity,
                challenger.max_disparity <= gates.max_slice_disparity,
                f"largest gap of {metric} between slices of {worst!r} (slices with >= {gates.min_slice_rows} rows)",
            )
        )

    failed = [g for g in results if not g.passed]
    failed_text = "; ".join(f"{g.name}: observed {_fmt(g.observed)}, threshold {_fmt(g.threshold)}" for g in failed)
    first_run = champion is None
    prefix = "first run: no champion to compare; " if first_run else ""
    if not failed:
        outcome: Literal["passed", "failed", "forced"] = "passed"
        reason = prefix + "all gates passed"
        if force is not None:
            reason += f"; force requested by {force.by} ({force.reason}) was not needed"
    elif force is not None:
        outcome = "forced"
        reason = prefix + f"forced by {force.by}: {force.reason}; failed gates: {failed_text}"
    else:
        outcome = "failed"
        reason = prefix + f"failed gates: {failed_text}"
    return GateDecision(outcome=outcome, first_run=first_run, reason=reason, gates=results, force=force)


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


# Model card ------------------------------------------------------------------------------------------------


def model_card(
    *,
    model_name: str,
    version: str | None,
    data: DataSummary,
    split: Mapping[str, Any],
    estimator: str,
    params: Mapping[str, Any],
    challenger: Evaluation,
    champion: Evaluation | None,
    champion_version: str | None,
    decision: GateDecision,
    airflow_run_url: str | None,
    mlflow_run_url: str | None,
    max_chars: int | None = None,
) -> str:
    """Markdown model card: data window and partitions, content hash, metrics against the champion,
    slices, gates and outcome, and links. With `max_chars`, the slice table shrinks to fit."""
    title = f"# {model_name}" + (f" v{version}" if version else " (challenger)")
    head = [
        title,
        "",
        f"**Outcome: {decision.outcome}**"
        + (" (first run, no champion)" if decision.first_run else "")
        + f": {decision.reason}",
        "",
    ]
    links = ["## Links", ""]
    links.append(f"- Airflow run: {airflow_run_url}" if airflow_run_url else "- Airflow run: (not given)")
    links.append(f"- MLflow run: {mlflow_run_url}" if mlflow_run_url else "- MLflow run: (not given)")
    data_lines = [
        "## Data",
        "",
        f"- Pipeline `{data.pipeline}`, window {data.window_start} .. {data.window_end}",
        f"- {len(data.partitions)} partition(s): {partition_ranges(data.partitions)}",
        f"- Source: `{data.source_uri}`",
        f"- Content hash (sha256 over partition hashes): `{data.content_hash}`",
        f"- Rows: {data.rows_labelled} labelled of {data.rows_read} read",
    ]
    for part in ("train", "validation", "holdout"):
        info = split.get(part) or {}
        if info.get("days"):
            data_lines.append(f"- {part}: {info['start']} .. {info['end']} ({info['days']} days, {info['rows']} rows)")
    data_lines.append("")
    model_lines = ["## Model", "", f"- Estimator: `{estimator}`"]
    shown = {k: v for k, v in params.items() if v is not None}
    if shown:
        model_lines.append("- Params: " + ", ".join(f"`{k}={v}`" for k, v in sorted(shown.items())))
    model_lines.append("")
    champ_label = f"champion v{champion_version}" if champion_version else "champion"
    metric_lines = ["## Holdout metrics", "", f"| metric | challenger | {champ_label} | delta |", "|---|---|---|---|"]
    for key in sorted(challenger.metrics, key=lambda k: (k != challenger.primary_metric, k)):
        ch = challenger.metrics[key]
        cp = champion.metrics.get(key) if champion else None
        delta = _fmt(ch - cp) if cp is not None and not math.isnan(ch) and not math.isnan(cp) else "n/a"
        name = f"**{key}**" if key == challenger.primary_metric else key
        metric_lines.append(f"| {name} | {_fmt(ch)} | {_fmt(cp)} | {delta} |")
    metric_lines += ["", f"{challenger.rows} holdout rows, {challenger.positives} positive.", ""]
    gate_lines = ["## Gates", "", "| gate | threshold | observed | result | detail |", "|---|---|---|---|---|"]
    for g in decision.gates:
        gate_lines.append(
            f"| {g.name} | {_fmt(g.threshold)} | {_fmt(g.observed)} | {'pass' if g.passed else 'FAIL'} | {g.detail} |"
        )
    if decision.force:
        gate_lines += ["", f"Forced by **{decision.force.by}**: {decision.force.reason}"]
    gate_lines.append("")
    champ_slices = {(s.column, s.value): s.primary for s in champion.slices} if champion else {}

    def slice_lines(only_gated: bool) -> list[str]:
        out = [
            f"## Slices ({challenger.primary_metric})",
            "",
            "| column | value | rows | challenger | champion | gated |",
            "|---|---|---|---|---|---|",
        ]
        kept = [s for s in challenger.slices if s.gated or not only_gated]
        for s in kept:
            champ = _fmt(champ_slices.get((s.column, s.value)))
            gated = "yes" if s.gated else "no"
            out.append(f"| {s.column} | {s.value} | {s.rows} | {_fmt(s.primary)} | {champ} | {gated} |")
        for col, gap in challenger.disparity.items():
            out.append(f"\nDisparity of {col}: {_fmt(gap)}")
        if only_gated and len(kept) < len(challenger.slices):
            out.append(
                f"\n{len(challenger.slices) - len(kept)} slice(s) under the row minimum left out; "
                "see the run's model_card.md."
            )
        out.append("")
        return out

    body_start = head + data_lines + model_lines + metric_lines + gate_lines
    for variant in (
        slice_lines(False),
        slice_lines(True),
        ["## Slices", "", "Left out for length; see the run's model_card.md.", ""],
    ):
        text = "\n".join(body_start + variant + links) + "\n"
        if max_chars is None or len(text) <= max_chars:
            return text
    return text[: max(0, (max_chars or 0) - 20)] + "\n\n(truncated)\n"


# Plots -----------------------------------------------------------------------------------------------------


def feature_importance(
    model: Any,
    holdout: pd.DataFrame,
    spec: FeatureSpec,
    metric: str,
    seed: int,
    sample_rows: int = 5000,
    n_repeats: int = 3,
    threads: int | None = 1,
) -> dict[str, float]:
    """Permutation importance (drop of `metric`) of each raw feature column on a holdout sample."""
    from sklearn.inspection import permutation_importance

    sample = (
        holdout.sample(n=min(sample_rows, len(holdout)), random_state=seed) if len(holdout) > sample_rows else holdout
    )
    if sample[spec.label].nunique() < 2 and metric in ("roc_auc", "average_precision"):
        metric = "neg_log_loss"  # ranking metrics need both classes in the sample
    with thread_limit(threads):
        result = permutation_importance(
            model,
            sample[spec.columns],
            sample[spec.label].to_numpy(),
            scoring=_SCORERS.get(metric, metric),
            n_repeats=n_repeats,
            random_state=seed,
            n_jobs=1,
        )
    return {col: float(v) for col, v in zip(spec.columns, result.importances_mean, strict=True)}


def _png(draw: Any, size: tuple[float, float] = (5.0, 4.0)) -> bytes:
    # Figure without pyplot: no global backend state, renders with Agg.
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=100)
    ax = fig.subplots()
    draw(ax)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def roc_png(evaluations: Iterable[Evaluation]) -> bytes:
    """ROC curves of the given evaluations on one chart."""
    from sklearn.metrics import roc_curve

    def draw(ax: Any) -> None:
        for ev in evaluations:
            if ev.y_true is None or ev.y_score is None or len(np.unique(ev.y_true)) < 2:
                continue
            fpr, tpr, _ = roc_curve(ev.y_true, ev.y_score)
            ax.plot(fpr, tpr, label=f"{ev.name} (AUC {ev.metrics['roc_auc']:.3f})")
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
        ax.set(xlabel="False positive rate", ylabel="True positive rate", title="ROC (holdout)")
        ax.legend(loc="lower right")

    return _png(draw)


def precision_recall_png(evaluations: Iterable[Evaluation]) -> bytes:
    """Precision-recall curves of the given evaluations on one chart."""
    from sklearn.metrics import precision_recall_curve

    def draw(ax: Any) -> None:
        for ev in evaluations:
            if ev.y_true is None or ev.y_score is None or len(np.unique(ev.y_true)) < 2:
                continue
            precision, recall, _ = precision_recall_curve(ev.y_true, ev.y_score)
            ax.plot(recall, precision, label=f"{ev.name} (AP {ev.metrics['average_precision']:.3f})")
        ax.set(xlabel="Recall", ylabel="Precision", title="Precision-recall (holdout)", ylim=(0, 1.02))
        ax.legend(loc="upper right")

    return _png(draw)


def calibration_png(evaluations: Iterable[Evaluation], n_bins: int = 10) -> bytes:
    """Reliability diagram: mean predicted probability against the observed rate, per bin."""
    from sklearn.calibration import calibration_curve

    def draw(ax: Any) -> None:
        for ev in evaluations:
            if ev.y_true is None or ev.y_score is None or len(np.unique(ev.y_true)) < 2:
                continue
            observed, predicted = calibration_curve(ev.y_true, ev.y_score, n_bins=n_bins, strategy="quantile")
            ax.plot(predicted, observed, marker="o", label=f"{ev.name} (Brier {ev.metrics['brier']:.3f})")
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
        ax.set(xlabel="Mean predicted probability", ylabel="Observed positive rate", title="Calibration (holdout)")
        ax.legend(loc="upper left")

    return _png(draw)


def confusion_png(evaluation: Evaluation, threshold: float) -> bytes:
    """Confusion matrix of one evaluation at the decision threshold."""
    from sklearn.metrics import confusion_matrix

    assert evaluation.y_true is not None and evaluation.y_score is not None
    matrix = confusion_matrix(evaluation.y_true, (evaluation.y_score >= threshold).astype("int8"), labels=[0, 1])

    def draw(ax: Any) -> None:
        ax.imshow(matrix, cmap="Blues")
        for (i, j), count in np.ndenumerate(matrix):
            ax.text(j, i, str(count), ha="center", va="center", color="black")
        ax.set_xticks([0, 1], labels=["0", "1"])
        ax.set_yticks([0, 1], labels=["0", "1"])
        ax.set(xlabel="Predicted", ylabel="Actual", title=f"{evaluation.name} at threshold {threshold}")

    return _png(draw, (4.0, 4.0))


def importance_png(importance: Mapping[str, float], metric: str) -> bytes:
    """Horizontal bars of permutation importance, largest at the top."""
    items = sorted(importance.items(), key=lambda kv: kv[1])

    def draw(ax: Any) -> None:
        ax.barh([k for k, _ in items], [v for _, v in items], color="tab:blue")
        ax.set(xlabel=f"Drop of {metric} when permuted", title="Permutation importance (holdout sample)")

    return _png(draw, (6.0, max(3.0, 0.3 * len(items) + 1)))


def evaluation_plots(
    challenger: Evaluation, champion: Evaluation | None, importance: Mapping[str, float], threshold: float
) -> dict[str, bytes]:
    """The run's PNG artifacts by file name: ROC, precision-recall, calibration, confusion matrix, importance."""
    both = [challenger, *([champion] if champion is not None and champion.y_score is not None else [])]
    return {
        "roc.png": roc_png(both),
        "precision_recall.png": precision_recall_png(both),
        "calibration.png": calibration_png(both),
        "confusion_matrix.png": confusion_png(challenger, threshold),
        "feature_importance.png": importance_png(importance, challenger.primary_metric),
    }
