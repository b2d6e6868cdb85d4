"""The steps of `<p>__deploy`: resolve and check the version, promote it, smoke-test it, roll it back."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from airflow_mlops.config import PipelineConfig
from airflow_mlops.core.deploy.smoke import Predict, SmokeResult, smoke_test
from airflow_mlops.core.lake import paths
from airflow_mlops.core.lake.storage import Lake
from airflow_mlops.core.registry import promotion
from airflow_mlops.core.registry.tags import WINDOW
from airflow_mlops.core.registry.tracking import CHALLENGER, CHAMPION, TAG_PREFIX, Tracking, metric_key
from airflow_mlops.core.train import training as tr
from airflow_mlops.core.train.tasks import served_predictions


class DeployRefused(ValueError):
    """The version cannot be deployed (unknown, failed its gates, already rolled back): the message says why."""


@dataclass(frozen=True)
class Approval:
    """A human's approval of a version in this DAG run: the Airflow user's name and id."""

    by: str
    by_id: str = ""

    def is_user(self, user: str | None) -> bool:
        """Whether this approval was given by `user` (matched on the Airflow user's name or id)."""
        return any(same_user(user, mine) for mine in (self.by, self.by_id))


def same_user(a: str | None, b: str | None) -> bool:
    """Whether two Airflow user names (or ids) name the same user."""
    return bool(a and b and a.strip().casefold() == b.strip().casefold())


def approval_reason(cfg: PipelineConfig, forced_by: str | None) -> str | None:
    """Why a human must approve the version before it becomes champion; None when nobody has to.

    A version registered with force always needs one, whatever `deploy.approval.required` says.
    """
    if forced_by:
        return f"it was registered with force by {forced_by}: a different user must approve it"
    if cfg.deploy.approval.required:
        return "deploy.approval.required is set for this pipeline"
    return None


@dataclass(frozen=True)
class Who:
    """Who asked for the deployment and why, and the DAG run doing it (one audit record per action and run)."""

    who: str
    why: str
    dag_run_id: str


def _version(tracking: Tracking, name: str, version: str) -> Any:
    from mlflow.exceptions import MlflowException

    def get() -> Any:
        try:
            return tracking.client.get_model_version(name, version)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                raise DeployRefused(f"model {name!r} has no version {version!r}") from exc
            raise

    return tracking._retry(get, f"get {name} v{version}")


def version_lineage(mv: Any) -> dict[str, Any]:
    """What a model version was trained on, and where, from its tags: the lineage of a champion asset event."""
    tags = dict(mv.tags or {})
    return {
        "window": tags.get(WINDOW),
        "content_hash": tags.get(f"{TAG_PREFIX}content_hash"),
        "partitions": [p for p in tags.get(f"{TAG_PREFIX}partitions", "").split(",") if p],
        "mlflow_run_id": mv.run_id,
        "train_dag_run_id": tags.get(f"{TAG_PREFIX}dag_run_id"),
    }


def resolve_version(tracking: Tracking, cfg: PipelineConfig, requested: str | None) -> str:
    """The version to deploy: the one asked for, else the current `challenger`."""
    name = cfg.train.model_name(cfg.name)
    if requested:
        return str(requested)
    challenger = tracking.alias_version(name, CHALLENGER)
    if challenger is None:
        raise DeployRefused(f"no version given and model {name!r} has no {CHALLENGER!r} alias: nothing to deploy")
    return challenger


def evidence(tracking: Tracking, cfg: PipelineConfig, requested: str | None) -> dict[str, Any]:
    """What a reviewer needs to approve a version: its metrics against the champion's, gates, card and links.

    Raises DeployRefused for a version that must not go out: unknown, failed its gates (without force),
    or one that was already rolled back.
    """
    name = cfg.train.model_name(cfg.name)
    version = resolve_version(tracking, cfg, requested)
    mv = _version(tracking, name, version)
    tags = dict(mv.tags or {})
    if tags.get(f"{TAG_PREFIX}gate_passed") != "true" and f"{TAG_PREFIX}force_by" not in tags:
        reason = (
            tags.get(f"{TAG_PREFIX}not_promoted_reason") or tags.get(f"{TAG_PREFIX}gate_reason") or "no gate record"
        )
        raise DeployRefused(f"{name} v{version} did not pass the quality gates: {reason}")
    if f"{TAG_PREFIX}rolled_back" in tags:
        raise DeployRefused(f"{name} v{version} was rolled back before: {tags[f'{TAG_PREFIX}rolled_back']}")
    champion = tracking.alias_version(name, CHAMPION)
    primary = cfg.train.metric.primary
    metrics: dict[str, Any] = {}
    disparities: dict[str, dict[str, float | None]] = {}
    reason = None
    if mv.run_id:
        run = tracking._retry(lambda: tracking.client.get_run(mv.run_id), f"get run {mv.run_id}")
        logged = run.data.metrics
        for key in (primary, "rows"):
            metrics[f"challenger.{key}"] = logged.get(metric_key("holdout", key))
            metrics[f"champion.{key}"] = logged.get(metric_key("champion.holdout", key))
        prefix = metric_key("holdout", "disparity") + "."
        for key, value in sorted(logged.items()):
            if key.startswith(prefix):
                column = key[len(prefix) :]
                champion_gap = logged.get(metric_key("champion.holdout", "disparity", column))
                disparities[column] = {"challenger": value, "champion": champion_gap}
        reason = run.data.tags.get(f"{TAG_PREFIX}reason")
    return {
        "model_name": name,
        "version": version,
        "champion_before": champion,
        "primary_metric": primary,
        "metrics": metrics,
        "gate_outcome": tags.get(f"{TAG_PREFIX}gate_outcome"),
        "gate_reason": tags.get(f"{TAG_PREFIX}gate_reason"),
        "forced_by": tags.get(f"{TAG_PREFIX}force_by"),
        "training_run_url": tracking.run_url(mv.run_id) if mv.run_id else None,
        "version_url": tracking.version_url(name, version),
        "airflow_run_url": tags.get(f"{TAG_PREFIX}airflow_run_url"),
        **version_lineage(mv),
        "gates": _gates(tags.get(f"{TAG_PREFIX}gates")),
        "disparities": disparities,
        "training_reason": reason,
        "drift_at_training": drift_before(tracking, cfg, mv.creation_timestamp),
    }


def _gates(raw: str | None) -> list[dict[str, Any]]:
    import json

    try:
        gates = json.loads(raw or "[]")
    except json.JSONDecodeError:
        return []
    return [g for g in gates if isinstance(g, dict)]


def drift_before(tracking: Tracking, cfg: PipelineConfig, before_ms: int | None) -> dict[str, Any] | None:
    """What the monitor saw last before the version was registered: date, outcome, drift share, report path."""
    from airflow_mlops.core.monitor.monitor import experiment

    client = tracking.client
    found = tracking._retry(lambda: client.get_experiment_by_name(experiment(cfg)), "get monitor experiment")
    if found is None:
        return None
    where = f"attributes.start_time <= {int(before_ms)}" if before_ms else ""
    runs = tracking._retry(
        lambda: client.search_runs(
            [found.experiment_id], where, max_results=1, order_by=["attributes.start_time DESC"]
        ),
        "search the last monitor run",
    )
    if not runs:
        return None
    run = runs[0]
    ds = run.data.tags.get(f"{TAG_PREFIX}monitor_ds")
    return {
        "date": ds,
        "outcome": run.data.tags.get(f"{TAG_PREFIX}outcome"),
        "drift_share": run.data.metrics.get("drift.share"),
        "drifted_columns": run.data.tags.get(f"{TAG_PREFIX}drifted_columns"),
        "report": paths.monitor_report(cfg.name, ds) if ds else None,
    }


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~])")


