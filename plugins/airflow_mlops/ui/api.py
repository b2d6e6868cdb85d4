"""API server routes of the plugin: lake reports and lifecycle pages for users allowed to read the pipeline's DAGs."""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Annotated

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails
from airflow.api_fastapi.core_api.security import get_user
from fastapi import Depends, FastAPI, HTTPException, Response
from fastapi.concurrency import run_in_threadpool

from airflow_mlops.core.lake import paths


def _safe_name(path: str) -> str:
    """The file name for a download header: no quotes, backslashes or control characters from the lake."""
    return re.sub(r"[^A-Za-z0-9._=-]", "_", PurePosixPath(path).name) or "download"


def check_lake_path(path: str) -> tuple[str, str]:
    """The zone and pipeline of a requested lake path; refuses anything outside the browsable zones."""
    parts = PurePosixPath(path).parts
    if len(parts) < 3 or any(p in ("..", ".", "") or p.startswith(".") for p in parts):
        raise HTTPException(status_code=404, detail="not found")
    if parts[0] not in paths.BROWSABLE_ZONES:
        raise HTTPException(status_code=404, detail="not found")
    return parts[0], parts[1]


def can_read(user: BaseUser, pipeline: str) -> bool:
    """Whether the user may read the pipeline's DAGs (its reports and lifecycle page go with them)."""
    return bool(
        get_auth_manager().is_authorized_dag(method="GET", user=user, details=DagDetails(id=f"{pipeline}__ingest"))
    )


def create_app() -> FastAPI:
    """The FastAPI app the plugin mounts under /mlops on the Airflow API server."""
    app = FastAPI(title="airflow-mlops", description="Reports of the ML lifecycle stored in the lake.")

    # Airflow does not put plugin routes behind its auth: every route here depends on get_user
    # (bearer token or the UI's session cookie) and checks DAG read access for the pipeline.
    @app.get("/lake/{path:path}")
    async def lake_file(path: str, user: Annotated[BaseUser, Depends(get_user)]) -> Response:
        _zone, pipeline = check_lake_path(path)
        if not can_read(user, pipeline):
            raise HTTPException(status_code=403, detail=f"not allowed to read the DAGs of pipeline {pipeline}")

        from airflow_mlops.core.lake.storage import StorageError
        from airflow_mlops.hooks import LakeHook

        lake = await run_in_threadpool(LakeHook().get_lake)
        try:
            data = await run_in_threadpool(lake.read_bytes, lake.uri(path))
        except StorageError as exc:
            raise HTTPException(status_code=404, detail=f"no such report: {path}") from exc
        if paths.is_report(path):
            return Response(
                data,
                media_type="text/html; charset=utf-8",
                headers={"X-Content-Type-Options": "nosniff", "Content-Disposition": "inline"},
            )
        # Anything else (a quarantined landing file, its error JSON) may hold what an upstream system sent:
        # it downloads, never renders on Airflow's origin.
        return Response(
            data,
            media_type="application/octet-stream",
            headers={
                "Content-Disposition": f'attachment; filename="{_safe_name(path)}"',
                "X-Content-Type-Options": "nosniff",
            },
        )

    from airflow_mlops.ui.lifecycle import add_routes

    add_routes(app, can_read)
    return app
