"""The model server as a real process against a real MLflow server: predictions, bad input, hot swap, inference log."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests

from airflow_mlops.core.ingest.features import build_features, join_sources
from airflow_mlops.core.lake.storage import open_lake
from airflow_mlops.core.registry.tracking import CHAMPION
from tests.airflow_mlops.config.test_expressions import real_sources
from tests.fixtures.model_server import ADMIN_AUTH, ADMIN_TOKEN, AUTH, TOKEN, ModelServerProcess
from tests.fixtures.served_models import (
    MAX_ROWS,
    PIPELINE,
    ServerProcess,
    Setup,
    assert_serves_nothing,
    json_rows,
    logged,
    offline,
    one_row,
    set_champion,
)
from tests.fixtures.training_data import flight_config


def test_predictions_equal_offline_predictions_and_version_is_reported(setup: Setup, server: ServerProcess) -> None:
    set_champion(setup, server, "1")
    rows = setup.holdout.head(40)
    resp = server.predict(json_rows(rows, setup.spec), headers={**AUTH, "X-Request-ID": "req-offline-1"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["pipeline"] == PIPELINE and body["model_version"] == "1" and body["request_id"] == "req-offline-1"
    assert np.allclose(body["predictions"], offline(setup.models["1"], rows, setup.spec), rtol=0, atol=1e-12)
    for i in range(3):  # single rows take another tree walker than batches
        single = server.predict(json_rows(rows.iloc[i : i + 1], setup.spec)).json()["predictions"]
        assert single == [body["predictions"][i]]
    version = server.versions()
    assert version["model_name"] == setup.name and version["version"] == "1" and version["loaded_at"]
    assert version["champion_version"] == "1" and version["error"] is None
    assert version["scoring"].startswith("fast path (hist_gradient_boosting"), version["scoring"]
    # Rows of base columns: the model's derived features replayed on numpy, checked at load on the input example.
    assert version["derived_features"] == "numpy fast path, checked on 7 batches", version["derived_features"]


def base_and_feature_rows(rows: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Flights of a real day as a client knows them (the flight and the joined values) and their feature rows."""
    cfg, ds = flight_config(), "2013-03-05"
    sources = real_sources(cfg, ds)
    base = join_sources(cfg, sources).head(rows)
    key = [*cfg.features.key, "sched_dep_time", "dest"]
    return base, base[key].merge(build_features(cfg, ds, sources), on=key, how="left", validate="one_to_one")


def test_rows_of_base_columns_get_the_predictions_of_their_feature_rows(setup: Setup, server: ServerProcess) -> None:
    set_champion(setup, server, "1")
    base, full = base_and_feature_rows(MAX_ROWS)
    sent = json_rows(base, setup.spec, base=True)
    assert "time_hour" in sent[0] and "year" in sent[0] and "plane_age" not in sent[0]
    from_base = server.predict(sent)
    from_features = server.predict(json_rows(full, setup.spec))
    assert from_base.status_code == from_features.status_code == 200, from_base.text
    assert from_base.json()["predictions"] == from_features.json()["predictions"]
    assert np.allclose(
        from_base.json()["predictions"], offline(setup.models["1"], full, setup.spec), rtol=0, atol=1e-12
    )
    for i in range(3):  # single rows take another tree walker than batches
        assert server.predict(sent[i : i + 1]).json()["predictions"] == [from_base.json()["predictions"][i]]
    missing = server.predict([{k: v for k, v in sent[0].items() if k != "year"}])
    assert missing.status_code == 422 and "rows[0]: missing field(s) year" in missing.json()["error"], missing.text
    bad = server.predict([{**sent[0], "time_hour": "yesterday"}])
    assert bad.status_code == 422 and "'time_hour': 'yesterday' is not an ISO 8601" in bad.json()["error"], bad.text


