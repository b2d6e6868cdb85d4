"""The step cache on a real lake: skip on the same fingerprint, rerun on a changed input, a lost output or force."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_mlops.core.cache import fingerprint, run_cached
from airflow_mlops.core.lake import paths
from airflow_mlops.core.lake.storage import Lake, open_lake


class Step:
    """A step that copies its input upper-cased and counts its runs."""

    def __init__(self, lake: Lake) -> None:
        self.lake, self.runs = lake, 0
        self.src, self.out = lake.uri("raw/p/date=2013-01-01/in.txt"), lake.uri("features/p/date=2013-01-01/out.txt")

    def __call__(self, config: Any = "v1", force: bool = False) -> Any:
        def run() -> dict[str, Any]:
            self.runs += 1
            self.lake.write_bytes(self.out, self.lake.read_bytes(self.src).upper())
            return {"uri": self.out, "run": self.runs}

        return run_cached(
            self.lake, "p", "copy", "2013-01-01",
            lambda: fingerprint(self.lake, [self.src], {"section": config}), lambda r: [r["uri"]], run, force=force,
        )  # fmt: skip


@pytest.fixture()
def step(tmp_path: Path) -> Step:
    lake = open_lake(str(tmp_path / "lake"))
    s = Step(lake)
    lake.write_bytes(s.src, b"abc")
    return s


def test_same_fingerprint_skips_with_the_earlier_result(step: Step) -> None:
    first = step()
    assert not first.skipped and first.result == {"uri": step.out, "run": 1}
    again = step()
    assert again.skipped and again.result == first.result and again.fingerprint == first.fingerprint
    assert again.recorded_at == first.recorded_at and step.runs == 1
    record = json.loads(step.lake.read_bytes(step.lake.uri(paths.step_record("p", "copy", "2013-01-01"))))
    assert record["outputs"] == [step.out] and record["fingerprint"] == first.fingerprint


def test_a_changed_input_config_lost_output_or_force_reruns(step: Step) -> None:
    step()
    step.lake.write_bytes(step.src, b"abd")  # the input changed
    assert not step().skipped and step.lake.read_bytes(step.out) == b"ABD"
    assert step().skipped
    assert not step(config="v2").skipped  # the config section changed
    step.lake.delete(step.out)  # the output was removed (a quarantined day)
    assert not step(config="v2").skipped and step.lake.exists(step.out)
    assert not step(config="v2", force=True).skipped
    assert step(config="v2").skipped and step.runs == 5


def test_a_failed_run_is_not_recorded(step: Step) -> None:
    def boom() -> dict[str, Any]:
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        run_cached(step.lake, "p", "copy", "2013-01-01", lambda: "f", lambda r: [], boom)
    assert not step.lake.exists(step.lake.uri(paths.step_record("p", "copy", "2013-01-01")))
    assert not step().skipped


def test_a_chain_is_cached_only_when_every_step_is_a_hit(step: Step) -> None:
    from airflow_mlops.core.cache import CachedStep, check_chain

    out = step.lake.uri("features/p/date=2013-01-01/next.txt")
    chain = [
        CachedStep("copy", "2013-01-01", lambda: fingerprint(step.lake, [step.src], {"section": "v1"})),
        CachedStep("next", "2013-01-01", lambda: fingerprint(step.lake, [step.out], {})),
    ]
    first = check_chain(step.lake, "p", chain)
    assert not first.all_hit and first.miss == "copy" and first.hits == [] and "no record" in first.reason
    step()
    second = check_chain(step.lake, "p", chain)
    assert (second.miss, [h.step for h in second.hits]) == ("next", ["copy"]) and second.hits[0].outputs == [step.out]

    def run_next() -> dict[str, Any]:
        step.lake.write_bytes(out, b"x")
        return {"uri": out}

    run_cached(step.lake, "p", "next", "2013-01-01", chain[1].fingerprint_of, lambda r: [r["uri"]], run_next)
    hit = check_chain(step.lake, "p", chain)
    summary = hit.summary()
    assert hit.all_hit and summary["cached"] is True and [s["step"] for s in summary["steps"]] == ["copy", "next"]
    step.lake.write_bytes(step.src, b"abd")  # the first input changed: the chain stops there
    assert check_chain(step.lake, "p", chain).miss == "copy"
    step()
    assert "changed" in check_chain(step.lake, "p", chain).reason  # copy reran: next's input (its output) changed
    step.lake.delete(step.out)
    assert check_chain(step.lake, "p", chain).miss == "copy"  # copy's output is gone

    def broken() -> str:
        raise ConnectionError("MLflow is down")

    undecided = check_chain(step.lake, "p", [CachedStep("copy", "2013-01-01", broken)])
    assert undecided.miss == "copy" and "MLflow is down" in undecided.reason
