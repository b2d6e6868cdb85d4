"""Operators of the lifecycle: each calls one plain function of airflow_mlops.core on the lake."""

from __future__ import annotations

from airflow_mlops.operators.base import (
    MlflowPipelineOperator,
    PipelineOperator,
    SourceOperator,
    fail_without_retry,
    given,
)
from airflow_mlops.operators.deploy import (
    CheckVersionOperator,
    DeployFailedOperator,
    DeployOperator,
    PromoteModelOperator,
    RollbackOperator,
    SmokeTestOperator,
)
from airflow_mlops.operators.ingest import (
    BuildFeaturesOperator,
    CachedDayOperator,
    IngestSourceOperator,
    ValidateSourceOperator,
)
from airflow_mlops.operators.monitor import MonitorOperator
from airflow_mlops.operators.train import (
    EvaluateModelOperator,
    RegisterModelOperator,
    ScorePartitionsOperator,
    TrainModelOperator,
)

__all__ = [
    "BuildFeaturesOperator",
    "CachedDayOperator",
    "CheckVersionOperator",
    "DeployFailedOperator",
    "DeployOperator",
    "EvaluateModelOperator",
    "IngestSourceOperator",
    "MlflowPipelineOperator",
    "MonitorOperator",
    "PipelineOperator",
    "PromoteModelOperator",
    "RegisterModelOperator",
    "RollbackOperator",
    "ScorePartitionsOperator",
    "SmokeTestOperator",
    "SourceOperator",
    "TrainModelOperator",
    "ValidateSourceOperator",
    "fail_without_retry",
    "given",
]
