"""Turns pipeline configs into the DAGs of PRODUCT.md; DAG files only call build_all()."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Asset

from airflow_mlops.config import PipelineConfig, load_pipelines
from airflow_mlops.operators import BuildFeaturesOperator, IngestSourceOperator, ValidateSourceOperator
from airflow_mlops.sensors import LandingFileSensor


def features_asset(cfg: PipelineConfig) -> Asset:
    """The Asset `<p>.features`, updated once per ingested logical date."""
    return Asset(name=cfg.features_asset_name, uri=f"mlops://{cfg.name}/features", group="mlops")


def default_args(cfg: PipelineConfig) -> dict[str, Any]:
    return {
        "owner": cfg.owner,
        "retries": cfg.retries,
        "retry_delay": timedelta(seconds=cfg.retry_delay_seconds),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=10),
        "execution_timeout": timedelta(minutes=cfg.task_timeout_minutes),
    }


def _dag_kwargs(cfg: PipelineConfig, kind: str, doc: str) -> dict[str, Any]:
    return {
        "dag_id": cfg.dag_id(kind),
        "description": f"{cfg.description} ({kind})".strip(),
        "start_date": datetime.combine(cfg.start_date, datetime.min.time(), UTC),
        "end_date": datetime.combine(cfg.end_date, datetime.min.time(), UTC) if cfg.end_date else None,
        "default_args": default_args(cfg),
        "tags": sorted({"mlops", cfg.name, kind, *cfg.tags}),
        "doc_md": doc,
    }


def build_ingest_dag(cfg: PipelineConfig) -> DAG:
    """`<p>__ingest`: wait for landing files, copy to raw, validate (quarantine on failure), build features."""
    doc = (
        f"### {cfg.name}: ingest\n{cfg.description}\n\n"
        "For the logical date: waits for each source's landing file, copies it to `raw/` as typed Parquet, "
        "validates it with its Great Expectations suite (a failing batch goes to `quarantine/` and the run "
        "fails naming every failed expectation), then builds `features/` and updates the Asset "
        f"`{cfg.features_asset_name}`."
    )
    ingest = cfg.ingest
    with DAG(
        schedule=ingest.schedule,
        catchup=ingest.catchup,
        max_active_runs=ingest.max_active_runs,
        **_dag_kwargs(cfg, "ingest", doc),
    ) as dag:
        features = BuildFeaturesOperator(task_id="build_features", pipeline=cfg.name, outlets=[features_asset(cfg)])
        for name in cfg.sources:
            wait = LandingFileSensor(
                task_id=f"wait_for_{name}",
                pipeline=cfg.name,
                source=name,
                poke_interval=ingest.sensor.poke_interval_seconds,
                timeout=ingest.sensor.timeout_seconds,
                deferrable=ingest.sensor.deferrable,
                mode="reschedule",
            )
            copy = IngestSourceOperator(task_id=f"ingest_{name}", pipeline=cfg.name, source=name)
            check = ValidateSourceOperator(task_id=f"validate_{name}", pipeline=cfg.name, source=name)
            wait >> copy >> check >> features
    return dag


BUILDERS = (build_ingest_dag,)


def build_all(folder: Path | None = None) -> dict[str, DAG]:
    """Every DAG of every pipeline config in the folder, keyed by dag_id."""
    dags: dict[str, DAG] = {}
    for cfg in load_pipelines(folder):
        for builder in BUILDERS:
            dag = builder(cfg)
            dags[dag.dag_id] = dag
    return dags
