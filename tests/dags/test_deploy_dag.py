"""`<p>__deploy` with dag.test() against a real MLflow server and a real model server: promote, roll back."""

from __future__ import annotations

import threading
import time

import mlflow
import pytest
import yaml

from airflow_mlops import settings
from airflow_mlops.core.lake import paths
from airflow_mlops.core.lake.storage import open_lake
from airflow_mlops.core.registry import promotion
from airflow_mlops.core.registry.tracking import CHAMPION, Tracking
from airflow_mlops.core.train import training as tr
from tests.dags.test_ingest_dag import asset_events
from tests.dags.test_train_dag import END, client, env, run_train, xcom  # noqa: F401  (env is a fixture)

PIPELINE = "flight_delays"


def run_deploy(conf: dict):
    from airflow_mlops.config import pipeline_by_name
    from airflow_mlops.factory import build_deploy_dag

    dr = build_deploy_dag(pipeline_by_name(PIPELINE)).test(logical_date=None, run_conf=conf)
    return dr, {ti.task_id: ti for ti in dr.get_task_instances()}


def states(tis) -> dict[str, str]:
    return {k: str(t.state) for k, t in tis.items()}


def holdout_rows(n: int = 5) -> list[dict]:
    from airflow_mlops.config import pipeline_by_name

    cfg = pipeline_by_name(PIPELINE)
    lake = open_lake(str(settings.lake_root()))
    frame = lake.read_parquet(lake.uri(paths.features(PIPELINE, END))).head(n)
    cols = tr.feature_spec(cfg, frame)
    rows = frame[cols.columns].astype(object).where(frame[cols.columns].notna(), None)
    return [{k: (str(v) if k in cols.categorical and v is not None else v) for k, v in r.items()}
            for r in rows.to_dict("records")]  # fmt: skip


def set_smoke_budget(pipelines, latency_budget_ms: float) -> None:
    path = pipelines / f"{PIPELINE}.yaml"
    data = yaml.safe_load(path.read_text())
    data.setdefault("deploy", {}).setdefault("smoke", {})["latency_budget_ms"] = latency_budget_ms
    path.write_text(yaml.safe_dump(data))


@pytest.fixture()
def served(env, lake_root, model_server_factory):  # noqa: F811
    """Two trained versions (v1, v2, both `challenger` in turn) and a model server watching the registry."""
    server, pipelines = env
    # These tests are not about latency: a p99 of a few hundred ms on a loaded 2-core machine must not roll
    # back a release (the one test of the budget sets its own).
    set_smoke_budget(pipelines, 10_000)
    for _ in range(2):  # two train runs: two versions of the same data
        dr, tis = run_train()
        assert str(dr.state) == "success", states(tis)
    model_server = model_server_factory(server.uri, lake_root, pipelines, "--poll-seconds", "0.5")
    return server, pipelines, model_server


def test_promotes_serves_and_smoke_tests_then_rolls_back_a_version_failing_the_smoke_test(airflow_db, served) -> None:
    server, pipelines, model_server = served
    tracking = Tracking(server.uri)

    dr, tis = run_deploy({"version": "1", "reason": "first release"})
    assert str(dr.state) == "success", states(tis)
    assert states(tis)["rollback"] == "skipped" and states(tis)["deploy_failed"] == "skipped"
    assert states(tis)["approve"] == "skipped"  # passed its gates, and the config asks for no approval
    assert tracking.alias_version(PIPELINE, CHAMPION) == "1"
    assert model_server.served(PIPELINE)["version"] == "1"
    smoke = xcom(tis["smoke_test"])
    assert smoke["passed"] and smoke["max_abs_diff"] <= 1e-6
    checked = xcom(tis["check_version"])
    assert checked["champion_before"] is None and "v1" in checked["markdown"]

    # v2 loads, but a 1 microsecond latency budget makes its smoke test fail: back to v1, run failed.
    set_smoke_budget(pipelines, 0.001)
    dr, tis = run_deploy({"version": "2", "reason": "weekly retrain"})
    assert str(dr.state) == "failed", states(tis)
    # The rollback succeeds (its champion event is emitted); deploy_failed fails the run naming why.
    assert states(tis)["smoke_test"] == "failed" and states(tis)["rollback"] == "success"
    assert states(tis)["deploy_failed"] == "failed"
    assert "latency" in xcom(tis["rollback"])["message"]
    assert tracking.alias_version(PIPELINE, CHAMPION) == "1"
    assert model_server.served(PIPELINE)["version"] == "1"
    # The Asset <p>.champion: the promotion of v2, then the rollback to v1, whose event names what serves now.
    promoted, rolled = [e for e in asset_events(f"{PIPELINE}.champion") if e.get("dag_run_id") == dr.run_id]
    assert (promoted["version"], promoted["replaced"]) == ("2", "1")
    assert (rolled["version"], rolled["replaced"], rolled["rolled_back"]) == ("1", "2", "2")
    assert rolled["model_uri"] == f"models:/{PIPELINE}/1" and rolled["partitions"] and rolled["content_hash"]
    assert rolled["mlflow_run_id"] == client(server).get_model_version(PIPELINE, "1").run_id
    answer = model_server.predict_rows(PIPELINE, holdout_rows())
    assert answer.status_code == 200 and answer.json()["model_version"] == "1"

    log = promotion.audit_log(tracking, PIPELINE)
    assert [(r.action, r.champion, r.replaced) for r in log] == [
        ("promote", "1", None),
        ("promote", "2", "1"),
        ("rollback", "1", "2"),
    ]
    assert "latency" in log[-1].why and log[0].why == "first release" and log[0].who
    assert "latency" in client(server).get_model_version(PIPELINE, "2").tags["mlops.rolled_back"]

    # A rolled-back version is refused before anything moves.
    set_smoke_budget(pipelines, 250)
    dr, tis = run_deploy({"version": "2"})
    assert states(tis)["check_version"] == "failed" and tracking.alias_version(PIPELINE, CHAMPION) == "1"


