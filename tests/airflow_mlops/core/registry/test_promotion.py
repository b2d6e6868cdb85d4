"""Promotion and rollback against a real MLflow server: aliases, previous, audit records, idempotent reruns."""

from __future__ import annotations

import uuid

import pytest

from airflow_mlops.core.registry.promotion import PREVIOUS, audit_log, promote, rollback
from airflow_mlops.core.registry.tracking import CHALLENGER, CHAMPION, Tracking


@pytest.fixture()
def model(mlflow_server: str) -> tuple[Tracking, str]:
    tracking = Tracking(mlflow_server)
    name = f"promo_{uuid.uuid4().hex[:8]}"
    client = tracking.client
    client.create_registered_model(name)
    run = client.create_run(tracking.get_or_create_experiment(name))
    for i in (1, 2, 3):
        client.create_model_version(name, source=f"runs:/{run.info.run_id}/model{i}", run_id=run.info.run_id)
    return tracking, name


def aliases(tracking: Tracking, name: str) -> dict[str, str]:
    return dict(tracking.client.get_registered_model(name).aliases)


def test_promotions_keep_previous_and_an_audit_trail(model) -> None:
    tracking, name = model
    tracking.client.set_registered_model_alias(name, CHALLENGER, "1")
    first = promote(tracking, name, "1", who="alice", why="first model", dag_run_id="manual__1")
    assert first.replaced is None and aliases(tracking, name) == {CHAMPION: "1"}  # challenger alias consumed

    second = promote(tracking, name, "2", who="train", why="better auc", dag_run_id="manual__2")
    assert second.replaced == "1" and aliases(tracking, name) == {CHAMPION: "2", PREVIOUS: "1"}

    # a retried task of the same DAG run changes nothing and adds no record
    assert promote(tracking, name, "2", who="train", why="better auc", dag_run_id="manual__2") == second
    log = audit_log(tracking, name)
    assert [(r.action, r.champion, r.replaced, r.who) for r in log] == [
        ("promote", "1", None, "alice"),
        ("promote", "2", "1", "train"),
    ]


def test_rollback_returns_to_the_previous_champion(model) -> None:
    tracking, name = model
    promote(tracking, name, "1", who="a", why="x", dag_run_id="r1")
    promote(tracking, name, "3", who="a", why="y", dag_run_id="r2")
    record = rollback(tracking, name, "3", "1", who="deploy", why="smoke test: p99 45 ms > 20 ms", dag_run_id="r2")
    assert aliases(tracking, name) == {CHAMPION: "1"}
    assert record.champion == "1" and record.replaced == "3"
    assert tracking.client.get_model_version(name, "3").tags["mlops.rolled_back"].startswith("smoke test")
    assert [r.action for r in audit_log(tracking, name)][-1] == "rollback"


def test_rollback_of_the_first_champion_leaves_none(model) -> None:
    tracking, name = model
    promote(tracking, name, "1", who="a", why="x", dag_run_id="r1")
    rollback(tracking, name, "1", None, who="deploy", why="failed to load", dag_run_id="r1")
    assert aliases(tracking, name) == {}
