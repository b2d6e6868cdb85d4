"""`<p>__deploy`'s approval answered through Airflow's REST API (a real API server) while dag.test() runs the DAG.

A real MLflow server, a real model server and real training runs; the Airflow users answer the Human-in-the-loop
request with PATCH /api/v2/dags/{dag}/dagRuns/{run}/taskInstances/approve/-1/hitlDetails, as the UI does. The
forced version is trained by dag.test(), which records its triggering user as `dag_test`: the API user of that
name is the one who forced it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from airflow_mlops.core.registry import promotion
from airflow_mlops.core.registry.tracking import CHAMPION, Tracking
from airflow_mlops.stack.airflow_api import AirflowApi, ApiError
from tests.dags.test_deploy_dag import run_deploy, set_smoke_budget, states
from tests.dags.test_train_dag import run_train, small_config
from tests.fixtures.airflow_processes import AirflowProcesses
from tests.fixtures.mlflow_server import MlflowServer
from tests.fixtures.model_server import ModelServerProcess
from tests.fixtures.training_data import day_range, synthetic_features, write_partitions

pytestmark = [pytest.mark.slow]

PIPELINE = "flight_delays"
DAG_ID = f"{PIPELINE}__deploy"
FORCER = "dag_test"  # dag.test() records this triggering user on the runs it makes, so on the forced version
REVIEWER = "reviewer"


class Stack:
    """MLflow, the lake, four versions and a model server, plus Airflow's API server and scheduler.

    v1 passed its gates, v2 was forced past failing ones by FORCER; v3 and v4 are v1's model registered again
    with its tags (more deployable versions without more trainings).
    """

    def __init__(self, mlflow: MlflowServer, pipelines: Path, server: ModelServerProcess, airflow: AirflowProcesses):
        self.mlflow, self.pipelines, self.server, self.airflow = mlflow, pipelines, server, airflow
        self.tracking = Tracking(mlflow.uri)

    def configure(self, **approval: Any) -> None:
        """Set deploy.approval (and a fast poke) in the pipeline file the tasks read at run time."""
        path = self.pipelines / f"{PIPELINE}.yaml"
        data = yaml.safe_load(path.read_text())
        data["deploy"]["approval"] = {"required": False, "timeout_minutes": 30, "approvers": [], **approval}
        data["deploy"]["poke_interval_seconds"] = 1
        data["deploy"].setdefault("smoke", {})["latency_budget_ms"] = 250
        path.write_text(yaml.safe_dump(data))

    def set_champion(self, version: str) -> None:
        """Move the alias by hand (as someone in the MLflow UI would) and wait until the server serves it."""
        self.tracking.client.set_registered_model_alias(PIPELINE, CHAMPION, version)
        self.wait_served(version)

    def wait_served(self, version: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.server.served(PIPELINE).get("version") != version:
            assert time.monotonic() < deadline, f"server never served v{version}: {self.server.served(PIPELINE)}"
            time.sleep(0.5)

    def tags(self, version: str) -> dict[str, str]:
        return dict(self.tracking.client.get_model_version(PIPELINE, version).tags)

    def audit(self, action: str, version: str) -> list[promotion.AuditRecord]:
        return [r for r in promotion.audit_log(self.tracking, PIPELINE) if r.action == action and r.champion == version]


@pytest.fixture(scope="module")
def stack(airflow_db, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from airflow_mlops.config import pipeline_by_name
    from airflow_mlops.core.lake.storage import open_lake

    root = tmp_path_factory.mktemp("approval")
    mlflow = MlflowServer(root / "mlflow")
    airflow = AirflowProcesses(root / "airflow", {FORCER: "forcer-pw", REVIEWER: "reviewer-pw"})
    server: ModelServerProcess | None = None
    with pytest.MonkeyPatch.context() as mp:
        try:
            mlflow.start()
            airflow.start()
            lake_root, pipelines = root / "lake", root / "pipelines"
            lake_root.mkdir()
            mp.setenv("MLOPS_LAKE_ROOT", str(lake_root))
            mp.setenv("MLOPS_PIPELINES_DIR", str(pipelines))
            mp.setenv(
                "AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "http", "extra": {"tracking_uri": mlflow.uri}})
            )
            small_config(pipelines)
            cfg = pipeline_by_name(PIPELINE)
            features = synthetic_features(cfg, day_range("2013-03-01", 20), rows_per_day=200, seed=7)
            write_partitions(open_lake(str(lake_root)), cfg, features)
            assert str(run_train({"reason": "v1"})[0].state) == "success"
            small_config(pipelines, min_primary=0.999)  # v2 fails its gates and is forced past them
            assert str(run_train({"force": True, "force_reason": "hotfix 42"})[0].state) == "success"
            small_config(pipelines)
            client = Tracking(mlflow.uri).client
            v1 = client.get_model_version(PIPELINE, "1")
            for _ in (3, 4):  # two more versions that passed their gates: v1 registered again, with its tags
                client.create_model_version(PIPELINE, source=f"models:/{PIPELINE}/1", tags=v1.tags)
            assert client.get_model_version(PIPELINE, "2").tags["mlops.force_by"] == FORCER
            client.set_registered_model_alias(PIPELINE, CHAMPION, "1")
            server = ModelServerProcess(mlflow.uri, lake_root, pipelines, "--poll-seconds", "0.5")
            mp.setenv("AIRFLOW_CONN_MLOPS_MODEL_SERVER", server.connection)
            yield Stack(mlflow, pipelines, server, airflow)
        finally:
            if server is not None:
                server.stop()
            airflow.stop()
            mlflow.stop()


def pending_request(api: AirflowApi, timeout: float = 300) -> dict[str, Any]:
    """The approval request of the running deploy, once the task awaits input."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = api.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/~/hitlDetails", response_received=False)
        waiting = [d for d in found["hitl_details"] if d["task_instance"]["state"] == "awaiting_input"]
        if waiting:
            return dict(waiting[0])
        time.sleep(0.5)
    raise AssertionError(f"no approval request within {timeout:.0f}s")


