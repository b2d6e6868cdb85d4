"""The second demo pipeline (nyc_weather, a regression on replayed weather) through its DAGs with dag.test():
ingest with its own suite, train and register, score, monitor, deploy; flight_delays beside it untouched."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
import yaml

from airflow_mlops import settings
from airflow_mlops.core.lake import paths
from airflow_mlops.core.lake.storage import open_lake
from tests.dags.test_train_dag import client, xcom
from tests.fixtures.training_data import day_range, nycflights_dir

PIPELINE = "nyc_weather"
DAYS = day_range("2013-01-01", 6)
END = DAYS[-1]


def small_config(folder) -> None:
    """The shipped nyc_weather and flight_delays configs, nyc_weather with a small, fast training section."""
    for name in (PIPELINE, "flight_delays"):
        data = yaml.safe_load((settings.include_dir() / "pipelines" / f"{name}.yaml").read_text())
        if name == PIPELINE:
            data["train"].update(window_days=6, validation_days=0, holdout_days=2, min_rows=100, search=None)
            data["train"]["model"]["params"] = {"max_iter": 20}
            data["train"]["gates"].update(min_primary=15.0, min_slice_rows=20, max_slice_disparity=None)
            data["monitor"]["drift"]["min_rows"] = 50
            data["monitor"]["quality"]["min_rows"] = 50
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(data))


@pytest.fixture()
def weather_env(tmp_path, lake_root, monkeypatch, mlflow_server_factory):
    """Six real days of nyc_weather landed by the feeder, a fresh MLflow server as mlflow_default."""
    from airflow_mlops.config import pipeline_by_name
    from airflow_mlops.core.demo import feed_range

    server = mlflow_server_factory()
    monkeypatch.setenv(
        "AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "http", "extra": {"tracking_uri": server.uri}})
    )
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    monkeypatch.setenv("MLOPS_PIPELINES_DIR", str(pipelines))
    small_config(pipelines)
    feed_range(open_lake(str(lake_root)), pipeline_by_name(PIPELINE), DAYS[0], END)
    return server, pipelines


def run(kind: str, conf: dict | None = None, ds: str | None = None):
    from airflow_mlops import factory
    from airflow_mlops.config import pipeline_by_name

    dag = getattr(factory, f"build_{kind}_dag")(pipeline_by_name(PIPELINE))
    logical = datetime.fromisoformat(ds).replace(tzinfo=UTC) if ds else None
    dr = dag.test(logical_date=logical, run_conf=conf)
    tis = {ti.task_id: ti for ti in dr.get_task_instances()}
    assert str(dr.state) == "success", {k: str(t.state) for k, t in tis.items()}
    return dr, tis


def ingest_and_train(lake) -> dict:
    """Ingest the days (the first two through the DAG, the rest with the same steps), train once."""
    from airflow_mlops.config import pipeline_by_name
    from airflow_mlops.core.ingest.steps import ingest_day

    cfg = pipeline_by_name(PIPELINE)
    for ds in DAYS[:2]:
        _, tis = run("ingest", ds=ds)
        assert set(tis) == {"step_cache", "wait_for_readings", "ingest_readings", "validate_readings", "build_features"}
    for ds in DAYS[2:]:
        ingest_day(lake, cfg, ds)
    _, tis = run("train", {"end_date": END, "reason": "first weather model"})
    return xcom(tis["register"])


def test_whole_loop_beside_flight_delays(airflow_db, weather_env) -> None:
    from airflow_mlops.config import pipeline_by_name
    from airflow_mlops.core.registry.tracking import Tracking
    from airflow_mlops.core.train import tasks
    from airflow_mlops.core.train import training as tr

    server, _ = weather_env
    lake = open_lake(str(settings.lake_root()))
    cfg = pipeline_by_name(PIPELINE)

    result = ingest_and_train(lake)
    # Its own lake folders, validated by its own suite; nothing of flight_delays appears.
    assert lake.list(lake.uri("raw", "flight_delays")) == []
    raw = lake.read_parquet(lake.uri(paths.raw(PIPELINE, "readings", DAYS[0])))
    # The New York day: the rows whose local date columns say 2013-01-01 (its UTC times reach into Jan 2).
    table = pd.read_csv(nycflights_dir() / "weather.csv")
    assert len(raw) == ((table["month"] == 1) & (table["day"] == 1)).sum() and set(raw["day"]) == {1}
    report = lake.read_bytes(lake.uri(paths.validation_report(PIPELINE, "readings", DAYS[0])))
    assert b"expect_column_pair_values_a_to_be_greater_than_b" in report  # a check only nyc_weather.json has
    features = lake.read_parquet(lake.uri(paths.features(PIPELINE, END)))
    assert str(features["temp_f"].dtype) == "Float64" and "humid" not in features.columns

    # A regression registered under its own name, metrics of a regression, in its own experiment.
    assert result["promoted"] is True and result["version"] == "1", result
    mv = client(server).get_model_version(PIPELINE, "1")
    run_ = client(server).get_run(mv.run_id)
    assert {"rmse", "mae", "r2"} <= {k.split(".")[-1] for k in run_.data.metrics}
    assert client(server).get_experiment(run_.info.experiment_id).name != "flight_delays"
    assert client(server).search_registered_models() == [client(server).get_registered_model(PIPELINE)]

    # Score: the champion's predicted temperatures, equal to the model's own.
    _, tis = run("score", {"partition": END})
    assert str(tis["score"].state) == "skipped"  # no champion yet
    client(server).set_registered_model_alias(PIPELINE, "champion", "1")
    _, tis = run("score", {"partition": END})
    preds = lake.read_parquet(lake.uri(paths.predictions(PIPELINE, END)))
    model = Tracking(server.uri).load_champion(PIPELINE).model
    offline = tasks.predict_frame(model, features[tr.feature_spec(cfg, features).columns], "regression")
    np.testing.assert_allclose(preds["prediction"].to_numpy(), offline["prediction"].to_numpy())
    assert len(preds) == len(features) and 0 < preds["prediction"].mean() < 80  # degrees F in January

    # Monitor: its own experiment; labels are known at once (label_delay_days 0), so quality is judged.
    for ds in DAYS[-3:-1]:
        run("score", {"partition": ds})
    _, tis = run("monitor", {"date": END})
    monitored = xcom(tis["monitor"])
    assert monitored["outcome"] in ("ok", "drift", "quality"), monitored
    experiment = client(server).get_experiment_by_name(f"{PIPELINE}-monitoring")
    (mrun,) = client(server).search_runs([experiment.experiment_id])
    assert mrun.data.metrics["quality.rmse"] > 0


def test_deploy_serves_the_regression_beside_flight_delays(airflow_db, weather_env, lake_root, model_server_factory):
    from airflow_mlops.core.registry.tracking import CHAMPION, Tracking

    server, pipelines = weather_env
    lake = open_lake(str(lake_root))
    assert ingest_and_train(lake)["promoted"] is True
    model_server = model_server_factory(server.uri, lake_root, pipelines, "--poll-seconds", "0.5")

    _, tis = run("deploy", {"version": "1", "reason": "first weather release"})
    assert Tracking(server.uri).alias_version(PIPELINE, CHAMPION) == "1"
    assert model_server.served(PIPELINE)["version"] == "1"
    smoke = xcom(tis["smoke_test"])
    assert smoke["passed"] and smoke["max_abs_diff"] <= 1e-6
    # Its own route; the flight model (none registered here) is not disturbed by it.
    assert model_server.served("flight_delays")["version"] is None
