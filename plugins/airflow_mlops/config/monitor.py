"""The `monitor:` section of a pipeline config: window, input and prediction drift, quality, alerts, retrains."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from airflow_mlops.config.schema import Strict, check_conn_id, check_schedule

NumericMethod = Literal["wasserstein", "ks", "psi", "kl_div", "jensenshannon", "anderson", "cramer_von_mises", "t_test"]
CategoricalMethod = Literal["jensenshannon", "chisquare", "psi", "kl_div", "TVD", "z"]
DriftMethod = Literal[
    "wasserstein",
    "ks",
    "psi",
    "kl_div",
    "jensenshannon",
    "anderson",
    "cramer_von_mises",
    "t_test",
    "chisquare",
    "TVD",
    "z",
]
RetrainTrigger = Literal["drift", "quality", "prediction_drift", "estimated_quality", "age"]
DriftWeighting = Literal["none", "importance"]
MonitorSource = Literal["inference_log", "predictions"]
_EMAIL = re.compile(r"[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+")


def _all_triggers() -> list[RetrainTrigger]:
    return ["drift", "quality", "prediction_drift", "estimated_quality", "age"]


def _all_sources() -> list[MonitorSource]:
    return ["inference_log", "predictions"]


class DriftConfig(Strict):
    """Drift of production inputs against the champion's reference sample (Evidently DataDriftPreset)."""

    columns: list[str] = Field(default_factory=list, description="Feature columns to check (empty: every model input).")
    numeric_method: NumericMethod = Field(default="wasserstein", description="Stat test of numeric columns.")
    numeric_threshold: float = Field(
        default=0.1, gt=0, description="Its threshold (normed Wasserstein: distance in reference standard deviations)."
    )
    categorical_method: CategoricalMethod = Field(default="jensenshannon", description="Stat test of categories.")
    categorical_threshold: float = Field(default=0.1, gt=0, description="Its threshold.")
    methods: dict[str, DriftMethod] = Field(
        default_factory=dict, description="{column: stat test} overriding the above."
    )
    thresholds: dict[str, float] = Field(default_factory=dict, description="{column: threshold} overriding the above.")
    critical: list[str] = Field(
        default_factory=list, description="Columns whose drift alone counts as drift of the data."
    )
    share_threshold: float = Field(
        default=0.3, gt=0, le=1, description="Drift of the data when this share of the checked columns drifted."
    )
    weighting: DriftWeighting = Field(
        default="none",
        description=(
            "How the share counts columns. none: each checked column alike. importance: each by the champion's"
            " permutation importance of it (logged at training as `importance.<column>`), so a drifted column the"
            " model hardly uses hardly counts; the plain share is still reported. A champion without logged"
            " importance is judged by the plain share (said in the reasons)."
        ),
    )
    alarm: bool = Field(
        default=True,
        description="Drift of the data raises the alarm `drift`; false: reported only, the decision ignores it.",
    )
    sample_rows: int = Field(
        default=20000, ge=100, description="Rows sampled from each side, so time and memory stay bounded."
    )
    min_rows: int = Field(default=200, ge=1, description="Fewer current rows: insufficient data, no verdict.")


class PredictionDriftConfig(Strict):
    """Drift of the champion's outputs on the window against its outputs on its reference sample.

    The outputs are P(true) (binary), the predicted value (regression), or the predicted class and each class
    probability (multiclass), of the rows the champion itself predicted (batch scores and model-server requests).
    Evidently compares them as it compares features; the verdict is that of `prediction` (multiclass: the class
    mix; class probabilities are shown and logged, not judged). Not an alarm by default: moved outputs often
    follow an input drift that already alarms, and on their own they are a lead to look at, not proof of harm.
    """

    enabled: bool = Field(default=True, description="Compare the output distributions (report and MLflow figures).")
    alarm: bool = Field(
        default=False,
        description=(
            "Drifted outputs raise the alarm `prediction_drift` (a retrain when it is among retrain.triggers);"
            " false: reported only, the decision ignores it."
        ),
    )
    numeric_method: NumericMethod = Field(
        default="wasserstein", description="Stat test of numeric outputs (probabilities, predicted values)."
    )
    numeric_threshold: float = Field(
        default=0.1, gt=0, description="Its threshold (normed Wasserstein: distance in reference standard deviations)."
    )
    categorical_method: CategoricalMethod = Field(
        default="jensenshannon", description="Stat test of the predicted class (multiclass)."
    )
    categorical_threshold: float = Field(default=0.1, gt=0, description="Its threshold.")


