"""`validate` finds every kind of problem a pipeline file can have before it runs, each as file:line: key: message."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from airflow_mlops import settings
from airflow_mlops.validate import validate

SHIPPED = settings.include_dir() / "pipelines" / "flight_delays.yaml"
SUITES = settings.include_dir() / "expectations"


def suite_with(name: str, *extra: dict, change: Callable[[dict], None] | None = None) -> dict:
    suite = json.loads((SUITES / name).read_text())
    suite["expectations"] += list(extra)
    if change:
        change(suite)
    return suite


@pytest.fixture()
def folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A pipelines folder and an expectations folder (the shipped suites and a few broken ones)."""
    pipelines, expectations = tmp_path / "pipelines", tmp_path / "expectations"
    pipelines.mkdir()
    shutil.copytree(SUITES, expectations)
    monkeypatch.setenv(settings.ENV_EXPECTATIONS_DIR, str(expectations))
    gate = {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "gate"}}
    (expectations / "flights_gate.json").write_text(json.dumps(suite_with("flights.json", gate)))
    param = {
        "type": "expect_column_values_to_be_between",
        "kwargs": {"column": "day", "max_value": {"$PARAMETER": "hour"}},
    }
    (expectations / "flights_param.json").write_text(json.dumps(suite_with("flights.json", param)))
    (tmp_path / "outside.json").write_text((SUITES / "flights.json").read_text())
    (expectations / "link.json").symlink_to(tmp_path / "outside.json")
    return pipelines, expectations


def write(folder: Path, name: str, mutate: Callable[[dict], None]) -> Path:
    data = yaml.safe_load(SHIPPED.read_text())
    data["name"] = name
    mutate(data)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def line(path: Path, text: str, after: str | None = None) -> int:
    lines = path.read_text().splitlines()
    start = next(i for i, t in enumerate(lines) if after in t) if after else 0
    return next(i for i in range(start, len(lines)) if text in lines[i]) + 1


def test_the_shipped_pipelines_are_valid() -> None:
    report = validate([settings.include_dir() / "pipelines"], gx=False)
    assert report.problems == [] and [p.name for p in report.files] == ["flight_delays.yaml", "nyc_weather.yaml"]


def position(suite: str, kind: str, column: str | None = None) -> int:
    """1-based position of an expectation in a shipped suite."""
    entries = json.loads((SUITES / suite).read_text())["expectations"]
    return next(
        i for i, e in enumerate(entries, 1) if e["type"] == kind and e["kwargs"].get("column", column) == column
    )


MUTATIONS: dict[str, Callable[[dict], None]] = {
    "expression": lambda d: d["features"]["derived"].update(velocity="distance / air_tme"),
    "cron": lambda d: d["ingest"].update(schedule="61 * * * *"),
    "dotdot": lambda d: d["sources"]["flights"].update(suite="../outside.json"),
    "link": lambda d: d["sources"]["flights"].update(suite="link.json"),
    "missing": lambda d: d["sources"]["flights"].update(suite="nope.json"),
    "undeclared": lambda d: d["sources"]["flights"].update(suite="flights_gate.json"),
    "param": lambda d: d["sources"]["flights"].update(suite="flights_param.json"),
    "typed": lambda d: d["sources"]["flights"]["columns"].update(carrier="int64"),
    "slices": lambda d: d["train"]["gates"].update(slice_columns=["gate"]),
    "drift": lambda d: d["monitor"]["drift"].update(columns=["gate"]),
}


def test_every_kind_of_problem_is_named_with_file_line_and_key(folders: tuple[Path, Path]) -> None:
    pipelines, expectations = folders
    f = {name: write(pipelines, name, mutate) for name, mutate in MUTATIONS.items()}
    (pipelines / "old.yml").write_text("name: old\n")
    report = validate([pipelines], gx=False)
    got = [str(p) for p in report.problems]
    added = len(json.loads((SUITES / "flights.json").read_text())["expectations"]) + 1
    type_list = position("flights.json", "expect_column_values_to_be_in_type_list", "carrier")
    regex = position("flights.json", "expect_column_values_to_match_regex", "carrier")
    suite_line = {name: line(f[name], "suite: flights", "flights:") for name in ("undeclared", "param")}
    expected = [
        f"{pipelines / 'old.yml'}: (file): use the .yaml extension",
        f"{f['cron']}:{line(f['cron'], '61 * * * *')}: ingest.schedule: Value error, '61 * * * *' is not a cron",
        f"{f['dotdot']}:{line(f['dotdot'], '../outside.json')}: sources.flights.suite: Value error, must be a relative",
        f"{f['drift']}:{line(f['drift'], 'columns:', 'drift:')}: monitor.drift.columns: column 'gate' is not a feature",
        f"{f['expression']}:{line(f['expression'], 'velocity:')}: features.derived.velocity: unknown column 'air_tme'",
        f"{f['link']}:{line(f['link'], 'link.json')}: sources.flights.suite: suite 'link.json' resolves to "
        f"{expectations.parent / 'outside.json'}, outside the expectations folder {expectations}",
        f"{f['missing']}:{line(f['missing'], 'nope.json')}: sources.flights.suite: no suite file",
        f"{f['param']}:{suite_line['param']}: sources.flights.suite: suite flights_param.json: "
        f"expectation {added} (expect_column_values_to_be_between) uses suite parameter 'hour'",
        f"{f['slices']}:{line(f['slices'], '- gate', 'slice_columns')}: train.gates.slice_columns.0: column 'gate'",
        f"{f['typed']}:{line(f['typed'], 'carrier: int64')}: sources.flights.columns.carrier: suite flights.json: "
        f"expectation {type_list} (expect_column_values_to_be_in_type_list) wants one of ['StringDtype']; "
        "the column is declared int64",
        f"{f['typed']}:{line(f['typed'], 'carrier: int64')}: sources.flights.columns.carrier: suite flights.json: "
        f"expectation {regex} (expect_column_values_to_match_regex) needs a string column; "
        "the column is declared int64",
        f"{f['undeclared']}:{suite_line['undeclared']}: sources.flights.suite: suite flights_gate.json: "
        f"expectation {added} (expect_column_values_to_not_be_null) names column 'gate', "
        "not declared by source 'flights'",
    ]
    assert len(got) == len(expected), "\n".join(got)
    for want in expected:
        assert any(g.startswith(want) for g in got), f"{want}\nnot in\n" + "\n".join(got)


def test_a_suite_that_great_expectations_refuses(folders: tuple[Path, Path]) -> None:
    pipelines, expectations = folders
    bogus = {"type": "expect_column_values_to_be_purple", "kwargs": {"column": "carrier"}}
    (expectations / "flights_bogus.json").write_text(json.dumps(suite_with("flights.json", bogus)))
    path = write(pipelines, "bogus", lambda d: d["sources"]["flights"].update(suite="flights_bogus.json"))
    [problem] = validate([path]).problems
    assert (problem.line, problem.key) == (line(path, "flights_bogus.json"), "sources.flights.suite")
    assert "Great Expectations refuses the suite" in problem.message
    added = len(json.loads((SUITES / "flights.json").read_text())["expectations"]) + 1
    assert f"expectation {added} (expect_column_values_to_be_purple) is not valid" in problem.message
