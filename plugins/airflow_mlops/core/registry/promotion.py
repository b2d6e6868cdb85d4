"""Promotion and rollback of registered model versions by alias, each kept as an audit record on the model."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Literal

from airflow_mlops.core.registry.tracking import CHALLENGER, CHAMPION, Tracking

PREVIOUS = "previous"
AUDIT_PREFIX = "mlops.audit."

Action = Literal["promote", "rollback"]


@dataclass(frozen=True)
class AuditRecord:
    """Who moved the champion alias from which version to which, when and why."""

    action: Action
    model: str
    champion: str | None
    replaced: str | None
    who: str
    why: str
    when: str
    dag_run_id: str

    def tag_key(self) -> str:
        # One record per action and DAG run: a retried task rewrites its record instead of adding one.
        return f"{AUDIT_PREFIX}{self.action}.{re.sub(r'[^A-Za-z0-9_.-]', '_', self.dag_run_id)}"


def _move(tracking: Tracking, name: str, alias: str, version: str | None) -> None:
    client = tracking.client
    if version is None:
        tracking._retry(lambda: client.delete_registered_model_alias(name, alias), f"delete alias {alias} of {name}")
    else:
        tracking._retry(lambda: client.set_registered_model_alias(name, alias, version), f"set {alias} of {name}")


def _record(tracking: Tracking, record: AuditRecord) -> AuditRecord:
    value = json.dumps(asdict(record), sort_keys=True)
    tracking._retry(
        lambda: tracking.client.set_registered_model_tag(record.model, record.tag_key(), value), "write audit record"
    )
    return record


def audit_log(tracking: Tracking, name: str) -> list[AuditRecord]:
    """Every promotion and rollback of a registered model, oldest first."""
    model = tracking._retry(lambda: tracking.client.get_registered_model(name), f"get model {name}")
    records = [AuditRecord(**json.loads(v)) for k, v in model.tags.items() if k.startswith(AUDIT_PREFIX)]
    return sorted(records, key=lambda r: (r.when, r.action))


def _existing(tracking: Tracking, name: str, action: Action, dag_run_id: str) -> AuditRecord | None:
    for record in audit_log(tracking, name):
        if record.action == action and record.dag_run_id == dag_run_id:
            return record
    return None


def promote(tracking: Tracking, name: str, version: str, *, who: str, why: str, dag_run_id: str) -> AuditRecord:
    """Make `version` the champion and the old champion `previous`; a rerun of the same DAG run is a no-op."""
    done = _existing(tracking, name, "promote", dag_run_id)
    if done is not None and tracking.alias_version(name, CHAMPION) == done.champion == version:
        return done
    current = tracking.alias_version(name, CHAMPION)
    if current == version:
        replaced = done.replaced if done is not None else tracking.alias_version(name, PREVIOUS)
    else:
        replaced = current
        if current is not None:
            _move(tracking, name, PREVIOUS, current)
        _move(tracking, name, CHAMPION, version)
    if tracking.alias_version(name, CHALLENGER) == version:
        _move(tracking, name, CHALLENGER, None)  # the challenger is the champion now
    when = done.when if done is not None else datetime.now(UTC).isoformat(timespec="seconds")
    return _record(tracking, AuditRecord("promote", name, version, replaced, who, why, when, dag_run_id))


def rollback(
    tracking: Tracking, name: str, failed: str, to_version: str | None, *, who: str, why: str, dag_run_id: str
) -> AuditRecord:
    """Put the champion alias back on `to_version` (none: no champion) and mark `failed` with why."""
    _move(tracking, name, CHAMPION, to_version)
    if to_version is not None and tracking.alias_version(name, PREVIOUS) == to_version:
        _move(tracking, name, PREVIOUS, None)
    tracking._retry(
        lambda: tracking.client.set_model_version_tag(name, failed, "mlops.rolled_back", why), "tag rolled-back version"
    )
    done = _existing(tracking, name, "rollback", dag_run_id)
    when = done.when if done is not None else datetime.now(UTC).isoformat(timespec="seconds")
    return _record(tracking, AuditRecord("rollback", name, to_version, failed, who, why, when, dag_run_id))
