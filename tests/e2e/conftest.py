"""The embedded stack shared by the e2e modules of a session, and the main job run on it once."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import date

import pytest

from airflow_mlops.settings import ENV_PIPELINES_DIR
from airflow_mlops.stack import demo, supervisor
from airflow_mlops.stack.control import down
from airflow_mlops.stack.settings import StackConfig, clean_environ
from tests.fixtures.stack_pipelines import plain_drift_pipelines

PIPELINE = "flight_delays"
OTHER = "nyc_weather"
"""The second shipped pipeline: its DAGs and server route stand beside the first's, with no model of its own here."""
START, HISTORY_END, END = date(2013, 1, 1), date(2013, 2, 14), date(2013, 2, 16)
USERS = "alice:user,nobody:"
"""Besides admin: alice triggers (and so cannot approve what she forced), nobody may sign in and read nothing."""


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackConfig]:
    """A stack in a temp state folder on free ports, isolated from the test session's Airflow settings; one per
    session: the modules that need a running stack share it (one full stack costs minutes on 2 cores)."""
    state = tmp_path_factory.mktemp("stack")
    pipelines = plain_drift_pipelines(tmp_path_factory.mktemp("pipelines"))
    cfg = StackConfig.load(
        environ={**clean_environ(os.environ), ENV_PIPELINES_DIR: str(pipelines)},
        overrides={
            "MLOPS_STATE_DIR": str(state),
            "MLOPS_LAKE_ROOT": "",
            "MLOPS_AIRFLOW_PORT": str(supervisor.free_port()),
            "MLOPS_MLFLOW_PORT": str(supervisor.free_port()),
            "MLOPS_MODEL_SERVER_PORT": str(supervisor.free_port()),
            "MLOPS_STACK_START_TIMEOUT_SECONDS": "600",
            "MLOPS_DEMO_TIMEOUT_SECONDS": "900",
            "MLOPS_AIRFLOW_USERS": USERS,
        },
    )
    try:
        yield cfg
    finally:
        down(cfg)  # always, whatever the tests did; a no-op once a test stopped it


@pytest.fixture(scope="session")
def main_job(stack: StackConfig) -> demo.LoopReport:
    """The main job on a short live range, run once per session: first model, nightly ingest, score and monitor,
    and the retrain and redeploy the monitor's drift alarm triggers. The stack keeps running afterwards."""
    return demo.run_loop(stack, PIPELINE, START, HISTORY_END, END)
