"""Triggers that wait in the triggerer, so a waiting sensor holds no worker slot."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class LandingFileTrigger(BaseTrigger):
    """Fires when a file exists in the lake.

    :param uri: absolute URI of the file in the lake.
    :param lake_conn_id: Airflow connection of the lake (credentials are looked up in the triggerer,
        never stored in the trigger's arguments).
    :param poke_interval: seconds between two checks.
    """

    def __init__(self, uri: str, lake_conn_id: str, poke_interval: float = 60.0) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.uri = uri
        self.lake_conn_id = lake_conn_id
        self.poke_interval = poke_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "airflow_mlops.triggers.LandingFileTrigger",
            {"uri": self.uri, "lake_conn_id": self.lake_conn_id, "poke_interval": self.poke_interval},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_mlops.hooks import LakeHook

        lake = await LakeHook(lake_conn_id=self.lake_conn_id).aget_lake()
        while True:
            # Lake calls block (boto3, file system): run them off the triggerer's event loop.
            if await asyncio.to_thread(lake.exists, self.uri):
                yield TriggerEvent({"status": "found", "uri": self.uri})  # type: ignore[no-untyped-call]
                return
            self.log.info("Waiting for %s; next check in %ss", self.uri, self.poke_interval)
            await asyncio.sleep(self.poke_interval)


class ServedVersionTrigger(BaseTrigger):
    """Fires when the model server reports serving `version` for `pipeline`, or when it reports a failure.

    :param pipeline: pipeline name as the server knows it.
    :param version: model version expected.
    :param model_server_conn_id: Airflow connection of the model server (token looked up in the triggerer).
    :param poke_interval: seconds between two checks.
    """

    def __init__(self, pipeline: str, version: str, model_server_conn_id: str, poke_interval: float = 2.0) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.pipeline = pipeline
        self.version = version
        self.model_server_conn_id = model_server_conn_id
        self.poke_interval = poke_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "airflow_mlops.triggers.ServedVersionTrigger",
            {
                "pipeline": self.pipeline,
                "version": self.version,
                "model_server_conn_id": self.model_server_conn_id,
                "poke_interval": self.poke_interval,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        import httpx

        from airflow_mlops.hooks import ModelServerHook

        base, headers = await ModelServerHook(self.model_server_conn_id).aget_endpoint()
        async with httpx.AsyncClient(timeout=10.0) as client:
            while True:
                try:
                    resp = await client.get(f"{base}/version", headers=headers)
                    resp.raise_for_status()
                    entry = ModelServerHook.pipeline_entry(resp.json(), self.pipeline)
                except (httpx.HTTPError, ValueError) as exc:
                    # The server may be restarting: keep waiting until the sensor's timeout.
                    self.log.info("Model server not answering (%s); retrying", exc)
                    entry = {}
                if str(entry.get("version")) == self.version:
                    yield TriggerEvent({"status": "serving", "version": self.version})  # type: ignore[no-untyped-call]
                    return
                if str(entry.get("failed_version")) == self.version:
                    yield TriggerEvent({"status": "failed", "version": self.version, "error": entry.get("error")})  # type: ignore[no-untyped-call]
                    return
                await asyncio.sleep(self.poke_interval)