def answer(api: AirflowApi, request: dict[str, Any], option: str) -> dict[str, Any]:
    run_id = request["task_instance"]["dag_run_id"]
    path = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/approve/-1/hitlDetails"
    return dict(api.request("PATCH", path, {"chosen_options": [option]}))


def deploy_answered(
    stack: Stack, conf: dict[str, Any], respond: Callable[[dict[str, Any]], Any] | None
) -> tuple[Any, dict[str, Any], Any]:
    """Run the deploy DAG with dag.test() while another thread answers its approval request through the API.

    Returns the DAG run, its task instances and what `respond` returned (it gets the pending request).
    """
    outcome: dict[str, Any] = {}

    def responder() -> None:
        assert respond is not None
        try:
            outcome["value"] = respond(pending_request(stack.airflow.api(REVIEWER)))
        except BaseException as exc:  # re-raised in the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=responder, daemon=True)
    if respond is not None:
        thread.start()
    dr, tis = run_deploy(conf)
    if respond is not None:
        thread.join(timeout=60)
        if "error" in outcome:
            raise outcome["error"]
    return dr, tis, outcome.get("value")


@pytest.fixture(scope="module")
def apis(stack: Stack) -> dict[str, AirflowApi]:
    """REST clients signed in as the user who forced v2 and as another reviewer."""
    return {user: stack.airflow.api(user) for user in (FORCER, REVIEWER)}


def test_forced_version_waits_for_another_user_then_is_promoted(stack: Stack, apis) -> None:
    # The config asks for no approval: the forced version needs one anyway, and not from who forced it.
    stack.configure(required=False, approvers=[FORCER, REVIEWER])
    stack.set_champion("1")

    def respond(request: dict[str, Any]) -> dict[str, Any]:
        assert [u["name"] for u in request["assigned_users"]] == [REVIEWER]  # the forcer is left out
        assert "v2" in request["subject"] and r"Gates overridden by dag\_test" in request["body"]  # Markdown-escaped
        with pytest.raises(ApiError) as refused:
            answer(apis[FORCER], request, "Approve")
        assert refused.value.status == 403
        return answer(apis[REVIEWER], request, "Approve")

    dr, tis, response = deploy_answered(stack, {"version": "2", "reason": "hotfix"}, respond)
    assert response["responded_by"]["name"] == REVIEWER
    assert str(dr.state) == "success", states(tis)
    assert stack.tracking.alias_version(PIPELINE, CHAMPION) == "2"
    assert stack.server.served(PIPELINE)["version"] == "2"
    assert stack.tags("2")["mlops.approved_by"] == REVIEWER
    approved = stack.audit("approve", "2")[-1]
    assert approved.who == REVIEWER and approved.dag_run_id == dr.run_id and approved.replaced == "1"
    promoted = stack.audit("promote", "2")[-1]
    assert promoted.replaced == "1" and promoted.dag_run_id == dr.run_id


