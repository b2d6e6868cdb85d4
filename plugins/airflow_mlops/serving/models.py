"""The champions the model server serves: alias checks, loading, validation and the swap of each pipeline's model."""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# The server is its own process, never imported by Airflow's DAG parsing: heavy imports are fine here.
import numpy as np
import pandas as pd

from airflow_mlops.config import PipelineConfig
from airflow_mlops.core.registry.promotion import APPROVED_BY, ROLLED_BACK
from airflow_mlops.core.registry.tags import GATE_PASSED
from airflow_mlops.core.registry.tracking import CHAMPION, RetryPolicy, Tracking, load_local_model
from airflow_mlops.core.train import tasks, training
from airflow_mlops.serving import derived, fastpath
from airflow_mlops_model.steps import DerivedFeatures, base_columns, input_types

log = logging.getLogger("airflow_mlops.serving")


@dataclass(frozen=True)
class ServedModel:
    """One loaded, validated model version: what a request predicts with from start to end."""

    pipeline: str
    name: str
    version: str
    run_id: str | None
    model: Any
    categorical: tuple[str, ...]
    numeric: tuple[str, ...]
    loaded_at: str
    fast: fastpath.FastPath | None = None  # None: every request goes through the sklearn pipeline
    scoring: str = "sklearn pipeline"  # how requests are scored, and why not the fast path
    task: str = "binary"  # the pipeline's train.task, which the model was checked against
    classes: tuple[Any, ...] = ()  # multiclass: the classes of the probability columns, in the model's order
    base: BaseRows | None = None  # rows of base columns, when the model computes derived features

    @property
    def columns(self) -> tuple[str, ...]:
        return (*self.categorical, *self.numeric)


@dataclass(frozen=True)
class BaseRows:
    """The other form of a request row: the base columns a client knows, the model computing the derived ones.

    Date-times are ISO 8601 text (checked as strings here, parsed by the model), flags true, false or null.
    """

    name: str
    version: str
    categorical: tuple[str, ...]
    numeric: tuple[str, ...]
    flags: tuple[str, ...]
    derive: DerivedFeatures
    derived_categorical: tuple[str, ...]
    datetimes: tuple[str, ...] = ()  # the categorical (text) columns read as ISO 8601 date-times
    fast: derived.FastDerive | None = None  # None: every request completes through the model's step (pandas)
    derivation: str = "pandas"  # how derived features are computed, and why not the fast path

    @property
    def columns(self) -> tuple[str, ...]:
        return (*self.categorical, *self.numeric, *self.flags)

    @property
    def derived(self) -> list[str]:
        return self.derive.derived_columns

    def complete(self, rows: list[dict[str, Any]]) -> None:
        """Adds the derived columns to each row (in place), computed by the model's own step; ValueError names
        an input it cannot read."""
        if self.fast is not None:
            try:
                self.fast.complete(rows)
                return
            except derived.Unsupported:
                pass  # a value it does not replay exactly: the model's step decides (and words any error)
        self.complete_pandas(rows)

    def complete_pandas(self, rows: list[dict[str, Any]]) -> None:
        """`complete` through the model's DerivedFeatures step, in pandas."""
        frame = pd.DataFrame.from_records(rows, columns=list(self.columns))
        full = self.derive.transform(frame)
        for name in self.derived:
            values = full[name]
            column: list[Any]
            if name in self.derived_categorical:
                column = [None if pd.isna(v) else str(v) for v in values]
            else:
                number = pd.to_numeric(values).astype("Float64").to_numpy(dtype="float64", na_value=np.nan)
                column = [None if v != v else v for v in number.tolist()]
            for row, value in zip(rows, column, strict=True):
                row[name] = value


def base_rows(
    model: Any, name: str, version: str, categorical: Sequence[str], numeric: Sequence[str]
) -> BaseRows | None:
    """The base-column form of a model with a DerivedFeatures first step (None: rows carry every feature)."""
    steps = getattr(model, "steps", None)
    derive = steps[0][1] if steps else None
    if not isinstance(derive, DerivedFeatures):
        return None
    kinds = {**dict.fromkeys(categorical, "string"), **dict.fromkeys(numeric, "number")}
    declared = {"datetime": "string", "string": "string", "bool": "bool"}
    kinds.update({c: declared.get(t, "number") for c, t in input_types(derive).items() if c not in kinds})
    columns = base_columns(derive, [*categorical, *numeric])
    derived_categorical = tuple(c for c in derive.derived_columns if c in set(categorical))
    try:
        fast: derived.FastDerive | None = derived.FastDerive(derive, derived_categorical)
        derivation = "numpy fast path"
    except derived.Unsupported as exc:
        fast, derivation = None, f"pandas (no fast path: {exc})"
    return BaseRows(
        name=name,
        version=version,
        categorical=tuple(c for c in columns if kinds[c] == "string"),
        numeric=tuple(c for c in columns if kinds[c] == "number"),
        flags=tuple(c for c in columns if kinds[c] == "bool"),
        derive=derive,
        derived_categorical=derived_categorical,
        datetimes=tuple(c for c, t in input_types(derive).items() if t == "datetime" and c in columns),
        fast=fast,
        derivation=derivation,
    )


