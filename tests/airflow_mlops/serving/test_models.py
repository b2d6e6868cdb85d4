"""The model server against a real MLflow server: a champion moved by hand onto an unapproved or rolled-back
version is refused, the version served before keeps serving."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_mlops.core.registry.promotion import APPROVED_BY, FORCE_BY, ROLLED_BACK
from airflow_mlops.core.registry.tags import GATE_PASSED
from airflow_mlops.core.registry.tracking import CHAMPION
from airflow_mlops.serving.models import refusal
from tests.fixtures.served_models import ServerProcess, Setup, assert_serves_nothing, json_rows, set_champion


def add_version(setup: Setup, tags: dict[str, str]) -> str:
    """A new version holding version 1's model, with `tags` only."""
    client = setup.tracking.client
    first = client.get_model_version(setup.name, "1")
    source = str(first.source)  # models:/<logged model id>: the registry wants that id with it
    mv = client.create_model_version(
        setup.name, source=source, run_id=first.run_id, model_id=source.removeprefix("models:/"), tags=tags
    )
    return str(mv.version)


REFUSED: dict[str, tuple[dict[str, str], str]] = {
    "no gate record": ({}, "neither passed quality gates"),
    "failed gates": ({GATE_PASSED: "false"}, "neither passed quality gates"),
    "forced without approval": ({GATE_PASSED: "false", FORCE_BY: "alice"}, "nor a recorded approval"),
    "rolled back": ({GATE_PASSED: "true", ROLLED_BACK: "smoke test failed: latency"}, "it was rolled back"),
    "approved, then rolled back": ({APPROVED_BY: "bob", ROLLED_BACK: "p99 too high"}, "it was rolled back"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_champion_without_gates_or_approval_or_rolled_back_is_not_served(
    setup: Setup, server: ServerProcess, case: str
) -> None:
    tags, why = REFUSED[case]
    set_champion(setup, server, "1")
    version = add_version(setup, tags)
    try:
        state = set_champion(setup, server, version, served="1")  # moved by hand: the old version serves on
        assert state["failed_version"] == version and why in state["error"], state
        resp = server.predict(json_rows(setup.holdout.head(2), setup.spec))
        assert resp.status_code == 200 and resp.json()["model_version"] == "1"
        # The poller does not swap it in either.
        assert server.versions()["version"] == "1"
    finally:
        set_champion(setup, server, "1")


@pytest.mark.parametrize("tags", [{GATE_PASSED: "false", FORCE_BY: "alice", APPROVED_BY: "bob"}, {GATE_PASSED: "true"}])
def test_an_approved_or_gated_champion_is_served(setup: Setup, server: ServerProcess, tags: dict[str, str]) -> None:
    set_champion(setup, server, "1")
    version = add_version(setup, tags)
    try:
        set_champion(setup, server, version)
        resp = server.predict(json_rows(setup.holdout.head(2), setup.spec))
        assert resp.status_code == 200 and resp.json()["model_version"] == version
    finally:
        set_champion(setup, server, "1")


def test_a_server_started_on_a_refused_champion_serves_nothing(setup: Setup, mlflow_server: str) -> None:
    version = add_version(setup, {})
    setup.tracking.client.set_registered_model_alias(setup.name, CHAMPION, version)
    proc = ServerProcess(setup, mlflow_server)
    try:
        assert_serves_nothing(setup, proc, proc.versions(), "neither passed quality gates")
    finally:
        proc.stop()
        setup.tracking.client.set_registered_model_alias(setup.name, CHAMPION, "1")


@pytest.mark.parametrize(
    ("tags", "refused"),
    [({GATE_PASSED: "true"}, False), ({APPROVED_BY: "x"}, False), ({APPROVED_BY: ""}, True), ({}, True)],
)
def test_refusal_reads_the_tags_the_deploy_side_writes(tags: dict[str, Any], refused: bool) -> None:
    assert (refusal(tags) is not None) == refused