def test_version_that_fails_to_load_is_rolled_back_while_the_old_one_keeps_serving(airflow_db, served) -> None:
    server, _, model_server = served
    tracking = Tracking(server.uri)
    assert str(run_deploy({"version": "1"})[0].state) == "success"

    # v3: a pickle-format model that passed its gates on paper; the server's safe loader refuses it.
    mlflow.set_tracking_uri(server.uri)
    mlflow.set_registry_uri(server.uri)
    model = tracking.load_model(f"models:/{PIPELINE}/1")
    with mlflow.start_run(experiment_id=tracking.get_or_create_experiment(PIPELINE)) as run:
        pickled = mlflow.sklearn.log_model(model, name="model", serialization_format="pickle")
    v3 = client(server).create_model_version(
        PIPELINE, source=pickled.model_uri, run_id=run.info.run_id, model_id=pickled.model_id,
        tags={**client(server).get_model_version(PIPELINE, "1").tags},
    )  # fmt: skip
    assert v3.version == "3"

    dr, tis = run_deploy({"version": "3"})
    assert str(dr.state) == "failed", states(tis)
    assert states(tis)["wait_until_served"] == "failed" and states(tis)["smoke_test"] == "upstream_failed"
    assert tracking.alias_version(PIPELINE, CHAMPION) == "1"
    entry = model_server.served(PIPELINE)
    assert entry["version"] == "1"
    answer = model_server.predict_rows(PIPELINE, holdout_rows())
    assert answer.status_code == 200 and answer.json()["model_version"] == "1"
    rollback = promotion.audit_log(tracking, PIPELINE)[-1]
    assert rollback.action == "rollback" and "refused" in rollback.why and "pickle" in rollback.why


def test_refuses_a_version_that_failed_its_gates(airflow_db, env) -> None:  # noqa: F811
    server, _ = env
    assert str(run_train()[0].state) == "success"
    client(server).set_model_version_tag(PIPELINE, "1", "mlops.gate_passed", "false")
    dr, tis = run_deploy({"version": "1"})
    assert str(dr.state) == "failed" and states(tis)["check_version"] == "failed"
    assert states(tis)["promote"] == "upstream_failed"
    assert Tracking(server.uri).alias_version(PIPELINE, CHAMPION) is None


def test_evidence_compares_with_the_champion_on_the_same_holdout(airflow_db, env) -> None:  # noqa: F811
    from airflow_mlops.config import pipeline_by_name
    from airflow_mlops.core.deploy.steps import evidence, evidence_markdown

    server, _ = env
    tracking = Tracking(server.uri)
    assert str(run_train()[0].state) == "success"
    tracking.client.set_registered_model_alias(PIPELINE, CHAMPION, "1")
    assert str(run_train()[0].state) == "success"  # v2, evaluated against champion v1
    ev = evidence(tracking, pipeline_by_name(PIPELINE), None)  # no version given: the challenger
    assert ev["version"] == "2" and ev["champion_before"] == "1"
    primary = ev["primary_metric"]
    assert 0 < ev["metrics"][f"challenger.{primary}"] <= 1 and 0 < ev["metrics"][f"champion.{primary}"] <= 1
    text = evidence_markdown(ev)
    assert "v2" in text and "champion v1" in text and ev["version_url"] in text and ev["gate_outcome"] in text
    assert ev["gates"] and all(f"- {g['name'].replace('_', chr(92) + '_')}:" in text for g in ev["gates"])
    assert ev["training_reason"] and ev["drift_at_training"] is None and "no monitor run yet" in text


