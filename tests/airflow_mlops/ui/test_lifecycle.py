"""The lifecycle pages on a real Airflow API app: a real MLflow server and lake behind, Airflow's auth in front."""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_mlops.config import load_pipeline
from airflow_mlops.core.lake.storage import open_lake
from airflow_mlops.core.registry.tracking import Tracking
from tests.fixtures.lifecycle_history import History, write_history

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def pipeline(
    airflow_api, mlflow_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, History]]:
    """A copy of the demo pipeline under a name of its own, its history on the session's MLflow server and a lake."""
    name = f"lc_{uuid.uuid4().hex[:8]}"
    folder = tmp_path_factory.mktemp("pipelines")
    text = (ROOT / "include" / "pipelines" / "flight_delays.yaml").read_text()
    (folder / f"{name}.yaml").write_text(re.sub(r"(?m)^name: flight_delays$", f"name: {name}", text))
    lake_root = tmp_path_factory.mktemp("lake")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_PIPELINES_DIR", str(folder))
        mp.setenv("MLOPS_EXPECTATIONS_DIR", str(ROOT / "include" / "expectations"))
        mp.setenv("MLOPS_LAKE_ROOT", str(lake_root))
        mp.setenv(
            "AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "http", "extra": {"tracking_uri": mlflow_server}})
        )
        cfg = load_pipeline(folder / f"{name}.yaml")
        history = write_history(Tracking(mlflow_server), open_lake(str(lake_root)), cfg, versions=4, monitor_days=8)
        yield name, history
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def regression(pipeline, mlflow_server: str) -> tuple[str, History]:
    """The regression pipeline (nyc_weather, rmse) beside it, its monitor runs with prediction drift from day 3."""
    name = f"lr_{uuid.uuid4().hex[:8]}"
    path = Path(os.environ["MLOPS_PIPELINES_DIR"]) / f"{name}.yaml"
    text = (ROOT / "include" / "pipelines" / "nyc_weather.yaml").read_text()
    path.write_text(re.sub(r"(?m)^name: nyc_weather$", f"name: {name}", text))
    cfg = load_pipeline(path)
    lake = open_lake(os.environ["MLOPS_LAKE_ROOT"])
    history = write_history(Tracking(mlflow_server), lake, cfg, versions=3, monitor_days=9, prediction_from=3)
    return name, history


def get(api, path: str, role: str | None = "admin", **kwargs):
    client, tokens = api
    client.cookies.clear()
    headers = {"Authorization": f"Bearer {tokens[role]}"} if role else {}
    return client.get(f"/mlops/lifecycle/{path}", headers=headers, **kwargs)


def test_index_lists_the_pipeline_with_its_serving_version(airflow_api, pipeline) -> None:
    name, history = pipeline
    resp = get(airflow_api, "")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/html") and resp.headers["x-content-type-options"] == "nosniff"
    row = resp.text[resp.text.index(f'href="/mlops/lifecycle/{name}"') :]
    assert f">v{history.champion}</a> since" in row[:2000]
    assert "quarantined batch" in row[:4000]  # needs a person: the open quarantine


def test_pipeline_page_shows_versions_timeline_plots_and_links(airflow_api, pipeline, mlflow_server) -> None:
    name, history = pipeline
    resp = get(airflow_api, name)
    assert resp.status_code == 200, resp.text
    page = resp.text
    for version in history.versions:
        assert f"<b>v{version}</b>" in page
    assert "Champion timeline" in page and "v2 became champion" in page and "v3 rolled back" in page
    assert page.count("<svg") == 3 and "<script" not in page
    assert "No prediction drift recorded" in page  # its monitor runs predate prediction drift
    assert f'href="/dags/{name}__train/runs/' in page  # DAG runs
    assert "/tasks/train" in page and "/tasks/monitor" in page  # task logs
    assert f'href="{mlflow_server}/#/experiments/' in page  # MLflow runs
    assert f'href="{mlflow_server}/#/models/{name}/versions/2"' in page
    report = f"/mlops/lake/reports/{name}/monitor/date={history.alarm_days[0]}/report.html"
    assert f'href="{report}"' in page
    # what a user typed (the force reason) is text, never markup
    assert "hotfix &lt;b&gt;test&lt;/b&gt;" in page and "hotfix <b>" not in page
    # the report the page links to is served to the same user
    client, tokens = airflow_api
    assert client.get(report, headers={"Authorization": f"Bearer {tokens['admin']}"}).status_code == 200


def test_a_regression_page_plots_prediction_drift_and_rmse_the_right_way_up(airflow_api, regression) -> None:
    name, history = regression
    page = get(airflow_api, name).text
    assert page.count("<svg") == 4 and "No prediction drift recorded" not in page
    assert "Alarms followed by a promoted model: <b>4 of 8</b> retrain(s) the monitor triggered" in page
    assert "weighted by importance" in page and "estimated (no labels)" not in page
    chart = page[page.index("Prediction drift score of the champion") :]
    chart = chart[: chart.index("</svg>")]
    # one line per stretch of days with a score: the first days predate prediction drift and have none
    assert chart.count("<polyline") == 1
    assert re.findall(r"<title>prediction drifted (\S+)</title>", chart) == history.prediction_drifted != []
    assert "rmse on matured labels vs the champion&#x27;s holdout figure (lower is better)" in page
    assert f">v{history.champion}</a> since" in page and "rmse 0.70" in page  # the champion's holdout rmse
    row = page[page.index(f"<td>{history.monitor_days[-1]}</td>") :]
    assert f"{history.prediction_scores[history.monitor_days[-1]]:.4f}" in row[: row.index("</tr>")]


def test_a_dag_tab_leads_to_its_pipeline(airflow_api, pipeline) -> None:
    name, _ = pipeline
    resp = get(airflow_api, f"dag/{name}__monitor", follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"] == f"/mlops/lifecycle/{name}"
    assert get(airflow_api, "dag/some_other_dag", follow_redirects=False).status_code == 404


def test_users_without_access_get_no_page(airflow_api, pipeline) -> None:
    name, _ = pipeline
    assert get(airflow_api, name, role=None).status_code == 401
    assert get(airflow_api, name, role="none").status_code == 403
    index = get(airflow_api, "", role="none")
    assert index.status_code == 200 and name not in index.text and "you may not read are not shown" in index.text
    assert get(airflow_api, "no_such_pipeline").status_code == 404


def test_the_plugin_puts_the_page_in_the_navigation_and_on_every_dag(airflow_api) -> None:
    client, tokens = airflow_api
    resp = client.get("/api/v2/plugins", headers={"Authorization": f"Bearer {tokens['admin']}"})
    assert resp.status_code == 200, resp.text
    views = [v for p in resp.json()["plugins"] for v in p["external_views"] if v["name"] == "ML lifecycle"]
    assert {(v["destination"], v["href"]) for v in views} == {
        ("nav", "/mlops/lifecycle/"),
        ("dag", "/mlops/lifecycle/dag/{DAG_ID}"),
    }