def test_base_rows_are_logged_with_the_columns_and_values_of_their_feature_rows(
    setup: Setup, server: ServerProcess
) -> None:
    """The monitor reads one set of columns: the feature columns, derived ones included, whatever the rows sent."""
    set_champion(setup, server, "1")
    base, full = base_and_feature_rows(8)
    run = uuid.uuid4().hex[:8]
    for request_id, rows in ((f"base-{run}", json_rows(base, setup.spec, base=True)),
                             (f"features-{run}", json_rows(full, setup.spec))):  # fmt: skip
        resp = server.predict(rows, headers={**AUTH, "X-Request-ID": request_id})
        assert resp.status_code == 200, resp.text
    from_base = logged(setup.lake_root, PIPELINE, f"base-{run}")
    from_features = logged(setup.lake_root, PIPELINE, f"features-{run}")
    assert list(from_base.columns) == list(from_features.columns)
    assert {"day_of_week", "plane_age", "sched_block_minutes"} <= set(from_base.columns)
    assert not {"time_hour", "year"} & set(from_base.columns)  # base columns outside the model's features
    pd.testing.assert_frame_equal(
        from_base[list(setup.spec.columns)], from_features[list(setup.spec.columns)], check_dtype=False
    )
    assert from_base["prediction"].tolist() == from_features["prediction"].tolist()


