"""The `train:` section of a pipeline config: window, split, model, search, metric, gates and registration."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from airflow_mlops.config.schema import DOTTED_NAME, Name, Strict, check_schedule

Scalar = str | int | float | bool | None
Task = Literal["binary", "multiclass", "regression"]
MetricName = Literal[
    "roc_auc",
    "average_precision",
    "log_loss",
    "brier",
    "accuracy",
    "f1",
    "precision",
    "recall",
    "f1_macro",
    "roc_auc_ovr",
    "rmse",
    "mae",
    "r2",
    "mape",
]
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "binary": ("roc_auc", "average_precision", "log_loss", "brier", "accuracy", "f1", "precision", "recall"),
    "multiclass": ("log_loss", "accuracy", "f1_macro", "roc_auc_ovr"),
    "regression": ("rmse", "mae", "r2", "mape"),
}
"""The metrics computed for each task type, in report order."""
METRIC_NAMES: tuple[str, ...] = tuple(dict.fromkeys(m for names in TASK_METRICS.values() for m in names))
DEFAULT_PRIMARY: dict[str, str] = {"binary": "roc_auc", "multiclass": "roc_auc_ovr", "regression": "r2"}
"""The primary metric of each task when `train.metric.primary` is not given (all higher-is-better, in 0..1)."""
DEFAULT_ESTIMATOR: dict[str, str] = {
    "binary": "sklearn.ensemble.HistGradientBoostingClassifier",
    "multiclass": "sklearn.ensemble.HistGradientBoostingClassifier",
    "regression": "sklearn.ensemble.HistGradientBoostingRegressor",
}
"""The estimator of each task when `train.model.estimator` is not given."""
LOWER_IS_BETTER = frozenset({"log_loss", "brier", "rmse", "mae", "mape"})
"""Metrics where a smaller value is better; the gates compare them the other way round."""

_IMPORT_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")

BUILTIN_ESTIMATOR_MODULES: tuple[str, ...] = ("sklearn",)
"""Packages whose classes `train.model.estimator` may always name; others must be in `allowed_modules`."""

DENIED_MODULES = frozenset(
    {
        "builtins",
        "code",
        "codeop",
        "ctypes",
        "importlib",
        "io",
        "marshal",
        "multiprocessing",
        "nt",
        "operator",
        "os",
        "pathlib",
        "pickle",
        "posix",
        "pty",
        "runpy",
        "shutil",
        "socket",
        "subprocess",
        "sys",
        "tempfile",
    }
)
"""Top-level modules that neither `allowed_modules` nor `trusted_types` may name: their objects run commands,
touch files or import code, so trusting them would let a model file or a config do the same."""


def _in_module(path: str, module: str) -> bool:
    return path == module or path.startswith(module + ".")


class Distribution(Strict):
    """A distribution to sample one hyper-parameter from in the random search."""

    dist: Literal["uniform", "loguniform", "randint"] = Field(
        description="uniform and loguniform give floats in [low, high]; randint gives integers in [low, high]."
    )
    low: float = Field(description="Lower bound of the sampled values.")
    high: float = Field(description="Upper bound of the sampled values (greater than low).")

    @model_validator(mode="after")
    def _bounds(self) -> Distribution:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.dist == "loguniform" and self.low <= 0:
            raise ValueError("loguniform needs low > 0")
        if self.dist == "randint" and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError("randint needs integer bounds")
        return self


class SearchConfig(Strict):
    """An optional small random search; candidates are ranked on the validation days."""

    params: dict[str, list[Scalar] | Distribution] = Field(
        min_length=1, description="{estimator parameter: list of values or a distribution}."
    )
    n_iter: int = Field(
        default=8, ge=1, le=200, description="Candidates to try at most (the configured params are one more)."
    )
    max_seconds: float = Field(default=300, gt=0, description="Stop starting new candidates after this long.")

    @field_validator("params")
    @classmethod
    def _non_empty_lists(cls, value: dict[str, list[Scalar] | Distribution]) -> dict[str, list[Scalar] | Distribution]:
        for name, choices in value.items():
            if isinstance(choices, list) and not choices:
                raise ValueError(f"{name}: give at least one value")
        return value


class ModelConfig(Strict):
    """The estimator and the preprocessing around it; the logged model takes raw feature rows."""

    estimator: str = Field(
        default="sklearn.ensemble.HistGradientBoostingClassifier",
        description=(
            "Import path of the estimator, in `sklearn` or in a package of `allowed_modules`: a classifier with"
            " predict_proba for binary and multiclass, a regressor for regression (default for regression:"
            " `sklearn.ensemble.HistGradientBoostingRegressor`)."
        ),
    )
    params: dict[str, Scalar | list[Scalar]] = Field(default_factory=dict, description="Estimator parameters.")
    categorical: Literal["native", "ordinal", "onehot"] = Field(
        default="native",
        description=(
            "native: ordinal codes declared as categorical to an estimator with `categorical_features`"
            " (HistGradientBoosting); ordinal: codes as numbers; onehot: one column per frequent value."
        ),
    )
    numeric_impute: Literal["none", "median", "mean"] = Field(
        default="none", description="Fill missing numbers (none: the estimator handles NaN itself)."
    )
    scale_numeric: bool = Field(default=False, description="Standardise numeric columns (linear models).")
    min_category_frequency: int = Field(
        default=1, ge=1, description="onehot: values seen fewer times in training share one 'infrequent' column."
    )
    refit_with_validation: bool = Field(
        default=True, description="Refit the selected parameters on train + validation days before the holdout."
    )
    threads: int | None = Field(
        default=1,
        ge=1,
        description=(
            "OpenMP/BLAS threads for fit, scoring and importance; 1 avoids the heavy slowdown of spinning"
            " threads when several tasks share a worker's cores; null: all cores."
        ),
    )
    trusted_types: list[str] = Field(
        default_factory=list,
        description=(
            "Types to trust when saving and loading the skops model, beyond the project's allow-list (what an"
            " estimator outside scikit-learn keeps in its fitted state), e.g. `xgboost.core.Booster`."
        ),
    )
    allowed_modules: list[str] = Field(
        default_factory=list,
        description=(
            "Packages besides `sklearn` whose classes `estimator` may name, e.g. `xgboost` or"
            " `mycompany.models`. Their code runs in the workers: list only packages you trust."
        ),
    )

    @field_validator("estimator")
    @classmethod
    def _import_path(cls, value: str) -> str:
        if not _IMPORT_PATH.match(value):
            raise ValueError(f"{value!r} is not an import path like package.module.Class")
        return value

    @field_validator("trusted_types")
    @classmethod
    def _type_paths(cls, value: list[str]) -> list[str]:
        for item in value:
            if not _IMPORT_PATH.match(item):
                raise ValueError(f"{item!r} is not a type path like package.module.Class")
            if item.split(".")[0] in DENIED_MODULES:
                raise ValueError(f"{item!r}: types of {item.split('.')[0]!r} are never trusted (they can run code)")
        return value

    @field_validator("allowed_modules")
    @classmethod
    def _module_names(cls, value: list[str]) -> list[str]:
        for item in value:
            if not DOTTED_NAME.match(item):
                raise ValueError(f"{item!r} is not a module name like package or package.module")
            if item.split(".")[0] in DENIED_MODULES:
                raise ValueError(f"{item!r}: estimators cannot come from {item.split('.')[0]!r}")
        return value

    @model_validator(mode="after")
    def _estimator_allowed(self) -> ModelConfig:
        if not self.estimator_allowed():
            modules = [*BUILTIN_ESTIMATOR_MODULES, *self.allowed_modules]
            raise ValueError(
                f"estimator {self.estimator!r} is not in an allowed module ({', '.join(modules)}); "
                "list its package under train.model.allowed_modules if you trust it"
            )
        return self

    def estimator_allowed(self) -> bool:
        """Whether `estimator` is in sklearn or an allowed module (checked again before it is imported)."""
        modules = [*BUILTIN_ESTIMATOR_MODULES, *self.allowed_modules]
        return any(_in_module(self.estimator.rpartition(".")[0], m) for m in modules)


class MetricConfig(Strict):
    """The metric that ranks models and the threshold of the label metrics."""

    primary: MetricName = Field(
        default="roc_auc",
        description=(
            "Ranks search candidates and drives the gates; one of the task's metrics. binary: roc_auc,"
            " average_precision, log_loss, brier, accuracy, f1, precision, recall; multiclass: log_loss, accuracy,"
            " f1_macro, roc_auc_ovr (default); regression: rmse, mae, r2 (default), mape."
        ),
    )
    threshold: float = Field(
        default=0.5,
        gt=0,
        lt=1,
        description="binary: probability from which a row is predicted positive (accuracy, f1, ...).",
    )


class GatesConfig(Strict):
    """Quality gates a challenger must pass to get the `challenger` alias; null disables a gate."""

    min_primary: float | None = Field(
        default=0.6,
        description=(
            "Floor of the primary metric on the holdout (a ceiling for the lower-is-better ones: log_loss, brier,"
            " rmse, mae, mape)."
        ),
    )
    min_improvement: float | None = Field(
        default=0.0,
        description=(
            "Challenger minus champion on the same holdout, in the metric's better direction; a negative"
            " value tolerates a small regression. Skipped on the first run (no champion)."
        ),
    )
    max_slice_disparity: float | None = Field(
        default=0.25, ge=0, description="Largest allowed gap of the primary metric between slices of one column."
    )
    slice_columns: list[str] = Field(default_factory=list, description="Columns whose values are the slices.")
    min_slice_rows: int = Field(
        default=200, ge=1, description="Slices with fewer holdout rows are reported, not gated."
    )


class TrainConfig(Strict):
    """The `<p>__train` DAG."""

    schedule: str | None = Field(
        default="@weekly", description="Cron or preset; null: only triggered (monitor, by hand)."
    )

    _schedule = field_validator("schedule")(check_schedule)
    task: Task = Field(
        default="binary",
        description=(
            "binary: the label is a condition, the model gives the probability of true; multiclass: the label is"
            " a text or whole number with a few values, the model gives a probability per class; regression:"
            " the label is a number, the model predicts it."
        ),
    )
    window_days: int = Field(default=60, ge=3, le=3660, description="Days of features up to the logical date.")
    validation_days: int = Field(default=7, ge=0, description="Days before the holdout used to rank search candidates.")
    holdout_days: int = Field(default=7, ge=1, description="Latest days of the window, scored for the gates.")
    min_rows: int = Field(default=1000, ge=1, description="Fewest labelled rows in the window to train at all.")
    model: ModelConfig = ModelConfig()
    search: SearchConfig | None = None
    seed: int = Field(default=42, ge=0, description="Seed of the estimator, the search and the importance sampling.")
    metric: MetricConfig = MetricConfig()
    gates: GatesConfig = GatesConfig()
    registered_model_name: Name | None = Field(
        default=None, description="MLflow registered model; default: the pipeline name."
    )
    trigger_deploy: bool = Field(default=False, description="Trigger <p>__deploy with the version when the gates pass.")

    @model_validator(mode="before")
    @classmethod
    def _task_defaults(cls, data: Any) -> Any:
        """The estimator and primary metric of the task when the YAML leaves them out."""
        task = data.get("task") if isinstance(data, dict) else None
        if task not in TASK_METRICS or task == "binary":  # binary: the field defaults are its defaults
            return data
        out = dict(data)
        defaults = (("model", "estimator", DEFAULT_ESTIMATOR), ("metric", "primary", DEFAULT_PRIMARY))
        for section, key, default in defaults:
            given = out.get(section)
            if given is None:
                out[section] = {key: default[task]}
            elif isinstance(given, dict) and key not in given:
                out[section] = {**given, key: default[task]}
            elif isinstance(given, Strict) and key not in given.model_fields_set:
                out[section] = given.model_copy(update={key: default[task]})
        return out

    @model_validator(mode="after")
    def _window_fits(self) -> TrainConfig:
        needed = self.validation_days + self.holdout_days + 1
        if self.window_days < needed:
            raise ValueError(
                f"window_days ({self.window_days}) must leave at least one training day after "
                f"validation_days ({self.validation_days}) and holdout_days ({self.holdout_days}): use >= {needed}"
            )
        if self.search is not None and self.validation_days == 0:
            raise ValueError("search needs validation_days >= 1 (candidates are ranked on the validation days)")
        return self

    def model_name(self, pipeline: str) -> str:
        """Registered model name in MLflow."""
        return self.registered_model_name or pipeline


def train_cross_check(
    train: TrainConfig, feature_columns: list[str], key_columns: list[str]
) -> list[tuple[tuple[str | int, ...], str]]:
    """Problems of a train section against the pipeline's columns, as (key path, message) pairs.

    `PipelineConfig` calls it from its cross-reference check so the error names the key.
    """
    problems: list[tuple[tuple[str | int, ...], str]] = []
    if train.metric.primary not in TASK_METRICS[train.task]:
        problems.append(
            (
                ("train", "metric", "primary"),
                f"{train.metric.primary!r} is not a {train.task} metric "
                f"(use one of {', '.join(TASK_METRICS[train.task])})",
            )
        )
    usable = [*feature_columns, *key_columns]
    for i, col in enumerate(train.gates.slice_columns):
        if col not in usable:
            problems.append(
                (
                    ("train", "gates", "slice_columns", i),
                    f"column {col!r} is not a feature or key column ({', '.join(usable)})",
                )
            )
    return problems