def check_derivation(base: BaseRows, example: Any) -> BaseRows:
    """`base`, its fast path compared with the model's step on the example's rows (each alone, and all at
    once) and on an all-missing row; without the fast path when they differ anywhere."""
    if base.fast is None:
        return base
    rows: list[dict[str, Any]] = []
    if isinstance(example, pd.DataFrame) and set(base.columns) <= set(example.columns):
        for record in example[list(base.columns)].to_dict("records"):
            rows.append({str(k): None if pd.isna(v) else v for k, v in record.items()})
    rows.append(dict.fromkeys(base.columns))
    try:
        checked = derived.check(base.fast, base.complete_pandas, rows)
    except derived.Unsupported as exc:
        return dataclasses.replace(base, fast=None, derivation=f"pandas (no fast path: it differs: {exc})")
    return dataclasses.replace(base, derivation=f"numpy fast path, checked on {checked} batches")


@dataclass
class PipelineState:
    """The served model of one pipeline (swapped as a single reference) and the last check's outcome."""

    cfg: PipelineConfig
    name: str
    served: ServedModel | None = None
    champion_version: str | None = None
    failed_version: str | None = None
    error: str | None = None
    checked_at: str | None = None


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class NotServable(Exception):
    """A champion version the server refuses whatever its model: unapproved, or rolled back."""


def refusal(tags: Mapping[str, str]) -> str | None:
    """Why a version must not be served (None: it may be): the deploy side gates each version and records
    approvals and rollbacks on it; an alias moved by hand in MLflow skips those, hence checked here again."""
    if ROLLED_BACK in tags:
        return f"it was rolled back ({ROLLED_BACK}: {tags[ROLLED_BACK][:200]})"
    if tags.get(GATE_PASSED) != "true" and not tags.get(APPROVED_BY):
        return f"it carries neither passed quality gates ({GATE_PASSED}=true) nor a recorded approval ({APPROVED_BY})"
    return None


def model_columns(model: Any, cfg: PipelineConfig) -> tuple[list[str], list[str]]:
    """Categorical and numeric inputs: from the model's FeatureFrame step, else from the config."""
    for _, step in (getattr(model, "steps", None) or [])[:2]:  # after the DerivedFeatures step, if any
        if isinstance(step, training.FeatureFrame):
            return list(step.categorical), list(step.numeric)
    spec = training.feature_spec(cfg)
    return spec.categorical, spec.numeric


def validate_model(model: Any, categorical: Sequence[str], numeric: Sequence[str], example: Any,
                   task: str = "binary") -> None:  # fmt: skip
    """Predict on the stored input example and on an all-missing row; raise ValueError unless both give what
    `task` answers: one probability in [0, 1] (binary) or one finite number (regression) per row, or one
    row of class probabilities in [0, 1] (multiclass)."""
    frames = []
    if isinstance(example, pd.DataFrame) and len(example):
        frames.append(example)
    frames.append(pd.DataFrame([dict.fromkeys([*categorical, *numeric])]))
    for frame in frames:
        with training.thread_limit(1):
            scores = tasks.model_scores(model, frame, task)
        shape = (len(frame), len(tasks.model_classes(model))) if task == "multiclass" else (len(frame),)
        valid = scores.shape == shape and bool(np.all(np.isfinite(scores)))
        if valid and task != "regression":
            valid = scores.min() >= 0 and scores.max() <= 1
        if not valid:
            raise ValueError(f"validation prediction on {len(frame)} row(s) gave {scores.tolist()[:5]}")