BAD_REQUESTS: dict[str, tuple[Callable[[Setup], Any], int, str]] = {
    "missing field": (lambda s: [one_row(s), one_row(s, temp=KeyError)], 422, "rows[1]: missing field(s) temp"),
    "wrong numeric type": (lambda s: [one_row(s, temp="hot")], 422, "rows[0].temp: expected a number or null, got str"),
    "infinite number": (lambda s: [one_row(s, temp=float("inf"))], 422, "rows[0].temp: expected a finite number"),
    "bool as number": (lambda s: [one_row(s, distance=True)], 422, "rows[0].distance: expected a number"),
    "wrong categorical type": (lambda s: [one_row(s, carrier=5)], 422, "rows[0].carrier: expected a string or null"),
    "extra field": (lambda s: [one_row(s, colour="red")], 422, "rows[0]: unknown field(s) colour"),
    "empty batch": (lambda s: [], 422, "'rows' is empty"),
    "oversized batch": (lambda s: [one_row(s)] * (MAX_ROWS + 1), 413, f"at most {MAX_ROWS} per request"),
    "rows not a list": (lambda s: {"a": 1}, 422, "'rows' must be a list"),
    "row not an object": (lambda s: [1], 422, "rows[0] must be an object"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_requests_get_a_clear_4xx_and_the_server_keeps_serving(
    setup: Setup, server: ServerProcess, case: str
) -> None:
    make, status, message = BAD_REQUESTS[case]
    resp = server.predict(make(setup))
    assert resp.status_code == status, resp.text
    assert message in resp.json()["error"]
    assert server.predict([one_row(setup)]).status_code == 200


def test_bad_token_body_and_route_are_refused(setup: Setup, server: ServerProcess) -> None:
    rows = [one_row(setup)]
    missing = server.predict(rows, headers={})
    assert missing.status_code == 401 and "missing API token" in missing.json()["error"]
    wrong = server.predict(rows, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403 and "invalid API token" in wrong.json()["error"]
    assert requests.get(f"{server.url}/version", timeout=10).status_code == 401
    assert requests.post(f"{server.url}/admin/reload", timeout=10).status_code == 401
    not_json = requests.post(f"{server.url}/predict/{PIPELINE}", data=b"{rows:", headers=AUTH, timeout=10)
    assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["error"]
    unknown = server.predict(rows, pipeline="nope")
    assert unknown.status_code == 404 and "unknown pipeline 'nope'" in unknown.json()["error"]
    assert requests.get(f"{server.url}/predict/{PIPELINE}", headers=AUTH, timeout=10).status_code == 405
    assert requests.get(f"{server.url}/health", timeout=10).json()["status"] == "ok"
    assert server.predict(rows).status_code == 200


def test_version_that_fails_to_load_is_not_swapped_in(setup: Setup, server: ServerProcess) -> None:
    set_champion(setup, server, "1")
    after = set_champion(setup, server, "3", served="1")  # pickle format: the safe loader refuses it
    try:
        assert after["version"] == "1" and after["champion_version"] == "3" and after["failed_version"] == "3"
        assert "saved in 'pickle' format" in after["error"]
        rows = setup.holdout.head(5)
        resp = server.predict(json_rows(rows, setup.spec))
        assert resp.status_code == 200 and resp.json()["model_version"] == "1"
        assert np.allclose(resp.json()["predictions"], offline(setup.models["1"], rows, setup.spec), atol=1e-12)
        metrics = requests.get(f"{server.url}/metrics", timeout=10).text
        # Counted once by the forced reload, and once more if the server's own poll saw the alias move first.
        (failures,) = re.findall(r"^mlops_model_load_failures_total (\d+)$", metrics, re.MULTILINE)
        assert int(failures) in (1, 2), metrics
        assert f'mlops_model_version{{pipeline="{PIPELINE}",model_name="{setup.name}"}} 1' in metrics
    finally:
        set_champion(setup, server, "1")


def test_hot_swap_under_concurrent_requests_drops_none(setup: Setup, server: ServerProcess) -> None:
    set_champion(setup, server, "1")
    rows = setup.holdout.head(10)
    payload = json_rows(rows, setup.spec)
    expected = {v: offline(m, rows, setup.spec) for v, m in setup.models.items()}
    seen: list[tuple[int, str | None, list[float] | str]] = []
    stop = threading.Event()

    def client() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                try:
                    resp = session.post(f"{server.url}/predict/{PIPELINE}", json={"rows": payload}, headers=AUTH)
                except requests.RequestException as exc:
                    seen.append((0, None, str(exc)))
                    continue
                body = resp.json()
                seen.append((resp.status_code, body.get("model_version"), body.get("predictions") or resp.text))

    threads = [threading.Thread(target=client) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        setup.tracking.client.set_registered_model_alias(setup.name, CHAMPION, "2")  # the poller picks it up
        deadline = time.monotonic() + 60
        while server.versions()["version"] != "2" and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert server.versions()["version"] == "2"
    failed = [s for s in seen if s[0] != 200]
    assert not failed, failed[:3]
    versions = [s[1] for s in seen]
    assert "1" in versions and "2" in versions, versions
    for _, version, predictions in seen:  # each answer is wholly the model it names
        assert np.allclose(predictions, expected[str(version)], atol=1e-12)
    set_champion(setup, server, "1")


def logged_request(setup: Setup, request_id: str) -> tuple[pd.DataFrame, list[str]]:
    """The inference-log rows of one request once a flush wrote them (empty after 30 s), and the log's files."""
    lake = open_lake(str(setup.lake_root))
    logged, files = pd.DataFrame(), []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        files = lake.list(lake.zone_uri("inference_log", PIPELINE))
        frames = [lake.read_parquet(f) for f in files if f.endswith(".parquet")]
        both = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["request_id"])
        logged = both[both["request_id"] == request_id]
        if len(logged):
            break
        time.sleep(0.3)
    return logged, files


def test_inference_log_holds_the_rows_in_parquet_after_a_flush(setup: Setup, server: ServerProcess) -> None:
    rows = setup.holdout.head(7)
    request_id = f"log-{uuid.uuid4().hex[:8]}"
    resp = server.predict(json_rows(rows, setup.spec), headers={**AUTH, "X-Request-ID": request_id})
    assert resp.status_code == 200
    logged, files = logged_request(setup, request_id)
    assert len(logged) == 7, "the request's rows never reached the inference log"
    assert all("/date=" in f for f in files)
    logged = logged.sort_values("row")
    assert logged["prediction"].tolist() == pytest.approx(resp.json()["predictions"])
    assert set(logged["model_version"]) == {resp.json()["model_version"]}
    assert logged["carrier"].tolist() == rows["carrier"].astype(str).tolist()
    assert logged["temp"].isna().tolist() == rows["temp"].isna().tolist()
    # Batched: fewer files than requests this module has sent.
    total_requests = sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in requests.get(f"{server.url}/metrics", timeout=10).text.splitlines()
        if line.startswith('mlops_requests_total{route="/predict"') and 'status="200"' in line
    )
    assert len(files) < total_requests


def test_shutdown_flushes_the_inference_log(setup: Setup, mlflow_server: str) -> None:
    proc = ServerProcess(setup, mlflow_server, "--flush-seconds", "3600", "--flush-rows", "100000")
    try:
        request_id = f"shutdown-{uuid.uuid4().hex[:8]}"
        resp = proc.predict(json_rows(setup.holdout.head(3), setup.spec), headers={**AUTH, "X-Request-ID": request_id})
        assert resp.status_code == 200, resp.text
        lake = open_lake(str(setup.lake_root))

        def logged() -> int:
            files = lake.list(lake.zone_uri("inference_log", PIPELINE))
            return sum(int((lake.read_parquet(f)["request_id"] == request_id).sum()) for f in files)

        assert logged() == 0  # still buffered
    finally:
        # uvicorn shuts down gracefully, then re-raises SIGTERM: the status says the signal, the log the shutdown.
        assert proc.stop() in (0, -signal.SIGTERM), proc.log_tail()
    assert "Application shutdown complete" in proc.log_tail()
    assert logged() == 3


def test_metrics_are_prometheus_text(server: ServerProcess) -> None:
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    assert "# TYPE mlops_request_seconds histogram" in text
    assert 'mlops_request_seconds_bucket{route="/predict",pipeline="flight_delays",le="+Inf"}' in text
    assert 'status="422"' in text and 'status="200"' in text
    json.dumps(text)  # plain text, no binary


@pytest.fixture()
def server_connection(server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Airflow connection of this server, as a deployment would configure it."""
    conn = {"conn_type": "http", "host": "127.0.0.1", "port": server.port, "password": TOKEN}
    monkeypatch.setenv("AIRFLOW_CONN_MLOPS_MODEL_SERVER", json.dumps(conn))


def test_hook_sensor_and_trigger_see_the_served_version(
    setup: Setup, server: ServerProcess, server_connection: None
) -> None:
    import asyncio

    from airflow_mlops.hooks import ModelServerHook
    from airflow_mlops.sensors import ServedVersionSensor
    from airflow_mlops.triggers import ServedVersionTrigger

    set_champion(setup, server, "1")
    hook = ModelServerHook()
    assert hook.test_connection()[0]
    assert ModelServerHook.served_version(hook.request("GET", "/version"), PIPELINE) == "1"

    assert ServedVersionSensor(task_id="s1", pipeline=PIPELINE, version="1").poke({}) is True
    assert ServedVersionSensor(task_id="s2", pipeline=PIPELINE, version="2").poke({}) is False

    async def first_event(version: str, wait: float) -> Any:
        gen = ServedVersionTrigger(PIPELINE, version, "mlops_model_server", poke_interval=0.2).run()
        return await asyncio.wait_for(gen.__anext__(), wait)

    assert asyncio.run(first_event("1", 10)).payload == {"status": "serving", "version": "1"}
    with pytest.raises(TimeoutError):  # version 2 is not served: the trigger keeps waiting
        asyncio.run(first_event("2", 1.5))


def test_removing_the_champion_alias_stops_serving_that_version(setup: Setup, server: ServerProcess) -> None:
    set_champion(setup, server, "1")
    setup.tracking.client.delete_registered_model_alias(setup.name, CHAMPION)
    try:
        assert_serves_nothing(setup, server, server.reload(), "no 'champion' alias")
    finally:
        set_champion(setup, server, "1")


@pytest.mark.parametrize(
    ("env", "why"),
    [
        ({"MLOPS_MODEL_SERVER_TOKEN": " "}, "the API token is empty"),
        ({"MLOPS_MODEL_SERVER_TOKEN": None, "MLOPS_MODEL_SERVER_TOKEN_FILE": "EMPTY"}, "is empty"),
        ({"MLOPS_MODEL_SERVER_ADMIN_TOKEN": TOKEN}, "the admin token must differ from the API token"),
    ],
)
def test_an_empty_token_refuses_to_start(setup: Setup, tmp_path: Path, env: dict[str, str | None], why: str) -> None:
    empty = tmp_path / "empty-token"
    empty.write_text("\n", encoding="utf-8")
    environ = {**os.environ, "MLOPS_MODEL_SERVER_TOKEN": TOKEN, "MLOPS_MODEL_SERVER_ADMIN_TOKEN": ADMIN_TOKEN,
               "MLFLOW_TRACKING_URI": "http://127.0.0.1:9", "MLOPS_LAKE_ROOT": str(tmp_path / "lake")}  # fmt: skip
    environ.update({k: str(empty) if v == "EMPTY" else v for k, v in env.items() if v is not None})
    environ = {k: v for k, v in environ.items() if env.get(k, "") is not None}
    done = subprocess.run([sys.executable, "-m", "airflow_mlops.serving", "--pipelines-dir", str(setup.pipelines_dir)],
                          env=environ, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 2 and why in done.stdout, (done.returncode, done.stdout, done.stderr[-2000:])


def test_a_token_file_with_a_trailing_newline_works(setup: Setup, mlflow_server: str, tmp_path: Path) -> None:
    token_file, admin_file = tmp_path / "token", tmp_path / "admin-token"
    token_file.write_text(f"{TOKEN}\n", encoding="utf-8")  # as `echo "$TOKEN" > file` writes it
    admin_file.write_text(f"{ADMIN_TOKEN}\n", encoding="utf-8")
    proc = ModelServerProcess(mlflow_server, tmp_path / "lake", setup.pipelines_dir, env={
        "MLOPS_MODEL_SERVER_TOKEN": None, "MLOPS_MODEL_SERVER_TOKEN_FILE": str(token_file),
        "MLOPS_MODEL_SERVER_ADMIN_TOKEN": None, "MLOPS_MODEL_SERVER_ADMIN_TOKEN_FILE": str(admin_file),
    })  # fmt: skip
    try:
        assert proc.predict_rows(PIPELINE, [one_row(setup)]).status_code == 200
        assert requests.post(f"{proc.url}/admin/reload", headers=ADMIN_AUTH, timeout=120).status_code == 200
        bare = requests.get(f"{proc.url}/version", headers={"Authorization": "Bearer "}, timeout=10)
        assert bare.status_code == 403
    finally:
        proc.stop()


def test_request_keys_are_logged_so_the_outcomes_that_land_later_join_the_answers(
    setup: Setup, server: ServerProcess
) -> None:
    """`keys` (the flight key and hour of each row) go to the inference log beside the features; the monitor joins
    the labels that land later to them (core.ingest.labels.attach_labels, as load_current does)."""
    from airflow_mlops.config import load_pipeline
    from airflow_mlops.core.ingest.labels import LANDED, LabelSet, attach_labels

    cfg = load_pipeline(setup.pipelines_dir / f"{PIPELINE}.yaml")
    columns = cfg.label_join[0]
    assert columns == ["carrier", "flight", "origin", "time_hour"]
    rows = setup.holdout.head(5).reset_index(drop=True)
    keys = [
        {
            "carrier": r.carrier,
            "flight": int(r.flight),
            "origin": r.origin,
            "time_hour": r.time_hour.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        for r in rows.itertuples()
    ]
    request_id = f"keys-{uuid.uuid4().hex[:8]}"
    body = {"rows": json_rows(rows, setup.spec), "keys": keys}
    resp = requests.post(f"{server.url}/predict/{PIPELINE}", json=body, headers={**AUTH, "X-Request-ID": request_id},
                         timeout=30)  # fmt: skip
    assert resp.status_code == 200, resp.text
    logged, _ = logged_request(setup, request_id)
    logged = logged.sort_values("row").reset_index(drop=True)
    assert logged["flight"].tolist() == rows["flight"].tolist()  # not a feature: logged from the keys
    assert logged["carrier"].tolist() == rows["carrier"].astype(str).tolist()

    outcomes = rows[columns].assign(delayed=[True, False, True, None, False]).astype({"delayed": "boolean"})
    landed = LabelSet(outcomes.dropna().assign(**{LANDED: "2013-03-30"}))
    joined = attach_labels(logged, landed, cfg)
    assert joined["delayed"].tolist() == [True, False, True, pd.NA, False]

    for bad, status, why in [
        ({"keys": keys[:2]}, 422, "'keys' has 2 object(s) for 5 row(s)"),
        ({"keys": [{**k, "gate": "A"} for k in keys]}, 422, "keys[0] must be an object of exactly carrier, flight"),
        ({"keys": [{**k, "flight": [1]} for k in keys]}, 422, "keys[0].flight: expected a string, a number or null"),
        ({"keys": "UA1545"}, 422, "'keys' must be a list of objects"),
    ]:
        answer = requests.post(f"{server.url}/predict/{PIPELINE}", json={"rows": body["rows"], **bad}, headers=AUTH,
                               timeout=30)  # fmt: skip
        assert answer.status_code == status and why in answer.json()["error"], answer.text
