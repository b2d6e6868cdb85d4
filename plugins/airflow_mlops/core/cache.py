"""The step cache: a step whose inputs, config section and package version did not change is not run again."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from airflow_mlops import __version__
from airflow_mlops.core.lake import paths
from airflow_mlops.core.lake.storage import Lake


@dataclass(frozen=True)
class StepRun:
    """A step's result, and whether it came from the record of an earlier run with the same fingerprint."""

    result: dict[str, Any]
    fingerprint: str
    skipped: bool
    recorded_at: str


def file_digest(lake: Lake, uri: str) -> str:
    """sha256 of a lake file's bytes (cheaper than decoding it; a rewrite with other bytes counts as a change)."""
    return hashlib.sha256(lake.read_bytes(uri)).hexdigest()


def fingerprint(lake: Lake, inputs: Sequence[str], config: Any, extra: Mapping[str, Any] | None = None) -> str:
    """The fingerprint of a step's inputs: each input file's bytes, the config section it depends on (JSON),
    anything else it depends on (`extra`: a champion version, a suite file) and the package version."""
    content = {
        "inputs": {uri: file_digest(lake, uri) for uri in sorted(inputs)},
        "config": config,
        "extra": dict(extra or {}),
        "package": __version__,
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def run_cached(
    lake: Lake,
    pipeline: str,
    step: str,
    ds: str,
    fingerprint_of: Callable[[], str],
    outputs: Callable[[dict[str, Any]], Sequence[str]],
    run: Callable[[], dict[str, Any]],
    force: bool = False,
) -> StepRun:
    """Run `run()` unless the step's record for `ds` has the same fingerprint and its outputs still exist.

    The record (`steps/<p>/<step>/date=<ds>.json`: fingerprint, result, outputs) is written only after the step
    succeeded, so a failed or killed run is never skipped; a deleted output (a quarantined day) reruns it.
    """
    record_uri = lake.uri(paths.step_record(pipeline, step, ds))
    current = fingerprint_of()
    if not force and lake.exists(record_uri):
        record = json.loads(lake.read_bytes(record_uri))
        if record.get("fingerprint") == current and all(lake.exists(uri) for uri in record.get("outputs", [])):
            return StepRun(dict(record["result"]), current, True, str(record.get("recorded_at")))
    result = run()
    now = datetime.now(UTC).isoformat(timespec="seconds")
    record = {"fingerprint": current, "result": result, "outputs": list(outputs(result)), "recorded_at": now}
    lake.write_bytes(record_uri, json.dumps(record, indent=2, default=str).encode())
    return StepRun(result, current, False, now)
