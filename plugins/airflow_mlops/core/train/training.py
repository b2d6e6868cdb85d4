"""The model: feature spec, the sklearn pipeline around the configured estimator, metrics and the fit."""

from __future__ import annotations

import contextlib
import importlib
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from airflow_mlops.config.train import LOWER_IS_BETTER, ModelConfig, SearchConfig, TrainConfig
from airflow_mlops.core.train.tasks import (
    check_estimator,
    compute_metrics,
    model_classes,
    model_scores,
    positive_scores,
)
from airflow_mlops.core.train.window import (
    DS_COLUMN,
    FEATURES_ZONE,
    DataSummary,
    Split,
    TrainingData,
    TrainingDataError,
    content_hash,
    load_window,
    partition_ranges,
    split_by_time,
    window_dates,
)
from airflow_mlops.errors import PermanentError
from airflow_mlops_model.expressions import columns_of
from airflow_mlops_model.steps import DerivedFeatures, FeatureFrame

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

    from airflow_mlops.config import PipelineConfig

__all__ = [  # the window's names are re-exported: callers use `training.<name>` for both
    "DS_COLUMN",
    "FEATURES_ZONE",
    "MISSING_SLICE",
    "Candidate",
    "DataSummary",
    "DerivedFeatures",
    "FeatureFrame",
    "FeatureSpec",
    "FitResult",
    "ModelConfigError",
    "Split",
    "TrainingData",
    "TrainingDataError",
    "better",
    "build_estimator",
    "compute_metrics",
    "content_hash",
    "feature_spec",
    "fit",
    "import_estimator",
    "load_window",
    "model_scores",
    "partition_ranges",
    "positive_scores",
    "split_by_time",
    "thread_limit",
    "validation_metrics",
    "window_dates",
]

MISSING_SLICE = "(missing)"


class ModelConfigError(PermanentError, ValueError):
    """The model section of the train config cannot be turned into an estimator; the message names the key."""


# Model -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureSpec:
    """Model inputs split by kind, the label, and how the derived features are computed from base columns."""

    numeric: list[str]
    categorical: list[str]
    label: str
    inputs: list[tuple[str, str]] = field(default_factory=list)
    """The base columns the derived features read, each with its declared source type."""
    derived: list[tuple[str, Any]] = field(default_factory=list)
    """Each derived feature, in config order, with its checked expression tree as plain data."""

    @property
    def columns(self) -> list[str]:
        return [*self.categorical, *self.numeric]

    def derive_step(self) -> DerivedFeatures | None:
        """The model's first step: the derived features a row lacks, computed from its base columns."""
        if not self.derived:
            return None
        return DerivedFeatures(inputs=[list(i) for i in self.inputs], derived=[list(d) for d in self.derived])


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
    derived = cfg.compiled_features.derived
    types = {**base.columns, **declared}  # the base source's columns and the joined ones, by feature name
    inputs = {c: types[c] for e in derived.values() for c in columns_of(e.data) if c not in derived}
    return FeatureSpec(
        numeric=numeric,
        categorical=categorical,
        label=cfg.features.label.name,
        inputs=list(inputs.items()),
        derived=[(name, e.data) for name, e in derived.items()],
    )


def _is_numeric_dtype(dtype: Any) -> bool:
    return bool(pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype))


def import_estimator(model_cfg: ModelConfig) -> type:
    """The estimator class `train.model.estimator` names, e.g. `sklearn.ensemble.HistGradientBoostingClassifier`.

    Only from sklearn or `train.model.allowed_modules` (the config checked it; checked again before anything
    is imported), and only a scikit-learn estimator class: nothing else is instantiated.
    """
    from sklearn.base import BaseEstimator

    path = model_cfg.estimator
    if not model_cfg.estimator_allowed():
        raise ModelConfigError(f"train.model.estimator: {path!r} is not in sklearn or train.model.allowed_modules")
    module_name, _, class_name = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelConfigError(f"train.model.estimator: cannot import module {module_name!r}: {exc}") from exc
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        raise ModelConfigError(f"train.model.estimator: {module_name!r} has no class {class_name!r}")
    if not issubclass(cls, BaseEstimator):
        raise ModelConfigError(f"train.model.estimator: {path} is not a scikit-learn estimator (BaseEstimator)")
    return cls