def md(value: Any) -> str:
    """Text from data as literal Markdown: every character Markdown (or HTML in it) could act on is escaped."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(value).split()))


def _md_link(text: str, url: Any) -> str | None:
    url = str(url or "")
    if not (url.startswith(("http://", "https://")) or (url.startswith("/") and not url.startswith("//"))):
        return None
    return f"[{md(text)}](<{url.replace('>', '%3E').replace(' ', '%20')}>)"


def evidence_markdown(ev: dict[str, Any]) -> str:
    """The approval form's body: the version against the champion on the same holdout, the gates, slice gaps,
    what the monitor saw before it was trained, and where to read more. Every value from data is escaped."""
    m, primary = ev["metrics"], ev["primary_metric"]
    champion = f"v{md(ev['champion_before'])}" if ev["champion_before"] else "none (first deployment)"
    version = md(ev["version"])
    lines = [
        f"**{md(ev['model_name'])} v{version}** to replace champion {champion}.",
        "",
        f"| on the same holdout | {md(primary)} | rows |",
        "|---|---|---|",
        f"| candidate v{version} | {_fmt(m.get(f'challenger.{primary}'))} | {_fmt(m.get('challenger.rows'))} |",
        f"| champion {champion} | {_fmt(m.get(f'champion.{primary}'))} | {_fmt(m.get('champion.rows'))} |",
        "",
        f"**Gates: {md(ev['gate_outcome'])}**: {md(ev['gate_reason'])}",
    ]
    for gate in ev.get("gates") or []:
        mark = "passed" if gate.get("passed") else "**failed**"
        lines.append(
            f"- {md(gate.get('name'))}: {mark} (observed {_fmt(gate.get('observed'))}, "
            f"threshold {_fmt(gate.get('threshold'))}) {md(gate.get('detail') or '')}"
        )
    if ev.get("forced_by"):
        lines.append(f"\nGates overridden by {md(ev['forced_by'])}, who therefore cannot approve this version.")
    if ev.get("disparities"):
        lines += ["", f"| largest {md(primary)} gap between slices of | candidate | champion |", "|---|---|---|"]
        for column, gaps in ev["disparities"].items():
            lines.append(f"| {md(column)} | {_fmt(gaps.get('challenger'))} | {_fmt(gaps.get('champion'))} |")
    lines += ["", f"Why trained: {md(ev.get('training_reason') or 'unknown')}"]
    drift = ev.get("drift_at_training")
    if drift:
        lines.append(
            f"Drift before training: monitor of {md(drift.get('date'))}: {md(drift.get('outcome'))}, drift share "
            f"{_fmt(drift.get('drift_share'))}, drifted columns {md(drift.get('drifted_columns') or '-')}."
        )
    else:
        lines.append("Drift before training: no monitor run yet.")
    lines.append(f"Training data: {md(ev['window'])} (content hash {md(ev['content_hash'])}).")
    links = {
        "Model card and version": ev.get("version_url"),
        "Training run": ev.get("training_run_url"),
        "Training DAG run": ev.get("airflow_run_url"),
        **(ev.get("links") or {}),
    }
    shown = [link for link in (_md_link(text, url) for text, url in links.items()) if link]
    lines += ["", " · ".join(shown)]
    return "\n".join(lines)


def check_approved(tracking: Tracking, cfg: PipelineConfig, version: str, approval: Approval | None) -> None:
    """Raise DeployRefused unless the version may become champion: one that needs a human approval has one,
    and a forced version was approved by someone other than who forced it."""
    name = cfg.train.model_name(cfg.name)
    forced_by = dict(_version(tracking, name, version).tags or {}).get(promotion.FORCE_BY)
    needed = approval_reason(cfg, forced_by)
    if needed is None:
        return
    if approval is None:
        raise DeployRefused(f"{name} v{version} needs a human approval ({needed}) and this run has none")
    if approval.is_user(forced_by):
        raise DeployRefused(f"{name} v{version} was forced by {forced_by}, who cannot approve it too")


def promote_step(
    tracking: Tracking, cfg: PipelineConfig, version: str, who: Who, approval: Approval | None = None
) -> dict[str, Any]:
    """Move `champion` to the version (the old one becomes `previous`) and keep the audit record.

    :param approval: the human approval given in this DAG run, if any; a version that needs one
        (forced, or `deploy.approval.required`) is refused without it (DeployRefused).
    """
    name = cfg.train.model_name(cfg.name)
    check_approved(tracking, cfg, version, approval)
    record = promotion.promote(tracking, name, version, who=who.who, why=who.why, dag_run_id=who.dag_run_id)
    return {
        "model_name": name,
        "version": version,
        "replaced": record.replaced,
        "audit": record.tag_key(),
        "version_url": tracking.version_url(name, version),
    }


@dataclass(frozen=True)
class SmokeSample:
    """Holdout rows of a version's training window as the server takes them, and its offline predictions."""

    rows: list[dict[str, Any]]
    expected: list[Any]
    """The server's predictions of the rows as the offline model gives them (core.train.tasks.served_predictions)."""


