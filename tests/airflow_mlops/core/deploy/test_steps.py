"""Deploy steps against a real MLflow server: promotion needs an approval where one is due; rollback restores the
champion the promotion replaced."""

from __future__ import annotations

import uuid

import pytest

from airflow_mlops.config import PipelineConfig
from airflow_mlops.core.deploy.steps import Approval, DeployRefused, Who, promote_step, rollback_step
from airflow_mlops.core.registry import promotion
from airflow_mlops.core.registry.tracking import CHAMPION, Tracking


@pytest.fixture()
def model(mlflow_server: str, flights_cfg: PipelineConfig) -> tuple[Tracking, PipelineConfig]:
    """Versions 1 and 2 passed their gates; version 3 was forced past them by alice."""
    name = f"deploy_{uuid.uuid4().hex[:8]}"
    train = flights_cfg.train.model_copy(update={"registered_model_name": name})
    cfg = flights_cfg.model_copy(update={"train": train})
    tracking = Tracking(mlflow_server)
    client = tracking.client
    client.create_registered_model(name)
    run = client.create_run(tracking.get_or_create_experiment(name))
    passed = {"mlops.gate_passed": "true"}
    for tags in (passed, passed, {"mlops.gate_passed": "false", "mlops.force_by": "alice"}):
        client.create_model_version(name, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id, tags=tags)
    return tracking, cfg


def who(run: str) -> Who:
    return Who(who="deployer", why="test", dag_run_id=run)


def test_a_forced_version_needs_an_approval_by_someone_else(model) -> None:
    tracking, cfg = model
    name = cfg.train.model_name(cfg.name)
    with pytest.raises(DeployRefused, match=r"needs a human approval \(it was registered with force by alice"):
        promote_step(tracking, cfg, "3", who("r1"))
    with pytest.raises(DeployRefused, match="forced by alice, who cannot approve it too"):
        promote_step(tracking, cfg, "3", who("r1"), Approval(by="Alice"))
    assert tracking.alias_version(name, CHAMPION) is None
    promote_step(tracking, cfg, "3", who("r1"), Approval(by="bob", by_id="bob"))
    assert tracking.alias_version(name, CHAMPION) == "3"


def test_approval_required_by_the_config(model) -> None:
    tracking, cfg = model
    approval = cfg.deploy.approval.model_copy(update={"required": True})
    strict = cfg.model_copy(update={"deploy": cfg.deploy.model_copy(update={"approval": approval})})
    with pytest.raises(DeployRefused, match=r"deploy\.approval\.required"):
        promote_step(tracking, strict, "1", who("r1"))
    promote_step(tracking, cfg, "1", who("r1"))  # not required, gates passed: no approval needed
    assert tracking.alias_version(cfg.train.model_name(cfg.name), CHAMPION) == "1"


def test_rollback_restores_the_champion_its_promotion_replaced(model) -> None:
    tracking, cfg = model
    name = cfg.train.model_name(cfg.name)
    promote_step(tracking, cfg, "1", who("r1"))
    seen_at_start = tracking.alias_version(name, CHAMPION)  # "1": what check_version records
    tracking.client.set_registered_model_alias(name, CHAMPION, "2")  # moved by hand while the run waited
    promote_step(tracking, cfg, "3", who("r2"), Approval(by="bob"))
    assert promotion.promote_record(tracking, name, "r2").replaced == "2"
    done = rollback_step(tracking, cfg, "3", seen_at_start, who("r2"))
    assert done["champion"] == "2" and tracking.alias_version(name, CHAMPION) == "2"


def test_evidence_markdown_lists_gates_gaps_drift_and_links_and_escapes_data() -> None:
    from airflow_mlops.core.deploy.steps import evidence_markdown

    ev = {
        "model_name": "flight_delays",
        "version": "3",
        "champion_before": "2",
        "primary_metric": "roc_auc",
        "metrics": {"challenger.roc_auc": 0.71, "champion.roc_auc": 0.7, "challenger.rows": 900, "champion.rows": 900},
        "gate_outcome": "forced",
        "gate_reason": "min_improvement not met",
        "gates": [
            {"name": "min_primary", "passed": True, "observed": 0.71, "threshold": 0.6, "detail": "floor"},
            {"name": "min_improvement", "passed": False, "observed": 0.01, "threshold": 0.02, "detail": "gain"},
        ],
        "forced_by": "alice",
        "disparities": {"origin": {"challenger": 0.05, "champion": 0.07}},
        "training_reason": "manual: [click](javascript:alert(1)) <img src=x onerror=alert(1)>",
        "drift_at_training": {"date": "2013-02-15", "outcome": "drift", "drift_share": 0.6, "drifted_columns": "temp"},
        "window": "2013-01-01..2013-02-14",
        "content_hash": "sha256:ab",
        "version_url": "http://mlflow:5000/#/models/flight_delays/versions/3",
        "training_run_url": "http://mlflow:5000/#/experiments/1/runs/r",
        "airflow_run_url": "javascript:alert(1)",
        "links": {"Lifecycle page": "/mlops/lifecycle/flight_delays"},
    }
    text = evidence_markdown(ev)
    assert "| candidate v3 | 0.7100 | 900 |" in text and "| champion v2 | 0.7000 | 900 |" in text
    assert "- min\\_improvement: **failed** (observed 0.0100, threshold 0.0200)" in text
    assert "| origin | 0.0500 | 0.0700 |" in text
    assert "monitor of 2013\\-02\\-15: drift, drift share 0.6000" in text
    assert "[Model card and version](<http://mlflow:5000/#/models/flight_delays/versions/3>)" in text
    assert "[Lifecycle page](</mlops/lifecycle/flight_delays>)" in text
    # data is literal text: no link, image or HTML from a reason, no javascript: link
    assert "\\[click\\]\\(javascript:alert\\(1\\)\\) \\<img src=x onerror=alert\\(1\\)\\>" in text
    assert "Training DAG run" not in text
