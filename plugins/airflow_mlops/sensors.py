"""Sensors that wait for data to land, deferring to the triggerer by default."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator, Context
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_mlops.operators import fail_without_retry
from airflow_mlops.triggers import LandingFileTrigger, ServedVersionTrigger


class LandingFileSensor(BaseSensorOperator):
    """Waits for the landing file of one source of a pipeline for the logical date.

    :param pipeline: pipeline name (its config is read at run time).
    :param source: source name in the pipeline config.
    :param ds: logical date the file belongs to (templated).
    :param lake_conn_id: Airflow connection of the lake; the deployment default if unset.
    :param deferrable: wait in the triggerer instead of occupying a worker slot.
    """

    template_fields: Sequence[str] = ("pipeline", "source", "ds")
    ui_color = "#e8f4fd"

    def __init__(
        self,
        *,
        pipeline: str,
        source: str,
        ds: str = "{{ ds }}",
        lake_conn_id: str | None = None,
        deferrable: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pipeline = pipeline
        self.source = source
        self.ds = ds
        self.lake_conn_id = lake_conn_id
        self.deferrable = deferrable

    def _target(self) -> tuple[str, str, Any]:
        from airflow_mlops import settings
        from airflow_mlops.config import pipeline_by_name
        from airflow_mlops.core.lake import paths
        from airflow_mlops.hooks import LakeHook

        cfg = pipeline_by_name(self.pipeline)
        conn_id = self.lake_conn_id or settings.storage_conn_id()
        lake = LakeHook(lake_conn_id=conn_id).get_lake()
        return lake.uri(paths.landing(cfg.name, cfg.sources[self.source].landing_path(self.ds))), conn_id, lake

    def poke(self, context: Context) -> bool:
        uri, _, lake = self._target()
        self.log.info("Looking for %s", uri)
        return bool(lake.exists(uri))

    @fail_without_retry
    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        uri, conn_id, lake = self._target()
        if lake.exists(uri):
            self.log.info("Found %s", uri)
            return uri
        self.defer(
            trigger=LandingFileTrigger(uri=uri, lake_conn_id=conn_id, poke_interval=self.poke_interval),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> str:
        if not event or event.get("status") != "found":
            raise AirflowException(
                f"landing file of {self.pipeline}.{self.source} for {self.ds} did not arrive: {event}"
            )
        self.log.info("Found %s", event["uri"])
        return str(event["uri"])


class ServedVersionSensor(BaseSensorOperator):
    """Waits until the model server serves a model version for a pipeline; fails at once if it refused it.

    :param pipeline: pipeline name.
    :param version: the model version expected (templated).
    :param model_server_conn_id: Airflow connection of the model server; the deployment default if unset.
    :param deferrable: wait in the triggerer instead of occupying a worker slot.
    """

    template_fields: Sequence[str] = ("pipeline", "version")

    def __init__(
        self,
        *,
        pipeline: str,
        version: str,
        model_server_conn_id: str | None = None,
        deferrable: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pipeline = pipeline
        self.version = version
        self.model_server_conn_id = model_server_conn_id
        self.deferrable = deferrable

    def _entry(self) -> dict[str, Any]:
        from airflow_mlops.hooks import ModelServerHook

        hook = ModelServerHook(self.model_server_conn_id)
        return hook.pipeline_entry(hook.request("GET", "/version"), self.pipeline)

    def poke(self, context: Context) -> bool:
        entry = self._entry()
        if str(entry.get("failed_version")) == str(self.version):
            # Definitive: retrying cannot make the server load this version.
            raise AirflowFailException(f"the model server refused version {self.version}: {entry.get('error')}")
        return str(entry.get("version")) == str(self.version)

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        if self.poke(context):
            return str(self.version)
        from airflow_mlops import settings

        self.defer(
            trigger=ServedVersionTrigger(
                pipeline=self.pipeline,
                version=str(self.version),
                model_server_conn_id=self.model_server_conn_id or settings.model_server_conn_id(),
                poke_interval=self.poke_interval,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> str:
        if event and event.get("status") == "failed":
            raise AirflowFailException(f"the model server refused version {self.version}: {event.get('error')}")
        if not event or event.get("status") != "serving":
            raise AirflowException(f"the model server did not serve {self.pipeline} version {self.version}: {event}")
        return str(self.version)