def _json_value(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        value = value.item()
    return None if isinstance(value, float) and math.isnan(value) else value


def smoke_sample(lake: Lake, tracking: Tracking, cfg: PipelineConfig, version: str, rows: int) -> SmokeSample:
    """A seeded sample of the version's holdout days, scored offline by the registered model itself."""
    import pandas as pd

    name = cfg.train.model_name(cfg.name)
    tags = dict(_version(tracking, name, version).tags or {})
    partitions = sorted(p for p in tags.get(f"{TAG_PREFIX}partitions", "").split(",") if p)
    if not partitions:
        raise DeployRefused(f"{name} v{version} records no training partitions: cannot pick smoke-test rows")
    holdout = partitions[-cfg.train.holdout_days :]
    frame = pd.concat([lake.read_parquet(lake.uri(paths.features(cfg.name, ds))) for ds in holdout], ignore_index=True)
    spec = tr.feature_spec(cfg, frame)
    sample = frame.sample(n=min(rows, len(frame)), random_state=cfg.train.seed)[spec.columns].reset_index(drop=True)
    for col in spec.categorical:  # the server takes strings or null for categories
        sample[col] = (
            sample[col].astype("object").where(sample[col].notna(), None).map(lambda v: None if v is None else str(v))
        )
    model = tracking.load_model(f"models:/{name}/{version}", cfg.train.model.trusted_types)
    with tr.thread_limit(cfg.train.model.threads):
        expected = served_predictions(model, sample, cfg.train.task)
    records = [{str(k): _json_value(v) for k, v in row.items()} for row in sample.to_dict("records")]
    return SmokeSample(records, expected)


def run_smoke_test(sample: SmokeSample, predict: Predict, version: str, cfg: PipelineConfig) -> SmokeResult:
    """The smoke test of the served version with the pipeline's settings."""
    smoke = cfg.deploy.smoke
    return smoke_test(
        predict,
        sample.rows,
        sample.expected,
        version,
        latency_budget_ms=smoke.latency_budget_ms,
        tolerance=smoke.tolerance,
        latency_requests=smoke.latency_requests,
    )


def rollback_step(
    tracking: Tracking, cfg: PipelineConfig, failed: str, fallback: str | None, who: Who
) -> dict[str, Any]:
    """Put `champion` back on the version this deployment's promotion replaced, mark the failed one, keep the record.

    The replaced version comes from the promotion's audit record (written when the alias moved), not from
    what was champion when the run started: the alias may have moved while the run waited for an approval.

    :param fallback: the version to restore when this run recorded no promotion of `failed`.
    """
    name = cfg.train.model_name(cfg.name)
    record = promotion.promote_record(tracking, name, who.dag_run_id)
    to_version = record.replaced if record is not None and record.champion == failed else fallback
    if failed == to_version:
        raise ValueError(f"cannot roll back {name} v{failed} onto itself")
    done = promotion.rollback(tracking, name, failed, to_version, who=who.who, why=who.why, dag_run_id=who.dag_run_id)
    lineage = version_lineage(_version(tracking, name, to_version)) if to_version is not None else {}
    return {"model_name": name, "failed": failed, "champion": to_version, "audit": done.tag_key(), "lineage": lineage}
