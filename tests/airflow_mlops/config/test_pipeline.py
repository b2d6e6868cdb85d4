"""Pipeline config schema: the shipped config loads; every kind of mistake is named with file and key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from airflow_mlops import settings
from airflow_mlops.config import PipelineConfigError, load_pipeline, load_pipelines, parse_pipeline

SHIPPED = settings.pipelines_dir() / "flight_delays.yaml"


def shipped() -> dict:
    return yaml.safe_load(SHIPPED.read_text())


def dump(data: dict) -> str:
    return yaml.safe_dump(data, sort_keys=False)


def test_shipped_config_loads() -> None:
    cfg = load_pipeline(SHIPPED)
    assert cfg.name == "flight_delays"
    assert set(cfg.partitioned_sources) == {"flights", "weather"}
    assert not cfg.sources["planes"].partitioned
    assert cfg.sources["flights"].landing_path("2013-01-02") == "flights/2013-01-02.csv"
    assert "plane_age" in cfg.feature_columns and "temp" in cfg.feature_columns
    assert cfg.dag_id("ingest") == "flight_delays__ingest"


def test_all_configs_load() -> None:
    assert [c.name for c in load_pipelines()] == sorted(p.stem for p in settings.pipelines_dir().glob("*.yaml"))


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d.update(schedule="@daily"), "x.yaml: schedule: unknown key"),
        (lambda d: d["ingest"].update(shedule="@daily"), "x.yaml: ingest.shedule: unknown key"),
        (
            lambda d: d["ingest"]["sensor"].update(poke_interval_seconds=0),
            "x.yaml: ingest.sensor.poke_interval_seconds: Input should be greater than or equal to 1",
        ),
        (lambda d: d.pop("features"), "x.yaml: features: Field required"),
        (
            lambda d: d["sources"]["flights"]["columns"].update(dep_delay="decimal"),
            "x.yaml: sources.flights.columns.dep_delay: Input should be",
        ),
        (
            lambda d: d["sources"]["flights"].update(path="flights/{date}.csv"),
            "x.yaml: sources.flights.path: Value error, only the {ds} placeholder",
        ),
        (
            lambda d: d["sources"]["flights"].update(path="../elsewhere/{ds}.csv"),
            "x.yaml: sources.flights.path: Value error, must be a relative path",
        ),
        (
            lambda d: d["features"].update(base="flight"),
            "x.yaml: features.base: unknown source 'flight' (sources: flights, weather, planes)",
        ),
        (lambda d: d["features"].update(base="planes"), "x.yaml: features.base: source 'planes' must be partitioned"),
        (
            lambda d: d["features"]["joins"][0].update(source="wether"),
            "x.yaml: features.joins.0.source: unknown source 'wether'",
        ),
        (
            lambda d: d["features"]["joins"][1]["columns"].update(wingspan="wingspan"),
            "x.yaml: features.joins.1: column 'wingspan' is not a declared column of source 'planes'",
        ),
        (
            lambda d: d["features"]["keep"].append("gate"),
            "x.yaml: features: column 'gate' is not a declared column of source 'flights'",
        ),
        (lambda d: d.update(end_date="2012-01-01"), "x.yaml: end_date: must not be before start_date"),
        (lambda d: d.update(name="Flight-Delays"), "x.yaml: name: String should match pattern"),
    ],
)
def test_mistakes_are_named(mutate, expected: str) -> None:
    data = shipped()
    mutate(data)
    with pytest.raises(PipelineConfigError) as err:
        parse_pipeline(dump(data), "x.yaml")
    assert expected in str(err.value)


def test_duplicate_key_is_an_error() -> None:
    text = SHIPPED.read_text().replace("owner: mlops\n", "owner: mlops\nowner: someone\n")
    with pytest.raises(PipelineConfigError, match=r"x.yaml: not valid YAML: duplicate key 'owner'"):
        parse_pipeline(text, "x.yaml")


def test_unquoted_boolean_key_is_explained() -> None:
    text = SHIPPED.read_text().replace("      keys: [origin, time_hour]", "      on: [origin, time_hour]")
    with pytest.raises(PipelineConfigError, match=r"key 'on' is read as the boolean True; quote it"):
        parse_pipeline(text, "x.yaml")


def test_not_a_mapping() -> None:
    with pytest.raises(PipelineConfigError, match=r"x.yaml: \(top level\): must be a mapping"):
        parse_pipeline("- a\n- b\n", "x.yaml")


def test_file_name_must_match_pipeline_name(tmp_path: Path) -> None:
    path = tmp_path / "other_name.yaml"
    path.write_text(SHIPPED.read_text())
    with pytest.raises(PipelineConfigError, match=r"other_name.yaml: name: 'flight_delays' must equal the file name"):
        load_pipeline(path)


def test_missing_suite_file(tmp_path: Path) -> None:
    path = tmp_path / "flight_delays.yaml"
    path.write_text(SHIPPED.read_text().replace("suite: flights.json", "suite: flightz.json"))
    with pytest.raises(PipelineConfigError, match=r"sources.flights.suite: no suite file .*flightz.json"):
        load_pipeline(path)


def test_errors_of_all_files_are_collected(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("name: a\n")
    (tmp_path / "b.yaml").write_text("name: b\nbogus: 1\n")
    (tmp_path / "c.yml").write_text("name: c\n")
    with pytest.raises(PipelineConfigError) as err:
        load_pipelines(tmp_path)
    message = str(err.value)
    assert "a.yaml: sources: Field required" in message
    assert "b.yaml: bogus: unknown key" in message
    assert "c.yml: use the .yaml extension" in message
