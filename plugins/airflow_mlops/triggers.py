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