def build_estimator(
    model_cfg: ModelConfig,
    feature_columns: Sequence[str],
    categorical_columns: Sequence[str],
    seed: int,
    params: Mapping[str, Any] | None = None,
    task: str = "binary",
    derive: DerivedFeatures | None = None,
) -> Pipeline:
    """A sklearn Pipeline ([DerivedFeatures ->] FeatureFrame -> encoding -> estimator) that takes raw rows.

    `params` (a search candidate) override the configured estimator params; the estimator must suit `task`;
    `derive` (FeatureSpec.derive_step) computes the derived features of rows that carry base columns only.
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    categorical = [c for c in feature_columns if c in set(categorical_columns)]
    numeric = [c for c in feature_columns if c not in set(categorical_columns)]
    cls = import_estimator(model_cfg)
    estimator = cls()
    unfit = check_estimator(estimator, task, model_cfg.estimator)
    if unfit:
        raise ModelConfigError(f"train.model.estimator: {unfit}")
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
    first: list[tuple[str, Any]] = [("derive", derive)] if derive is not None else []
    frame = FeatureFrame(numeric=numeric, categorical=categorical)
    return Pipeline([*first, ("features", frame), ("prep", prep), ("model", estimator)])


# Metrics ---------------------------------------------------------------------------------------------------

SCORERS = {
    "roc_auc": "roc_auc",
    "average_precision": "average_precision",
    "log_loss": "neg_log_loss",
    "brier": "neg_brier_score",
    "accuracy": "accuracy",
    "f1": "f1",
    "precision": "precision",
    "recall": "recall",
}


def better(metric: str, a: float, b: float) -> bool:
    """Whether `a` is strictly better than `b` for this metric (NaN is never better)."""
    if math.isnan(a):
        return False
    if math.isnan(b):
        return True
    return a < b if metric in LOWER_IS_BETTER else a > b


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


def validation_metrics(model: Any, rows: pd.DataFrame, train_cfg: TrainConfig, spec: FeatureSpec) -> dict[str, float]:
    """Every metric of the task of a fitted model on labelled rows."""
    task = train_cfg.task
    scores = model_scores(model, rows[spec.columns], task)
    y = rows[spec.label].to_numpy()
    return compute_metrics(y, scores, train_cfg.metric.threshold, task, model_classes(model))


def _fit(split: Split, train_cfg: TrainConfig, spec: FeatureSpec) -> FitResult:
    started = time.monotonic()
    model_cfg = train_cfg.model
    task = train_cfg.task
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
        model = _fit_one(model_cfg, spec, train_cfg.seed, {}, both[spec.columns], both[spec.label].to_numpy(), task)
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
        model = _fit_one(model_cfg, spec, train_cfg.seed, params, x_train, y_train, task)
        score = None
        if has_validation:
            score = validation_metrics(model, split.validation, train_cfg, spec)[primary]
        candidates.append(Candidate(params=params, validation=score, seconds=round(time.monotonic() - t0, 3)))
        if best is None or (score is not None and better(primary, score, best[2])):
            best = (params, model, math.nan if score is None else score)
    assert best is not None
    params, model, _ = best
    found_metrics: dict[str, float] = {}
    if has_validation:
        found_metrics = validation_metrics(model, split.validation, train_cfg, spec)
    refit = model_cfg.refit_with_validation and has_validation
    if refit:
        both = pd.concat([split.train, split.validation], ignore_index=True)
        model = _fit_one(model_cfg, spec, train_cfg.seed, params, both[spec.columns], both[spec.label].to_numpy(), task)
    final_params = {k: _plain(v) for k, v in model.named_steps["model"].get_params(deep=False).items()}
    return FitResult(
        model=model,
        params=final_params,
        candidates=candidates,
        validation_metrics=found_metrics,
        search_stopped_by_time=stopped,
        refit_with_validation=refit,
        seconds=round(time.monotonic() - started, 3),
        train_rows=len(split.train) + (len(split.validation) if refit else 0),
    )


def _fit_one(
    model_cfg: ModelConfig,
    spec: FeatureSpec,
    seed: int,
    params: Mapping[str, Any],
    x: pd.DataFrame,
    y: np.ndarray,
    task: str = "binary",
) -> Pipeline:
    model = build_estimator(model_cfg, spec.columns, spec.categorical, seed, params, task, spec.derive_step())
    if task != "regression" and len(np.unique(y)) < 2:
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
