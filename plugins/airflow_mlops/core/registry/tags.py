"""What the registry records: tag names and values of runs and versions, and the limits MLflow puts on them."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from airflow_mlops.core.train.evaluation import GateDecision
from airflow_mlops.core.train.window import DataSummary, partition_ranges

T = TypeVar("T")

TAG_PREFIX = "mlops."
CHALLENGER = "challenger"
CHAMPION = "champion"
MODEL_NAME = "model"
GATE_PASSED = f"{TAG_PREFIX}gate_passed"
GATE_OUTCOME = f"{TAG_PREFIX}gate_outcome"
"""Version tag: "true" when the version passed every quality gate (the model server serves it without an approval)."""
WINDOW = f"{TAG_PREFIX}window"
"""Run and version tag: the training window, `start..end`."""
MAX_DESCRIPTION_CHARS = 5000  # model_versions.description is VARCHAR(5000) on PostgreSQL/MySQL
MAX_INPUT_TAG_CHARS = 500
MAX_RUN_TAG_CHARS = 8000
REFERENCE_ARTIFACT = "reference/reference.parquet"
"""Run artifact holding a model's reference sample for the monitor."""


# Tags and values -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunTags:
    """Who made an MLflow run: the Airflow DAG run (one MLflow run per DAG run) and the current task."""

    dag_id: str
    run_id: str
    logical_date: str
    task: str

    def as_tags(self) -> dict[str, str]:
        return {
            f"{TAG_PREFIX}dag_id": self.dag_id,
            f"{TAG_PREFIX}dag_run_id": self.run_id,
            f"{TAG_PREFIX}logical_date": self.logical_date,
            f"{TAG_PREFIX}task": self.task,
        }


@dataclass(frozen=True)
class Lineage:
    """What a model version records about its origin: data partitions and hash, DAG run and MLflow run."""

    pipeline: str
    dag_id: str
    dag_run_id: str
    logical_date: str
    mlflow_run_id: str
    data: DataSummary
    airflow_run_url: str | None = None

    def as_tags(self) -> dict[str, str]:
        tags = {
            f"{TAG_PREFIX}pipeline": self.pipeline,
            f"{TAG_PREFIX}dag_id": self.dag_id,
            f"{TAG_PREFIX}dag_run_id": self.dag_run_id,
            f"{TAG_PREFIX}logical_date": self.logical_date,
            f"{TAG_PREFIX}mlflow_run_id": self.mlflow_run_id,
            f"{TAG_PREFIX}content_hash": self.data.content_hash,
            WINDOW: f"{self.data.window_start}..{self.data.window_end}",
            f"{TAG_PREFIX}partition_count": str(len(self.data.partitions)),
            f"{TAG_PREFIX}partition_ranges": partition_ranges(self.data.partitions),
            f"{TAG_PREFIX}partitions": ",".join(self.data.partitions),
            f"{TAG_PREFIX}source_uri": self.data.source_uri,
        }
        if self.airflow_run_url:
            tags[f"{TAG_PREFIX}airflow_run_url"] = self.airflow_run_url
        return tags


def decision_tags(decision: GateDecision) -> dict[str, str]:
    """Gate outcome, reason, each gate and any force (who, why) as tags."""
    tags = {
        GATE_OUTCOME: decision.outcome,
        GATE_PASSED: str(decision.passed).lower(),
        f"{TAG_PREFIX}first_run": str(decision.first_run).lower(),
        f"{TAG_PREFIX}gate_reason": decision.reason,
        f"{TAG_PREFIX}gates": json.dumps([g.__dict__ for g in decision.gates], default=str),
    }
    if decision.force is not None:
        tags[f"{TAG_PREFIX}force_by"] = decision.force.by
        tags[f"{TAG_PREFIX}force_reason"] = decision.force.reason
    return tags


_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-./ ]")


def metric_key(*parts: str) -> str:
    """An MLflow metric key from parts; characters MLflow refuses (e.g. parentheses) become `_`."""
    return ".".join(_KEY_CHARS.sub("_", p) for p in parts if p)


def quote(value: str) -> str:
    if "'" in value:
        raise ValueError(f"value {value!r} contains a single quote: it cannot be used in an MLflow filter")
    return f"'{value}'"


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def fit_description(card: str, limit: int = MAX_DESCRIPTION_CHARS) -> str:
    """The card cut to fit a model version description, pointing to the full card when cut."""
    if len(card) <= limit:
        return card
    note = "\n\n(cut to fit: full card in the version tag mlops.model_card and the run artifact model_card.md)\n"
    cut = card.rfind("\n", 0, limit - len(note))
    return card[: cut if cut > 0 else limit - len(note)] + note