def test_rejection_fails_the_run_and_is_audited(stack: Stack, apis) -> None:
    stack.configure(required=True)
    stack.set_champion("1")
    dr, tis, _ = deploy_answered(stack, {"version": "3"}, lambda request: answer(apis[REVIEWER], request, "Reject"))
    assert str(dr.state) == "failed", states(tis)
    assert states(tis)["approve"] == "failed" and states(tis)["promote"] == "upstream_failed"
    assert stack.tracking.alias_version(PIPELINE, CHAMPION) == "1"
    assert "mlops.approved_by" not in stack.tags("3")
    rejected = stack.audit("reject", "3")[-1]
    assert rejected.who == REVIEWER and rejected.dag_run_id == dr.run_id and "rejected" in rejected.why
    assert not [r for r in stack.audit("promote", "3") if r.dag_run_id == dr.run_id]


def test_the_forcing_user_cannot_approve_their_own_version(stack: Stack, apis) -> None:
    # No approvers configured: anyone may answer, so the API takes the forcer's answer; the task refuses it.
    stack.configure(required=False, approvers=[])
    stack.set_champion("1")

    def respond(request: dict[str, Any]) -> dict[str, Any]:
        assert request["assigned_users"] == []
        return answer(apis[FORCER], request, "Approve")

    dr, tis, response = deploy_answered(stack, {"version": "2"}, respond)
    assert response["responded_by"]["name"] == FORCER and response["chosen_options"] == ["Approve"]
    assert str(dr.state) == "failed", states(tis)
    assert states(tis)["approve"] == "failed" and states(tis)["promote"] == "upstream_failed"
    assert stack.tracking.alias_version(PIPELINE, CHAMPION) == "1"
    assert "mlops.approved_by" not in stack.tags("2")
    refused = stack.audit("reject", "2")[-1]
    assert refused.who == FORCER and refused.dag_run_id == dr.run_id and "forced" in refused.why


def test_unanswered_request_times_out_and_nothing_is_promoted(stack: Stack) -> None:
    stack.configure(required=True, timeout_minutes=0.05)  # 3 s; the scheduler's sweep ends the wait
    stack.set_champion("1")
    started = time.monotonic()
    dr, tis, _ = deploy_answered(stack, {"version": "3"}, None)
    assert str(dr.state) == "failed", states(tis)
    assert states(tis)["approve"] == "failed" and states(tis)["promote"] == "upstream_failed"
    assert time.monotonic() - started < 240
    assert stack.tracking.alias_version(PIPELINE, CHAMPION) == "1"
    expired = stack.audit("reject", "3")[-1]
    assert expired.who == "nobody" and "not answered" in expired.why and expired.dag_run_id == dr.run_id


def test_rollback_restores_the_champion_the_promotion_replaced(stack: Stack, apis) -> None:
    stack.configure(required=True)
    stack.set_champion("1")
    set_smoke_budget(stack.pipelines, 0.001)  # v4 gets promoted, then fails its smoke test

    def respond(request: dict[str, Any]) -> dict[str, Any]:
        # While the request waits, someone moves the champion to v3 by hand: the rollback must come back to v3.
        stack.set_champion("3")
        return answer(apis[REVIEWER], request, "Approve")

    dr, tis, _ = deploy_answered(stack, {"version": "4"}, respond)
    assert str(dr.state) == "failed", states(tis)
    assert states(tis)["smoke_test"] == "failed" and states(tis)["rollback"] == "success"
    assert states(tis)["deploy_failed"] == "failed"
    assert stack.audit("promote", "4")[-1].replaced == "3"
    assert stack.tracking.alias_version(PIPELINE, CHAMPION) == "3"  # not v1, the champion when the run started
    assert stack.server.served(PIPELINE)["version"] == "3"
    rolled = [r for r in promotion.audit_log(stack.tracking, PIPELINE) if r.action == "rollback"][-1]
    assert rolled.champion == "3" and rolled.replaced == "4" and rolled.dag_run_id == dr.run_id
