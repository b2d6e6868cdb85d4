"""The `deploy:` section of a pipeline config: approval, the wait for the server and the smoke test."""

from __future__ import annotations

from pydantic import Field

from airflow_mlops.config.schema import Strict


class ApprovalConfig(Strict):
    """Human approval (Airflow HITL) before a version becomes champion."""

    required: bool = Field(
        default=False,
        description="Ask a human in the Airflow UI before promoting any version. A version registered with "
        "force is always asked for, whatever this says, and the user who forced it cannot approve it.",
    )
    timeout_minutes: float = Field(
        default=1440,
        gt=0,
        description="Unanswered this long: the version is not promoted, the run fails and the audit says so.",
    )
    approvers: list[str] = Field(
        default_factory=list,
        description="Airflow user names allowed to answer (empty: any user with access); the user who forced "
        "the version is left out.",
    )


class SmokeConfig(Strict):
    """The smoke test of the served version on holdout rows of its training run."""

    rows: int = Field(default=50, ge=1, le=1000, description="Holdout rows sent to the server in one request.")
    latency_requests: int = Field(default=30, ge=1, description="Single-row requests timed for the p99 latency.")
    latency_budget_ms: float = Field(
        default=250, gt=0, description="Largest p99 of a single-row request, as the deploy task measures it."
    )
    tolerance: float = Field(
        default=1e-6, ge=0, description="Largest allowed difference between served and offline predictions."
    )


class DeployConfig(Strict):
    """The `<p>__deploy` DAG (triggered by training with the version, or by hand)."""

    approval: ApprovalConfig = ApprovalConfig()
    smoke: SmokeConfig = SmokeConfig()
    serve_timeout_seconds: int = Field(
        default=300, ge=10, description="How long to wait for the model server to report the new version."
    )
    poke_interval_seconds: int = Field(default=5, ge=1, description="How often the server's /version is read.")