class EstimatedQualityConfig(Strict):
    """The champion's primary metric estimated on the window's unlabelled rows from its own class probabilities.

    Confidence-based performance estimation: the metric's mean over label sets drawn from the model's
    probabilities, on the window's rows it scored, against the same estimate on its holdout (logged at training
    as `estimated.holdout.<metric>`). It sees a drop that comes from the inputs moving to where the model is
    unsure, days before the labels mature; it assumes calibrated probabilities and cannot see a changed relation
    between inputs and outcome (the quality check on matured labels does). Classifiers only (a regression has no
    probabilities: reported as not judged).
    """

    enabled: bool = Field(default=False, description="Estimate the champion's metric on the window.")
    max_drop: float = Field(
        default=0.03,
        gt=0,
        description="Alarm `estimated_quality` when the estimate is this much worse than its holdout estimate.",
    )
    min_rows: int = Field(default=500, ge=1, description="Fewer rows scored by the champion: not judged.")
    draws: int = Field(default=20, ge=1, le=1000, description="Label sets drawn (seeded by train.seed).")


class QualityConfig(Strict):
    """Model quality on predictions whose labels have matured."""

    label_delay_days: int = Field(
        default=1, ge=0, description="Days after a prediction before its actual outcome is known."
    )
    max_drop: float = Field(
        default=0.05,
        gt=0,
        description="Alarm when the primary metric is this much worse than the champion's holdout figure.",
    )
    min_rows: int = Field(default=500, ge=1, description="Fewer matured labelled rows: insufficient data.")


class AlertsConfig(Strict):
    """Where alerts go (the task log always gets them)."""

    email: list[str] = Field(default_factory=list, description="Addresses mailed through Airflow's SMTP settings.")
    webhook_conn_id: str | None = Field(
        default=None, description="Airflow HTTP connection; the alert is POSTed to it as JSON."
    )

    _conn_id = field_validator("webhook_conn_id")(check_conn_id)

    @field_validator("email")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            if not _EMAIL.fullmatch(address):
                raise ValueError(f"{address!r} is not an e-mail address")
        return value


class RetrainConfig(Strict):
    """When the monitor triggers `<p>__train`."""

    enabled: bool = Field(default=True, description="Trigger a retrain when an alarm among `triggers` fires.")
    triggers: list[RetrainTrigger] = Field(default_factory=_all_triggers, description="Which alarms trigger a retrain.")
    cooldown_days: int = Field(
        default=7, ge=0, description="No new retrain for this many days after one (one episode, one retrain)."
    )
    max_age_days: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Alarm `age` when the champion's training data ends this many days or more before the monitored day:"
            " a scheduled challenger on fresh data, promoted only if it beats the champion at the gates (null:"
            " no age alarm)."
        ),
    )


class MonitorConfig(Strict):
    """The `<p>__monitor` DAG."""

    schedule: str | None = Field(
        default=None,
        description=(
            "Cron or preset; null: after every ingest, once scored (the Asset <p>.predictions; <p>.features"
            " when predictions are not among the sources)."
        ),
    )
    window_days: int = Field(default=7, ge=1, description="Days of production inputs checked up to the logical date.")
    sources: list[MonitorSource] = Field(
        default_factory=_all_sources,
        description="Production inputs: requests to the model server and batch-scored partitions.",
    )
    reference_rows: int = Field(
        default=20000, ge=100, description="Rows of the training window kept as the reference sample of a model."
    )
    drift: DriftConfig = DriftConfig()
    prediction_drift: PredictionDriftConfig = PredictionDriftConfig()
    quality: QualityConfig = QualityConfig()
    estimated_quality: EstimatedQualityConfig = EstimatedQualityConfig()
    alerts: AlertsConfig = AlertsConfig()
    retrain: RetrainConfig = RetrainConfig()
    experiment: str | None = Field(
        default=None, description="MLflow experiment of the monitor runs; default: `<pipeline>-monitoring`."
    )

    _schedule = field_validator("schedule")(check_schedule)

    @model_validator(mode="after")
    def _sources(self) -> MonitorConfig:
        if not self.sources:
            raise ValueError("sources: name at least one of inference_log, predictions")
        return self
