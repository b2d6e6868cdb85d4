"""Promotion, rollback and approval decisions on registered model versions, each kept as an audit record."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Literal

from airflow_mlops.core.registry.tracking import CHALLENGER, CHAMPION, TAG_PREFIX, Tracking

PREVIOUS = "previous"
AUDIT_PREFIX = "mlops.audit."
APPROVED_BY = f"{TAG_PREFIX}approved_by"
"""Version tag: the Airflow user who approved the version (the model server serves no forced version without it)."""
ROLLED_BACK = f"{TAG_PREFIX}rolled_back"
FORCE_BY = f"{TAG_PREFIX}force_by"

Action = Literal["promote", "rollback", "approve", "reject"]


@dataclass(frozen=True)
class AuditRecord:
    """Who moved the champion alias from which version to which, when and why.

    For `approve` and `reject` (a human's answer, a refused self-approval or an unanswered request),
    `champion` is the candidate version and `replaced` the champion at the time of the decision.
    """

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
    """Every promotion, rollback and approval decision of a registered model, oldest first."""
    model = tracking._retry(lambda: tracking.client.get_registered_model(name), f"get model {name}")
    records = [AuditRecord(**json.loads(v)) for k, v in model.tags.items() if k.startswith(AUDIT_PREFIX)]
    return sorted(records, key=lambda r: (r.when, r.action))


def _existing(tracking: Tracking, name: str, action: Action, dag_run_id: str) -> AuditRecord | None:
    for record in audit_log(tracking, name):
        if record.action == action and record.dag_run_id == dag_run_id:
            return record
    return None


def promote_record(tracking: Tracking, name: str, dag_run_id: str) -> AuditRecord | None:
    """The promotion a DAG run made, if any: it names the champion that promotion replaced."""
    return _existing(tracking, name, "promote", dag_run_id)


def promote(tracking: Tracking, name: str, version: str, *, who: str, why: str, dag_run_id: str) -> AuditRecord:
    """Make `version` the champion and the old champion `previous`; a rerun of the same DAG run is a no-op.

    The record (with the champion it replaces) is written before the aliases move, so a task killed in
    between still tells the rollback which champion to restore.
    """
    done = _existing(tracking, name, "promote", dag_run_id)
    current = tracking.alias_version(name, CHAMPION)
    if done is not None and current == done.champion == version:
        return done
    if current != version:
        replaced = current
    else:
        replaced = done.replaced if done is not None else tracking.alias_version(name, PREVIOUS)
    when = done.when if done is not None else _now()
    record = _record(tracking, AuditRecord("promote", name, version, replaced, who, why, when, dag_run_id))
    if current != version:
        if current is not None:
            _move(tracking, name, PREVIOUS, current)
        _move(tracking, name, CHAMPION, version)
    if tracking.alias_version(name, CHALLENGER) == version:
        _move(tracking, name, CHALLENGER, None)  # the challenger is the champion now
    return record


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def record_decision(
    tracking: Tracking,
    name: str,
    version: str,
    approved: bool,
    *,
    who: str,
    why: str,
    dag_run_id: str,
) -> AuditRecord:
    """Keep a human's answer on a version as an audit record and on the version: an approval tags it with who
    gave it; a rejection removes an approval given in an earlier run."""
    action: Action = "approve" if approved else "reject"
    client = tracking.client
    if approved:
        tracking._retry(lambda: client.set_model_version_tag(name, version, APPROVED_BY, who), "tag approved version")
    else:
        tags = tracking._retry(lambda: client.get_model_version(name, version).tags, f"get {name} v{version}")
        if APPROVED_BY in (tags or {}):
            tracking._retry(lambda: client.delete_model_version_tag(name, version, APPROVED_BY), "remove approval")
    done = _existing(tracking, name, action, dag_run_id)
    when = done.when if done is not None else _now()
    champion = tracking.alias_version(name, CHAMPION)
    return _record(tracking, AuditRecord(action, name, version, champion, who, why, when, dag_run_id))


def rollback(
    tracking: Tracking, name: str, failed: str, to_version: str | None, *, who: str, why: str, dag_run_id: str
) -> AuditRecord:
    """Put the champion alias back on `to_version` (none: no champion) and mark `failed` with why."""
    _move(tracking, name, CHAMPION, to_version)
    if to_version is not None and tracking.alias_version(name, PREVIOUS) == to_version:
        _move(tracking, name, PREVIOUS, None)
    tracking._retry(
        lambda: tracking.client.set_model_version_tag(name, failed, ROLLED_BACK, why), "tag rolled-back version"
    )
    done = _existing(tracking, name, "rollback", dag_run_id)
    when = done.when if done is not None else _now()
    return _record(tracking, AuditRecord("rollback", name, to_version, failed, who, why, when, dag_run_id))
