"""`<p>__score` with dag.test(): the champion's predictions of a partition, skipped without a champion."""

from __future__ import annotations

import numpy as np

from airflow_mlops import settings
from airflow_mlops.core.lake import paths
from airflow_mlops.core.lake.storage import open_lake
from tests.dags.test_train_dag import END, client, env, run_train  # noqa: F401  (env is a fixture)


def run_score(partition: str):
    from airflow_mlops.config import pipeline_by_name
    from airflow_mlops.factory import build_score_dag

    dr = build_score_dag(pipeline_by_name("flight_delays")).test(logical_date=None, run_conf={"partition": partition})
    return dr, {ti.task_id: ti for ti in dr.get_task_instances()}


def test_scores_with_the_champion_and_reruns_identically(airflow_db, env) -> None:  # noqa: F811
    server, _ = env
    dr, tis = run_score(END)
    assert str(tis["score"].state) == "skipped"  # no champion yet

    assert str(run_train()[0].state) == "success"
    client(server).set_registered_model_alias("flight_delays", "champion", "1")
    dr, tis = run_score(END)
    assert str(dr.state) == "success"
    (result,) = tis["score"].xcom_pull(task_ids="score", dag_id=dr.dag_id, run_id=dr.run_id)
    lake = open_lake(str(settings.lake_root()))
    preds = lake.read_parquet(lake.uri(paths.predictions("flight_delays", END)))
    features = lake.read_parquet(lake.uri(paths.features("flight_delays", END)))
    assert result["rows"] == len(preds) == len(features) and set(preds["model_version"]) == {"1"}

    from airflow_mlops.config import pipeline_by_name
    from airflow_mlops.core.registry.tracking import Tracking
    from airflow_mlops.core.train import training as tr

    cfg = pipeline_by_name("flight_delays")
    model = Tracking(server.uri).load_champion("flight_delays").model
    offline = tr.positive_scores(model, features[tr.feature_spec(cfg, features).columns])
    np.testing.assert_allclose(preds["prediction"].to_numpy(), offline)

    again = run_score(END)[1]["score"].xcom_pull(task_ids="score", dag_id=dr.dag_id)
    assert again[0]["content_hash"] == result["content_hash"]
    assert lake.list(lake.uri("predictions")) == [lake.uri(paths.predictions("flight_delays", END))]