def test_approval_step_in_every_deploy_dag(env) -> None:  # noqa: F811
    from airflow.providers.standard.operators.hitl import ApprovalOperator

    from airflow_mlops.config import pipeline_by_name
    from airflow_mlops.factory import build_deploy_dag

    _, pipelines = env
    # Without deploy.approval.required too: a forced version needs a human, decided at run time.
    dag = build_deploy_dag(pipeline_by_name(PIPELINE))
    assert isinstance(dag.get_task("approve"), ApprovalOperator)

    path = pipelines / f"{PIPELINE}.yaml"
    data = yaml.safe_load(path.read_text())
    data["deploy"]["approval"] = {"required": True, "timeout_minutes": 90, "approvers": ["alice"]}
    path.write_text(yaml.safe_dump(data))
    dag = build_deploy_dag(pipeline_by_name(PIPELINE))
    approve = dag.get_task("approve")
    assert isinstance(approve, ApprovalOperator)
    assert approve.upstream_task_ids == {"check_version"} and dag.get_task("promote").upstream_task_ids == {"approve"}
    assert dag.get_task("promote").trigger_rule == "none_failed"  # a skipped (not needed) approval lets it run
    assert "approve" in dag.get_task("rollback").upstream_task_ids  # a rejection or timeout fails the run too
    assert "markdown" in approve.body and approve.response_timeout.total_seconds() == 90 * 60
    assert approve.assigned_users == [{"id": "alice", "name": "alice"}]
    assert approve.retries == 0


def test_model_server_killed_mid_deploy_rolls_back_and_the_old_version_serves_once_it_is_back(
    airflow_db, served, lake_root, model_server_factory
) -> None:
    """The server is SIGKILLed while the smoke test of v2 runs: the run rolls back to v1, and the server started
    again on the same port serves v1."""
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session

    server, pipelines, model_server = served
    tracking = Tracking(server.uri)
    assert str(run_deploy({"version": "1"})[0].state) == "success"
    path = pipelines / f"{PIPELINE}.yaml"
    data = yaml.safe_load(path.read_text())
    data["deploy"].update(
        poke_interval_seconds=1, smoke={"latency_requests": 3000, "latency_budget_ms": 10_000}
    )  # a smoke test that lasts
    path.write_text(yaml.safe_dump(data))
    chaos: dict = {}

    def kill_then_restart() -> None:
        try:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                with create_session() as session:
                    running = (
                        session.query(TaskInstance)
                        .filter_by(dag_id=f"{PIPELINE}__deploy", task_id="smoke_test", state="running")
                        .count()
                    )
                if running:
                    break
                time.sleep(0.2)
            chaos["killed_version"] = model_server.served(PIPELINE)["version"]
            model_server.proc.kill()  # SIGKILL: no shutdown of any kind
            model_server.proc.wait(timeout=60)
            while tracking.alias_version(PIPELINE, CHAMPION) != "1":  # the rollback moves the alias back
                assert time.monotonic() < deadline, "no rollback"
                time.sleep(0.2)
            chaos["server"] = model_server_factory(
                server.uri, lake_root, pipelines, "--poll-seconds", "0.5", port=model_server.port
            )
        except BaseException as exc:  # reported in the test's thread
            chaos["error"] = exc

    thread = threading.Thread(target=kill_then_restart, daemon=True)
    thread.start()
    dr, tis = run_deploy({"version": "2", "reason": "weekly retrain"})
    thread.join(timeout=300)
    assert "error" not in chaos, chaos.get("error")
    assert chaos["killed_version"] == "2"  # killed while it served the new version
    assert str(dr.state) == "failed", states(tis)
    assert states(tis)["smoke_test"] == "failed" and states(tis)["rollback"] == "success"
    assert states(tis)["deploy_failed"] == "failed"
    assert tracking.alias_version(PIPELINE, CHAMPION) == "1"
    back = chaos["server"]
    assert back.served(PIPELINE)["version"] == "1"
    answer = back.predict_rows(PIPELINE, holdout_rows())
    assert answer.status_code == 200 and answer.json()["model_version"] == "1"
    rollback = promotion.audit_log(tracking, PIPELINE)[-1]
    assert (rollback.action, rollback.champion, rollback.replaced) == ("rollback", "1", "2")
    assert "rolled_back" in str(client(server).get_model_version(PIPELINE, "2").tags)
