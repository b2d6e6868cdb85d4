"""The "ML lifecycle" pages on the API server: what MLflow, the lake and Airflow's database say of each pipeline."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlparse

from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from airflow.api_fastapi.core_api.security import get_user
from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse

from airflow_mlops import settings

if TYPE_CHECKING:
    from airflow_mlops.config import PipelineConfig
    from airflow_mlops.core.lifecycle.data import PipelineData, TtlCache
    from airflow_mlops.core.lifecycle.page import AirflowState, Urls

CACHE_SECONDS = 20.0
"""How long a pipeline's registry, runs and lake listing are reused: the page answers fast, a promotion shows soon."""
KINDS = ("ingest", "train", "deploy", "score", "monitor")
HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}


@cache
def _cache() -> TtlCache[str, PipelineData]:
    from airflow_mlops.core.lifecycle.data import TtlCache

    return TtlCache(CACHE_SECONDS)


def _configs() -> dict[str, PipelineConfig]:
    from airflow_mlops.config import scan_pipelines

    return {cfg.name: cfg for cfg in scan_pipelines().configs}


def _read(cfg: PipelineConfig) -> tuple[PipelineData, str | None]:
    """The pipeline's data (cached) and the MLflow UI base for links."""
    from airflow_mlops.core.lake.storage import StorageError
    from airflow_mlops.core.lifecycle.data import read_pipeline
    from airflow_mlops.hooks import LakeConfigError, LakeHook, MlflowHook

    tracking = MlflowHook().get_tracking()

    def compute() -> PipelineData:
        try:
            lake = LakeHook().get_lake()
        except (StorageError, LakeConfigError):
            lake = None
        return read_pipeline(tracking, lake, cfg)

    return _cache().get(cfg.name, compute), tracking.ui_url


def _urls(mlflow: str | None) -> Urls:
    from airflow.configuration import conf

    from airflow_mlops.core.lifecycle.page import Urls

    base = urlparse(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")
    return Urls(airflow=base, plugin=settings.reports_base_url(), mlflow=mlflow)


def airflow_state(pipeline: str) -> AirflowState:
    """The latest run of each of the pipeline's DAGs, the failed ones, and its unanswered approval requests."""
    from airflow.models.dagrun import DagRun
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from airflow_mlops.core.lifecycle.page import AirflowState, DagRunState, PendingApproval

    def when(value: Any) -> str | None:
        return value.isoformat(timespec="seconds") if value is not None else None

    last: dict[str, DagRunState] = {}
    pending: list[PendingApproval] = []
    with create_session() as session:
        for kind in KINDS:
            dag_id = f"{pipeline}__{kind}"
            run = session.scalars(
                select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.run_after.desc()).limit(1)
            ).first()
            if run is not None:
                state = str(getattr(run.state, "value", run.state))
                last[kind] = DagRunState(dag_id, run.run_id, state, when(run.logical_date or run.run_after))
        rows = session.execute(
            select(HITLDetail, TaskInstance.dag_id, TaskInstance.run_id, TaskInstance.task_id)
            .join(TaskInstance, HITLDetail.ti_id == TaskInstance.id)
            .where(TaskInstance.dag_id == f"{pipeline}__deploy", HITLDetail.responded_at.is_(None))
        ).all()
        for detail, dag_id, run_id, task_id in rows:
            pending.append(PendingApproval(dag_id, run_id, task_id, detail.subject, when(detail.created_at)))
    failed = [run for run in last.values() if run.state == "failed"]
    return AirflowState(last_runs=last, failed=failed, pending=pending)


def add_routes(app: FastAPI, can_read: Callable[[BaseUser, str], bool]) -> None:
    """Add the lifecycle pages to the plugin's app; each page checks DAG read access for its pipeline."""
    from airflow_mlops.core.lifecycle import page

    def html(text: str) -> HTMLResponse:
        return HTMLResponse(text, headers=HEADERS)

    def allowed(user: BaseUser, names: Sequence[str]) -> list[str]:
        return [name for name in names if can_read(user, name)]

    @app.get("/lifecycle/", response_class=HTMLResponse)
    async def lifecycle_index(user: Annotated[BaseUser, Depends(get_user)], fresh: bool = Query(False)) -> HTMLResponse:
        configs = await run_in_threadpool(_configs)
        readable = allowed(user, sorted(configs))
        if fresh:
            _cache().clear()
        rows = []
        mlflow = None
        for name in readable:
            data, mlflow = await run_in_threadpool(_read, configs[name])
            rows.append((data, await run_in_threadpool(airflow_state, name)))
        return html(page.render_index(rows, _urls(mlflow), hidden=len(configs) - len(readable)))

    @app.get("/lifecycle/dag/{dag_id}")
    async def lifecycle_of_dag(dag_id: str, user: Annotated[BaseUser, Depends(get_user)]) -> RedirectResponse:
        pipeline, sep, kind = dag_id.rpartition("__")
        if not sep or kind not in KINDS:
            raise HTTPException(status_code=404, detail=f"{dag_id} is not a DAG of an airflow-mlops pipeline")
        return RedirectResponse(_urls(None).pipeline(pipeline), status_code=303)

    @app.get("/lifecycle/{pipeline}", response_class=HTMLResponse)
    async def lifecycle_pipeline(
        pipeline: str, user: Annotated[BaseUser, Depends(get_user)], fresh: bool = Query(False)
    ) -> HTMLResponse:
        # Access first: a user who may not read the pipeline learns nothing, not even whether it exists.
        if not can_read(user, pipeline):
            raise HTTPException(status_code=403, detail=f"not allowed to read the DAGs of pipeline {pipeline}")
        configs = await run_in_threadpool(_configs)
        cfg = configs.get(pipeline)
        if cfg is None:
            raise HTTPException(status_code=404, detail=f"no pipeline {pipeline} (or its config does not load)")
        if fresh:
            _cache().clear()
        data, mlflow = await run_in_threadpool(_read, cfg)
        state = await run_in_threadpool(airflow_state, pipeline)
        return html(page.render_pipeline(data, state, _urls(mlflow)))
