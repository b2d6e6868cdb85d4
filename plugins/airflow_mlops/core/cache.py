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


def lookup(lake: Lake, pipeline: str, step: str, ds: str, current: str) -> tuple[dict[str, Any] | None, str]:
    """The step's record for `ds` when it is a hit (same fingerprint, every output still there), else None and
    why not."""
    record_uri = lake.uri(paths.step_record(pipeline, step, ds))
    if not lake.exists(record_uri):
        return None, "no record of a successful run"
    record: dict[str, Any] = json.loads(lake.read_bytes(record_uri))
    if record.get("fingerprint") != current:
        return None, "its inputs, config section or package version changed"
    missing = [uri for uri in record.get("outputs", []) if not lake.exists(uri)]
    if missing:
        return None, f"its output {missing[0]} is gone"
    return record, ""


@dataclass(frozen=True)
class CachedStep:
    """One step of a chain: its name in the records, its date, and how to compute its fingerprint now."""

    step: str
    ds: str
    fingerprint_of: Callable[[], str]


@dataclass(frozen=True)
class Hit:
    """A step whose record stands: the earlier run's output is the output of this rerun."""

    step: str
    ds: str
    fingerprint: str
    recorded_at: str
    outputs: list[str]


@dataclass(frozen=True)
class ChainCheck:
    """Whether every step of a chain is a hit; else the first step that is not, and why."""

    hits: list[Hit]
    miss: str | None = None
    reason: str = ""

    @property
    def all_hit(self) -> bool:
        return self.miss is None

    def summary(self) -> dict[str, Any]:
        """What the task log and XCom say: the outputs that stand (each step's earlier run), or what runs and why."""
        stand = [{"step": h.step, "ds": h.ds, "recorded_at": h.recorded_at, "fingerprint": h.fingerprint[:16],
                  "outputs": h.outputs} for h in self.hits]  # fmt: skip
        if self.all_hit:
            return {"cached": True, "steps": stand}
        return {"cached": False, "first_to_run": self.miss, "why": self.reason, "steps": stand}


def check_chain(lake: Lake, pipeline: str, steps: Sequence[CachedStep]) -> ChainCheck:
    """Look up each step's record in order, as the steps would one after the other when each upstream step
    skips (so its output, the next step's input, stays what it was); stop at the first miss.

    A fingerprint that cannot be computed (a missing input, an unreachable service) is a miss: a check that
    cannot decide lets the steps run, and each still consults its own record.
    """
    hits: list[Hit] = []
    for s in steps:
        try:
            current = s.fingerprint_of()
            record, why = lookup(lake, pipeline, s.step, s.ds, current)
        except Exception as exc:  # any failure means: run the steps, they report it themselves
            return ChainCheck(hits, s.step, f"cannot compute its fingerprint: {type(exc).__name__}: {exc}")
        if record is None:
            return ChainCheck(hits, s.step, why)
        hits.append(Hit(s.step, s.ds, current, str(record.get("recorded_at")), list(record.get("outputs", []))))
    return ChainCheck(hits)


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
    if not force:
        record, _ = lookup(lake, pipeline, step, ds, current)
        if record is not None:
            return StepRun(dict(record["result"]), current, True, str(record.get("recorded_at")))
    result = run()
    now = datetime.now(UTC).isoformat(timespec="seconds")
    record = {"fingerprint": current, "result": result, "outputs": list(outputs(result)), "recorded_at": now}
    lake.write_bytes(record_uri, json.dumps(record, indent=2, default=str).encode())
    return StepRun(result, current, False, now)
