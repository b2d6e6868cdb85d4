"""MLflow tracking and registry: one run per DAG run, batched logging, idempotent registration."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from airflow_mlops.core.train.evaluation import Evaluation, GateDecision
from airflow_mlops.core.train.training import FeatureSpec, FitResult
from airflow_mlops.core.train.window import TrainingData, partition_ranges

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.entities.model_registry import ModelVersion

from airflow_mlops.core.registry.models import (
    TRUSTED_TYPES,
    UnsafeModelError,
    check_trusted,
    client_columns,
    client_rows,
    load_local_model,
    load_model,
    mlflow_uris,
    model_code,
    model_signature,
    pip_requirements,
    pyfunc_method,
    raw_rows,
    trusted_types,
)
from airflow_mlops.core.registry.retry import RetryPolicy, TrackingError, is_transient, retrying
from airflow_mlops.core.registry.tags import (
    CHALLENGER,
    CHAMPION,
    MAX_DESCRIPTION_CHARS,
    MAX_INPUT_TAG_CHARS,
    MAX_RUN_TAG_CHARS,
    MODEL_NAME,
    REFERENCE_ARTIFACT,
    TAG_PREFIX,
    WINDOW,
    Lineage,
    RunTags,
    chunks,
    clip,
    decision_tags,
    fit_description,
    metric_key,
    quote,
)

__all__ = [  # the model-file, retry and tag names are re-exported: callers import them from here as before
    "CHALLENGER",
    "CHAMPION",
    "MAX_DESCRIPTION_CHARS",
    "MAX_INPUT_TAG_CHARS",
    "MAX_RUN_TAG_CHARS",
    "MODEL_NAME",
    "REFERENCE_ARTIFACT",
    "TAG_PREFIX",
    "TRUSTED_TYPES",
    "Lineage",
    "LoadedModel",
    "LoggedModelInfo",
    "RegisteredVersion",
    "RetryPolicy",
    "RunTags",
    "Tracking",
    "TrackingError",
    "UnsafeModelError",
    "check_trusted",
    "client_columns",
    "client_rows",
    "decision_tags",
    "fit_description",
    "is_transient",
    "load_local_model",
    "load_model",
    "metric_key",
    "model_signature",
    "pip_requirements",
    "raw_rows",
    "retrying",
    "trusted_types",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

# Results ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoggedModelInfo:
    """A model logged to a run (MLflow 3 LoggedModel)."""

    model_id: str
    model_uri: str
    run_id: str
    reused: bool


@dataclass(frozen=True)
class RegisteredVersion:
    """A registered model version and whether this call created it."""

    name: str
    version: str
    aliases: list[str]
    created: bool
    url: str


@dataclass
class LoadedModel:
    """A model loaded from the registry, with the version it came from."""

    model: Any
    name: str
    version: str
    run_id: str | None
    uri: str


# The tracking client ---------------------------------------------------------------------------------------


class Tracking:
    """MLflow operations of the train DAG against one tracking server, each retried on outages."""

    def __init__(
        self,
        tracking_uri: str,
        registry_uri: str | None = None,
        retry: RetryPolicy | None = None,
        ui_url: str | None = None,
    ) -> None:
        """`ui_url`: base URL of the MLflow UI for links (default: the tracking URI when it is http(s))."""
        self.tracking_uri = tracking_uri.rstrip("/")
        self.registry_uri = (registry_uri or tracking_uri).rstrip("/")
        self.retry = retry or RetryPolicy()
        self.retry.apply_http_settings()
        base = ui_url or (self.tracking_uri if self.tracking_uri.startswith(("http://", "https://")) else None)
        self.ui_url = base.rstrip("/") if base else None
        self.client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)

    def _retry(self, operation: Callable[[], T], what: str) -> T:
        return retrying(operation, self.retry, what, self.tracking_uri)

    # Experiments and runs ----------------------------------------------------------------------------------

    def get_or_create_experiment(self, name: str) -> str:
        """Experiment id by name, created on first use; concurrent creators end with the same experiment."""

        def attempt() -> str:
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                try:
                    return str(self.client.create_experiment(name))
                except MlflowException as exc:
                    if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                        raise
                exp = self.client.get_experiment_by_name(name)
                if exp is None:
                    raise TrackingError(f"experiment {name!r} exists and cannot be read on {self.tracking_uri}")
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)
            return str(exp.experiment_id)

        return self._retry(attempt, f"get or create experiment {name!r}")

    def _runs_of(self, experiment_id: str, tags: RunTags) -> list[Run]:
        filter_string = (
            f"tags.`{TAG_PREFIX}dag_id` = {quote(tags.dag_id)} AND tags.`{TAG_PREFIX}dag_run_id` = {quote(tags.run_id)}"
        )
        runs = self.client.search_runs([experiment_id], filter_string=filter_string, max_results=100)
        return sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id))

    def start_or_resume_run(self, experiment: str, tags: RunTags, run_name: str | None = None) -> str:
        """The MLflow run of this DAG run (found by its dag_id and run_id tags), created on first use.

        Should two runs exist (a create retried after a lost response, two tasks racing), the oldest is
        kept and the others deleted, so every caller converges on the same run.
        """
        experiment_id = self.get_or_create_experiment(experiment)

        def attempt() -> str:
            runs = self._runs_of(experiment_id, tags)
            if not runs:
                self.client.create_run(experiment_id, tags=tags.as_tags(), run_name=run_name or tags.run_id)
                runs = self._runs_of(experiment_id, tags)
            keep, extra = runs[0], runs[1:]
            for run in extra:
                self.client.delete_run(run.info.run_id)
            if keep.info.status != "RUNNING":
                self.client.update_run(keep.info.run_id, status="RUNNING")
            self.client.set_tag(keep.info.run_id, f"{TAG_PREFIX}task", tags.task)
            return str(keep.info.run_id)

        return self._retry(attempt, f"start or resume the run of {tags.dag_id}/{tags.run_id}")

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self._retry(lambda: self.client.set_terminated(run_id, status=status), f"end run {run_id}")

    @contextlib.contextmanager
    def failing_run(self, run_id: str) -> Iterator[None]:
        """Mark the run FAILED when the block raises (a retry resumes it as RUNNING), then re-raise."""
        try:
            yield
        except BaseException:
            try:
                self.end_run(run_id, "FAILED")
            except Exception:  # the block's own error is the one to report
                log.exception("Could not mark MLflow run %s FAILED", run_id)
            raise

    def run_url(self, run_id: str) -> str:
        """Link to the run in the MLflow UI."""
        run = self._retry(lambda: self.client.get_run(run_id), f"get run {run_id}")
        return f"{self.ui_url or self.tracking_uri}/#/experiments/{run.info.experiment_id}/runs/{run_id}"

    def version_url(self, name: str, version: str) -> str:
        """Link to a model version in the MLflow UI."""
        return f"{self.ui_url or self.tracking_uri}/#/models/{name}/versions/{version}"

    # Logging -----------------------------------------------------------------------------------------------

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Log params in batches; on a rerun, a param that already has another value is kept and reported."""
        from mlflow.entities import Param

        def attempt() -> None:
            existing = self.client.get_run(run_id).data.params
            new: list[Param] = []
            changed: list[str] = []
            for key, value in params.items():
                text = clip("" if value is None else str(value), 6000)
                if key in existing:
                    if existing[key] != text:
                        changed.append(key)
                    continue
                new.append(Param(key, text))
            for chunk in chunks(new, 100):
                self.client.log_batch(run_id, params=list(chunk))
            if changed:
                # MLflow params are immutable: keep the first value, say which ones this rerun saw differently.
                self.client.set_tag(
                    run_id, f"{TAG_PREFIX}params_changed_on_rerun", clip(",".join(sorted(changed)), MAX_RUN_TAG_CHARS)
                )

        self._retry(attempt, f"log {len(params)} params to run {run_id}")

    def log_metrics(self, run_id: str, metrics: Mapping[str, float | None], step: int = 0) -> None:
        """Log metrics in batches of 1000; None and NaN values are skipped."""
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        items = [
            Metric(key, float(value), stamp, step)
            for key, value in metrics.items()
            if value is not None and math.isfinite(float(value))
        ]

        def attempt() -> None:
            for chunk in chunks(items, 1000):
                self.client.log_batch(run_id, metrics=list(chunk))

        self._retry(attempt, f"log {len(items)} metrics to run {run_id}")

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        """Set run tags in batches of 100 (values clipped to MLflow's limit)."""
        from mlflow.entities import RunTag

        items = [RunTag(k, clip(str(v), MAX_RUN_TAG_CHARS)) for k, v in tags.items()]

        def attempt() -> None:
            for chunk in chunks(items, 100):
                self.client.log_batch(run_id, tags=list(chunk))

        self._retry(attempt, f"set {len(items)} tags on run {run_id}")

    def log_files(self, run_id: str, files: Mapping[str, bytes | str], artifact_path: str | None = None) -> None:
        """Upload in-memory files (PNG bytes, markdown text, JSON) as run artifacts; reruns overwrite."""
        with tempfile.TemporaryDirectory(prefix="mlops-artifacts-") as tmp:
            for name, content in files.items():
                path = Path(tmp, name)
                path.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(content, bytes):
                    path.write_bytes(content)
                else:
                    path.write_text(content, encoding="utf-8")
            self._retry(
                lambda: self.client.log_artifacts(run_id, tmp, artifact_path),
                f"upload {len(files)} artifact(s) to run {run_id}",
            )

    def log_reference(self, run_id: str, frame: pd.DataFrame) -> str:
        """Store a model's reference sample (rows it was trained on, with its scores) as a Parquet artifact.

        The monitor compares production inputs with it. Returns the artifact path; a rerun overwrites it.
        """
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False, engine="pyarrow")
        folder, _, name = REFERENCE_ARTIFACT.rpartition("/")
        self.log_files(run_id, {name: buf.getvalue()}, folder)
        return REFERENCE_ARTIFACT

    def load_reference(self, run_id: str) -> pd.DataFrame | None:
        """The reference sample logged by `log_reference` on a run, or None when the run has none."""
        folder = REFERENCE_ARTIFACT.rpartition("/")[0]

        def attempt() -> pd.DataFrame | None:
            if REFERENCE_ARTIFACT not in {f.path for f in self.client.list_artifacts(run_id, folder)}:
                return None
            with tempfile.TemporaryDirectory(prefix="mlops-reference-") as tmp:
                local = self.client.download_artifacts(run_id, REFERENCE_ARTIFACT, tmp)
                return pd.read_parquet(local, engine="pyarrow")

        return self._retry(attempt, f"load the reference sample of run {run_id}")

    def log_training_data(self, run_id: str, data: TrainingData, spec: FeatureSpec, context: str = "training") -> None:
        """`log_input` of the window: source = the feature zone; digest and tags = content hash and partitions.

        The full partition list, URIs and per-partition hashes go to the artifact data/partitions.json.
        """
        from mlflow.entities import DatasetInput, InputTag

        summary = data.summary
        frame = data.frame[[*spec.columns, spec.label]]
        with warnings.catch_warnings():
            # MLflow warns that a local path matches two source types and that integer columns cannot hold
            # NaN: neither matters for a record of the training data.
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(  # type: ignore[attr-defined]
                frame,
                source=summary.source_uri,
                name=f"{summary.pipeline}.features",
                digest=summary.content_hash[:32],
                targets=spec.label,
            )
            dataset_entity = dataset._to_mlflow_entity()  # computes the schema: inside the filter
        input_tags = {
            "mlflow.data.context": context,
            f"{TAG_PREFIX}content_hash": summary.content_hash,
            WINDOW: f"{summary.window_start}..{summary.window_end}",
            f"{TAG_PREFIX}partition_count": str(len(summary.partitions)),
            f"{TAG_PREFIX}partitions": clip(partition_ranges(summary.partitions), MAX_INPUT_TAG_CHARS),
        }
        entity = DatasetInput(dataset_entity, tags=[InputTag(k, v) for k, v in input_tags.items()])
        self._retry(
            lambda: self.client.log_inputs(run_id, datasets=[entity]), f"log the training data input of run {run_id}"
        )
        self.set_tags(
            run_id,
            {
                f"{TAG_PREFIX}content_hash": summary.content_hash,
                WINDOW: f"{summary.window_start}..{summary.window_end}",
                f"{TAG_PREFIX}partition_count": str(len(summary.partitions)),
                f"{TAG_PREFIX}partitions": partition_ranges(summary.partitions),
                f"{TAG_PREFIX}source_uri": summary.source_uri,
            },
        )
        self.log_files(run_id, {"partitions.json": json.dumps(summary.to_dict(), indent=2)}, "data")

    def log_fit(self, run_id: str, fit: FitResult, split_summary: Mapping[str, Any], estimator: str) -> None:
        """Params of the fitted model and the split, validation metrics, and the search candidates."""
        params: dict[str, Any] = {"estimator": estimator, "refit_with_validation": fit.refit_with_validation}
        params.update({f"model.{k}": v for k, v in fit.params.items()})
        for part, info in split_summary.items():
            for key in ("start", "end", "days", "rows"):
                params[f"split.{part}.{key}"] = info.get(key)
        self.log_params(run_id, params)
        metrics: dict[str, float | None] = {f"validation.{k}": v for k, v in fit.validation_metrics.items()}
        metrics.update(
            {"fit.seconds": fit.seconds, "fit.rows": fit.train_rows, "search.candidates": len(fit.candidates)}
        )
        self.log_metrics(run_id, metrics)
        self.log_files(
            run_id,
            {"candidates.json": json.dumps([c.__dict__ for c in fit.candidates], indent=2, default=str)},
            "search",
        )

    def log_evaluation(self, run_id: str, evaluation: Evaluation, prefix: str) -> None:
        """Holdout metrics, slice metrics and disparity under `prefix` (e.g. `holdout` or `champion.holdout`)."""
        metrics: dict[str, float | None] = {metric_key(prefix, k): v for k, v in evaluation.metrics.items()}
        metrics[metric_key(prefix, "rows")] = evaluation.rows
        for s in evaluation.slices:
            metrics[metric_key(prefix, "slice", s.column, s.value, evaluation.primary_metric)] = s.primary
            metrics[metric_key(prefix, "slice", s.column, s.value, "rows")] = s.rows
        for col, gap in evaluation.disparity.items():
            metrics[metric_key(prefix, "disparity", col)] = gap
        self.log_metrics(run_id, metrics)
        self.log_files(run_id, {f"{prefix}.json": json.dumps(evaluation.to_dict(), indent=2)}, "evaluation")

    def log_decision(self, run_id: str, decision: GateDecision) -> None:
        """The gate outcome, each gate, and a force (who and why) as run tags and evaluation/decision.json."""
        self.set_tags(run_id, decision_tags(decision))
        self.log_files(run_id, {"decision.json": json.dumps(decision.to_dict(), indent=2)}, "evaluation")

    def log_model(
        self,
        run_id: str,
        model: Any,
        spec: FeatureSpec,
        input_example: pd.DataFrame,
        extra_trusted: Sequence[str] = (),
        name: str = MODEL_NAME,
        task: str = "binary",
    ) -> LoggedModelInfo:
        """Log the sklearn pipeline in skops format with signature, input example and the type allow-list, and
        its own code (`airflow_mlops_model`), so plain MLflow loads and serves it without this project.

        `input_example`: rows holding the columns a client sends (base rows), or feature rows (a column they
        lack, e.g. a source column only a derived feature reads, is then missing in the example).
        Idempotent: a model already logged under `name` by this run is reused.
        """
        from airflow_mlops.core.train.tasks import check_model, model_classes

        check_model(model, task)
        import skops.io

        with tempfile.TemporaryDirectory(prefix="mlops-skops-") as tmp:
            probe = Path(tmp, "model.skops")
            skops.io.dump(model, probe)
            found = check_trusted(probe, extra_trusted, where=f"model of run {run_id}")
        signature = model_signature(spec, task, len(model_classes(model)))
        example = client_rows(input_example.head(5), spec)
        experiment_id = self._retry(lambda: self.client.get_run(run_id).info.experiment_id, f"get run {run_id}")

        def attempt() -> LoggedModelInfo:
            filter_string = f"source_run_id = {quote(run_id)} AND name = {quote(name)}"
            existing = sorted(
                self.client.search_logged_models([experiment_id], filter_string=filter_string),
                key=lambda m: (m.creation_timestamp, m.model_id),
            )
            ready = [m for m in existing if str(m.status) == "READY"]
            if ready:
                return LoggedModelInfo(ready[0].model_id, f"models:/{ready[0].model_id}", run_id, reused=True)
            if not existing:
                # Created here rather than by log_model, which would file it under the active (default)
                # experiment instead of the run's.
                self.client.create_logged_model(experiment_id, name=name, source_run_id=run_id, model_type="sklearn")
                existing = sorted(
                    self.client.search_logged_models([experiment_id], filter_string=filter_string),
                    key=lambda m: (m.creation_timestamp, m.model_id),
                )
            target, extra = existing[0], existing[1:]
            for dup in extra:  # a create retried after a lost response
                self.client.delete_logged_model(dup.model_id)
            with mlflow_uris(self.tracking_uri, self.registry_uri), tempfile.TemporaryDirectory() as code:
                info = mlflow.sklearn.log_model(
                    model,
                    name=name,
                    run_id=run_id,
                    model_id=target.model_id,
                    serialization_format="skops",
                    skops_trusted_types=found,
                    signature=signature,
                    input_example=example,
                    pip_requirements=pip_requirements(),
                    code_paths=model_code(Path(code)),
                    pyfunc_predict_fn=pyfunc_method(task),
                )
            return LoggedModelInfo(str(info.model_id), str(info.model_uri), run_id, reused=False)

        return self._retry(attempt, f"log the model of run {run_id}")

    # Registry ----------------------------------------------------------------------------------------------

    def _versions_of(self, name: str, lineage: Lineage) -> list[ModelVersion]:
        filter_string = (
            f"name = {quote(name)} AND tags.`{TAG_PREFIX}dag_id` = {quote(lineage.dag_id)} "
            f"AND tags.`{TAG_PREFIX}dag_run_id` = {quote(lineage.dag_run_id)}"
        )
        found = list(self.client.search_model_versions(filter_string))
        if not found:  # a version created without tags (interrupted before they were set) still has the run id
            found = [
                v
                for v in self.client.search_model_versions(
                    f"name = {quote(name)} AND run_id = {quote(lineage.mlflow_run_id)}"
                )
            ]
        return sorted(found, key=lambda v: int(v.version))

    def register(
        self,
        name: str,
        model: LoggedModelInfo,
        decision: GateDecision,
        card: str,
        lineage: Lineage,
        alias: str = CHALLENGER,
    ) -> RegisteredVersion:
        """Register the run's model as a version: card as description, lineage and gate tags, and the
        `challenger` alias only when the decision promotes it (else a tag says why).

        Idempotent: rerunning the same DAG run finds its version (by dag_id/run_id tags) instead of adding one.
        """

        def ensure_model() -> None:
            try:
                self.client.create_registered_model(name, description=f"Models of pipeline {lineage.pipeline}.")
            except MlflowException as exc:
                if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                    raise

        self._retry(ensure_model, f"create registered model {name!r}")
        tags = {**lineage.as_tags(), **decision_tags(decision), f"{TAG_PREFIX}model_card": card}
        if not decision.promote:
            tags[f"{TAG_PREFIX}not_promoted_reason"] = decision.reason
        description = fit_description(card)
        run_link = self.run_url(model.run_id)

        def attempt() -> tuple[str, bool]:
            versions = self._versions_of(name, lineage)
            created = False
            if not versions:
                self.client.create_model_version(
                    name,
                    source=model.model_uri,
                    run_id=model.run_id,
                    tags=tags,
                    run_link=run_link,
                    description=description,
                    model_id=model.model_id,
                )
                created = True
                versions = self._versions_of(name, lineage)
            keep, extra = versions[0], versions[1:]
            for dup in extra:  # a create retried after a lost response: keep the oldest
                self.client.delete_model_version(name, dup.version)
            version = str(keep.version)
            if not created:
                self.client.update_model_version(name, version, description=description)
                for key, value in tags.items():
                    if keep.tags.get(key) != value:
                        self.client.set_model_version_tag(name, version, key, value)
                if decision.promote and f"{TAG_PREFIX}not_promoted_reason" in keep.tags:
                    self.client.delete_model_version_tag(name, version, f"{TAG_PREFIX}not_promoted_reason")
            return version, created

        version, created = self._retry(
            attempt, f"register a version of {name!r} for {lineage.dag_id}/{lineage.dag_run_id}"
        )

        def set_alias() -> list[str]:
            if decision.promote:
                self.client.set_registered_model_alias(name, alias, version)
            else:
                current = self._alias_version(name, alias)
                if current == version:  # an earlier attempt of this run promoted it; this one does not
                    self.client.delete_registered_model_alias(name, alias)
            return list(self.client.get_model_version(name, version).aliases)

        aliases = self._retry(set_alias, f"set alias {alias!r} of {name!r}")
        return RegisteredVersion(
            name=name, version=version, aliases=aliases, created=created, url=self.version_url(name, version)
        )

    def _alias_version(self, name: str, alias: str) -> str | None:
        try:
            return str(self.client.get_model_version_by_alias(name, alias).version)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                return None
            raise

    def alias_version(self, name: str, alias: str) -> str | None:
        """The version an alias points to, or None (no such model or alias)."""
        return self._retry(lambda: self._alias_version(name, alias), f"read alias {alias!r} of {name!r}")

    def load_model(self, model_uri: str, extra_trusted: Sequence[str] = ()) -> Any:
        """Load a model of this server with the project's loader (skops only, allow-listed types)."""
        return load_model(model_uri, self.tracking_uri, self.registry_uri, extra_trusted, self.retry)

    def load_champion(self, name: str, extra_trusted: Sequence[str] = ()) -> LoadedModel | None:
        """The version with alias `champion` of a registered model, loaded; None when there is none yet."""
        version = self.alias_version(name, CHAMPION)
        if version is None:
            return None
        mv = self._retry(lambda: self.client.get_model_version(name, version), f"get {name} v{version}")
        uri = f"models:/{name}/{version}"
        return LoadedModel(self.load_model(uri, extra_trusted), name, version, mv.run_id, uri)