class ModelStore:
    """The champions of all pipelines: checks the aliases, loads and validates new versions, swaps them in."""

    def __init__(self, configs: Sequence[PipelineConfig], tracking_uri: str) -> None:
        import mlflow

        self.tracking_uri = tracking_uri
        # models:/ downloads resolve through MLflow's global registry URI; this process talks to one server.
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        # Short retries: a registry outage must not hold the poller (the old models keep serving meanwhile).
        self.tracking = Tracking(tracking_uri, retry=RetryPolicy(max_seconds=10.0, initial_backoff=1.0))
        self.states = {cfg.name: PipelineState(cfg, cfg.train.model_name(cfg.name)) for cfg in configs}
        self._lock = threading.Lock()
        self.swaps = 0
        self.failures = 0  # versions that failed to load or validate, or were refused

    def check_all(self, force: bool = False) -> None:
        """Check every pipeline's champion alias; `force` also retries a version that failed before."""
        with self._lock:  # the poller and /admin/reload never load the same version twice at once
            for state in self.states.values():
                try:
                    self._check(state, force)
                except Exception as exc:  # never let one pipeline (or an outage) stop the poller
                    state.error = f"checking alias {CHAMPION!r} of {state.name!r} failed: {exc}"
                    log.warning("%s", state.error)
                state.checked_at = now()

    def _check(self, state: PipelineState, force: bool) -> None:
        version = self.tracking.alias_version(state.name, CHAMPION)
        state.champion_version = version
        if version is None:
            if state.served is not None:  # e.g. a first deployment rolled back: no version is champion now
                log.warning("pipeline %s: alias %r removed, no longer serving version %s", state.cfg.name,
                            CHAMPION, state.served.version)  # fmt: skip
                state.served = None
            state.error = f"registered model {state.name!r} has no {CHAMPION!r} alias"
            return
        if state.served is not None and state.served.version == version:
            state.error = None
            state.failed_version = None
            return
        if version == state.failed_version and not force:
            return  # already refused; /admin/reload retries it
        try:
            served = self._load(state, version)
        except Exception as exc:
            self.failures += 1
            state.failed_version = version
            state.error = f"version {version} of {state.name!r} was not swapped in: {type(exc).__name__}: {exc}"
            log.error("%s", state.error)
            return
        state.served = served  # the swap: one reference; requests in flight keep the model they took
        state.failed_version = None
        state.error = None
        self.swaps += 1
        log.info("pipeline %s now serves %s version %s", state.cfg.name, state.name, version)

    def _load(self, state: PipelineState, version: str) -> ServedModel:
        import mlflow
        from mlflow.models import Model

        uri = f"models:/{state.name}/{version}"
        mv = self.tracking.client.get_model_version(state.name, version)
        why = refusal(dict(mv.tags or {}))
        if why is not None:
            raise NotServable(f"refused to serve {state.name} v{version}: {why}")
        with tempfile.TemporaryDirectory(prefix="mlops-serve-") as tmp:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
            model = load_local_model(local, state.cfg.train.model.trusted_types, where=uri)
            try:
                example = Model.load(str(local)).load_input_example(str(local))
            except Exception as exc:  # a broken example is a broken model version
                raise ValueError(f"cannot read the input example of {uri}: {exc}") from exc
        task = state.cfg.train.task
        tasks.check_model(model, task)  # TaskMismatch: e.g. a regressor registered for a classification task
        categorical, numeric = model_columns(model, state.cfg)
        validate_model(model, categorical, numeric, example, task)
        base = base_rows(model, state.name, version, categorical, numeric)
        if base is not None:
            base = check_derivation(base, example)
        if base is not None and isinstance(example, pd.DataFrame) and len(example):
            example = base.derive.transform(example)  # the fast path is checked on feature rows
        # The fast path is compared with the sklearn path here; a model it cannot replay exactly is still
        # served, through the pipeline.
        if task == "binary":
            fast, detail = fastpath.compile_pipeline(model, categorical, numeric, example)
        else:
            fast, detail = None, f"it replays binary classifiers only, train.task is {task}"
        if fast is None:
            scoring = f"sklearn pipeline (no fast path: {detail})"
            log.warning("%s version %s: scored through the sklearn pipeline, no fast path: %s", state.name, version,
                        detail)  # fmt: skip
        else:
            scoring = f"fast path ({detail})"
            log.info("%s version %s: fast path (%s)", state.name, version, detail)
        return ServedModel(
            pipeline=state.cfg.name,
            name=state.name,
            version=version,
            run_id=mv.run_id,
            model=model,
            categorical=tuple(categorical),
            numeric=tuple(numeric),
            loaded_at=now(),
            fast=fast,
            scoring=scoring,
            task=task,
            classes=tuple(tasks.model_classes(model)) if task == "multiclass" else (),
            base=base,
        )

    def versions(self) -> dict[str, Any]:
        """Per pipeline: model name, version served, when it was loaded, the champion alias and any failure."""
        out: dict[str, Any] = {}
        for pipeline, state in self.states.items():
            served = state.served
            out[pipeline] = {
                "model_name": state.name,
                "version": served.version if served else None,
                "loaded_at": served.loaded_at if served else None,
                "run_id": served.run_id if served else None,
                "scoring": served.scoring if served else None,
                "derived_features": served.base.derivation if served and served.base else None,
                "champion_version": state.champion_version,
                "failed_version": state.failed_version,
                "error": state.error,
                "checked_at": state.checked_at,
            }
        return out
