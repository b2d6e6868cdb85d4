"""Operators of `<p>__train` and `<p>__score`: train, evaluate against the champion, register, batch-score."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops.lineage import DatasetRef, lake_ref, model_ref, version_ref
from airflow_mlops.links import MlflowRunLink, ModelVersionLink
from airflow_mlops.operators.base import MlflowPipelineOperator, fail_without_retry, given


class TrainModelOperator(MlflowPipelineOperator):
    """Fits the pipeline's model on the training window and logs data, params and model to MLflow.

    :param end_ds: last day of the window (templated; default the run's date, at most the pipeline's end_date).
    :param window_days: days of features up to end_ds (templated; default the config's train.window_days).
    :param reason: why this training runs, recorded on the MLflow run (templated).
    """

    template_fields: Sequence[str] = ("pipeline", "ds", "end_ds", "window_days", "reason")

    def __init__(
        self, *, end_ds: str | None = None, window_days: int | str | None = None, reason: str = "", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.end_ds = end_ds
        self.window_days = window_days
        self.reason = reason

    @fail_without_retry
    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.core.train.steps import train_step

        cfg, lake = self.config_and_lake()
        window_days = int(str(self.window_days)) if given(self.window_days) else cfg.train.window_days
        end_ds = str(self.end_ds) if given(self.end_ds) else self.ds
        if not given(self.end_ds) and cfg.end_date is not None and end_ds > cfg.end_date.isoformat():
            # A run dated after the pipeline's end (the trigger form proposes now): no data comes after the end, so
            # the newest window is the one ending on the last day (the train DAG has no end_date: see factory).
            self.log.info("The run's date %s is after the pipeline's end_date: window up to %s", end_ds, cfg.end_date)
            end_ds = cfg.end_date.isoformat()
        tracking = self.tracking()
        result = train_step(lake, cfg, tracking, self.run_tags(context), end_ds, window_days, str(self.reason or ""))
        self.mlflow_run_url = result["mlflow_run_url"]
        self.step_lineage.inputs = window_refs(result)
        self.step_lineage.outputs = [model_ref(self.tracking_uri, result["model_uri"])]
        self.log.info(
            "Trained on %s (%s days up to %s): %s",
            result["data"]["content_hash"],
            window_days,
            end_ds,
            result["model_uri"],
        )
        return result


class EvaluateModelOperator(MlflowPipelineOperator):
    """Scores the challenger and the current champion on the same holdout and applies the gates.

    :param train_task_id: task whose result names the model and the window.
    :param force: register the challenger as `challenger` whatever the gates say (templated).
    :param force_reason: why; required with force, recorded with who triggered the run (templated).
    """

    template_fields: Sequence[str] = ("pipeline", "ds", "force", "force_reason")

    def __init__(
        self, *, train_task_id: str = "train", force: bool | str = False, force_reason: str = "", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.train_task_id = train_task_id
        self.force = force
        self.force_reason = force_reason

    def force_request(self, context: Context) -> Any:
        from airflow_mlops.core.train.evaluation import ForceRequest

        if str(self.force).lower() not in ("true", "1", "yes"):
            return None
        if not given(self.force_reason) or not str(self.force_reason).strip():
            raise AirflowFailException("force is set but force_reason is empty: say why the gates are overridden")
        who = getattr(context.get("dag_run"), "triggering_user_name", None) or "unknown"
        return ForceRequest(by=str(who), reason=str(self.force_reason))

    @fail_without_retry
    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.core.train.steps import evaluate_step

        cfg, lake = self.config_and_lake()
        trained = context["ti"].xcom_pull(task_ids=self.train_task_id)
        result = evaluate_step(lake, cfg, self.tracking(), self.run_tags(context), trained, self.force_request(context))
        self.mlflow_run_url = result["mlflow_run_url"]
        champion = result["champion_version"]
        self.step_lineage.inputs = [
            *window_refs(trained),
            model_ref(self.tracking_uri, trained["model_uri"]),
            *([version_ref(self.tracking_uri, cfg.train.model_name(cfg.name), champion)] if champion else []),
        ]
        decision = result["decision"]
        self.log.info("Gate outcome: %s (%s)", decision["outcome"], decision["reason"])
        return result


class RegisterModelOperator(MlflowPipelineOperator):
    """Registers the model version with its model card and lineage; alias `challenger` only if it passed.

    A version that fails a gate is registered without alias and tagged with why; the task succeeds and
    returns `promoted: false`, so nothing downstream deploys it.

    :param train_task_id: task whose result names the model and the window.
    :param evaluate_task_id: task whose result holds the evaluations and the gate decision.
    """

    operator_extra_links = (MlflowRunLink(), ModelVersionLink())

    def __init__(self, *, train_task_id: str = "train", evaluate_task_id: str = "evaluate", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.train_task_id = train_task_id
        self.evaluate_task_id = evaluate_task_id
        self.model_version_url: str | None = None

    @fail_without_retry
    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.sdk import conf

        from airflow_mlops.core.train.steps import register_step

        cfg, _ = self.config_and_lake()
        ti = context["ti"]
        trained = ti.xcom_pull(task_ids=self.train_task_id)
        evaluated = ti.xcom_pull(task_ids=self.evaluate_task_id)
        base = conf.get("api", "base_url", fallback="http://localhost:8080").rstrip("/")
        airflow_url = f"{base}/dags/{ti.dag_id}/runs/{ti.run_id}"
        result = register_step(cfg, self.tracking(), self.run_tags(context), trained, evaluated, airflow_url)
        self.mlflow_run_url, self.model_version_url = result["mlflow_run_url"], result["version_url"]
        self.step_lineage.inputs = [*window_refs(trained), model_ref(self.tracking_uri, trained["model_uri"])]
        self.step_lineage.outputs = [version_ref(self.tracking_uri, result["model_name"], result["version"])]
        for outlet in self.outlets:  # the Asset `<p>.model`
            context["outlet_events"][outlet].extra = model_event(result, trained, ti.run_id)
        self.log.info(
            "Model %s version %s (%s): %s", result["model_name"], result["version"], result["outcome"], result["reason"]
        )
        return result


class ScorePartitionsOperator(MlflowPipelineOperator):
    """Writes the champion's batch predictions for feature partitions to predictions/, with the version, and
    publishes the newest partition on its outlets (the Asset `<p>.predictions`).

    Scores `ds` when it is set; otherwise every partition named by the asset events that triggered
    the run (several ingests may land in one asset-triggered run). No champion yet: the task skips.
    """

    @fail_without_retry
    def execute(self, context: Context) -> list[dict[str, Any]]:
        from airflow.sdk.exceptions import AirflowSkipException

        from airflow_mlops.core.day_cache import score_fingerprint
        from airflow_mlops.core.lake import paths
        from airflow_mlops.core.registry.tracking import CHAMPION
        from airflow_mlops.core.score import NoChampion, score_partition

        dates = [str(self.ds)] if given(self.ds) else self.triggered_partitions(context)
        if not dates:
            raise AirflowFailException("nothing to score: no `partition` given and no features asset event")
        cfg, lake = self.config_and_lake()
        tracking = self.tracking()
        name = cfg.train.model_name(cfg.name)
        champion = tracking.alias_version(name, CHAMPION)
        results = []
        for ds in dates:
            features_uri = lake.uri(paths.features(cfg.name, ds))

            def fingerprint_of(day: str = ds) -> str:
                return score_fingerprint(lake, cfg, day, champion)

            def run(day: str = ds) -> dict[str, Any]:
                return score_partition(lake, cfg, tracking, day)

            try:
                if champion is None:
                    raise NoChampion(f"model {name!r} has no champion yet: deploy a version before scoring")
                result = self.cached(context, lake, "score", fingerprint_of, lambda r: [r["uri"]], run, ds=ds)
            except NoChampion as exc:
                raise AirflowSkipException(str(exc)) from exc
            self.log.info(
                "Scored %s rows of %s with version %s: %s", result["rows"], ds, result["model_version"], result["uri"]
            )
            results.append(result)
            self.step_lineage.inputs += [
                lake_ref(features_uri, result["features_content_hash"]),
                version_ref(self.tracking_uri, name, result["model_version"]),
            ]
            self.step_lineage.outputs.append(lake_ref(result["uri"], result["content_hash"]))
        for outlet in self.outlets:  # the monitor follows the newest scored partition
            extra: dict[str, Any] = {"partition": dates[-1], "partitions": dates}
            context["outlet_events"][outlet].extra = extra
        return results

    @staticmethod
    def triggered_partitions(context: Context) -> list[str]:
        events = context.get("triggering_asset_events") or {}
        return sorted(
            {str(e.extra["partition"]) for evs in events.values() for e in evs if "partition" in (e.extra or {})}
        )


def window_refs(trained: dict[str, Any]) -> list[DatasetRef]:
    """The feature partitions of a training window (the `train` result) and the label landings joined to them
    (a label source of its own), each with its content hash."""
    data = trained["data"]
    hashes, label_hashes = data["partition_hashes"], data.get("label_partitions", {})
    features = [
        lake_ref(uri, hashes.get(ds)) for ds, uri in zip(data["partitions"], data["partition_uris"], strict=True)
    ]
    return features + [lake_ref(uri, label_hashes.get(ds)) for ds, uri in sorted(data.get("label_uris", {}).items())]


def model_event(registered: dict[str, Any], trained: dict[str, Any], dag_run_id: str) -> dict[str, Any]:
    """The extra of an event of the Asset `<p>.model`: the version, its data (partitions, hashes) and runs."""
    data = trained["data"]
    return {
        "model_name": registered["model_name"],
        "version": str(registered["version"]),
        "model_uri": f"models:/{registered['model_name']}/{registered['version']}",
        "promoted": registered["promoted"],
        "outcome": registered["outcome"],
        "content_hash": data["content_hash"],
        "partitions": data["partitions"],
        "partition_hashes": data["partition_hashes"],
        "label_partitions": data.get("label_partitions", {}),
        "window": f"{data['window_start']}..{data['window_end']}",
        "mlflow_run_id": trained["mlflow_run_id"],
        "dag_run_id": dag_run_id,
    }
