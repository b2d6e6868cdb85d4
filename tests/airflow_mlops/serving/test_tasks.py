"""The model server per train.task: regression and multiclass champions served, answers as served_predictions."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests
import yaml

from airflow_mlops.config.train import TrainConfig
from airflow_mlops.core.registry.tracking import CHAMPION
from airflow_mlops.core.train import tasks
from airflow_mlops.core.train import training as tr
from tests.fixtures.model_server import ADMIN_AUTH, AUTH, ModelServerProcess
from tests.fixtures.served_models import PASSED, PIPELINE, ServerProcess, Setup, json_rows, logged
from tests.fixtures.training_data import FLIGHTS_YAML

REGRESSION, MULTICLASS = "flight_minutes", "flight_bands"
MODEL = {"params": {"max_iter": 10}, "categorical": "native"}
TASK_YAML: dict[str, dict[str, Any]] = {
    REGRESSION: {
        "label": {"name": "delay_minutes", "expr": "arr_delay", "known": "arr_delay.notna()"},
        "train": {"task": "regression", "metric": {"primary": "r2"}},
    },
    MULTICLASS: {
        "label": {"name": "delay_band", "expr": "arr_delay // 30", "known": "arr_delay.notna()"},
        "train": {"task": "multiclass", "metric": {"primary": "accuracy"}},
    },
}


@dataclass
class TaskModels:
    """A server of three pipelines: the binary one of `setup`, a regression one and a multiclass one."""

    server: ModelServerProcess
    names: dict[str, str]  # pipeline -> registered model name
    models: dict[str, Any]  # pipeline -> its champion (version 1)
    rows: pd.DataFrame  # feature rows to predict


def labels(frame: pd.DataFrame, task: str) -> np.ndarray:
    """Labels that depend on the features: minutes of delay, or a delay band 0, 1, 2."""
    minutes = 40 * frame["precip"].fillna(0) + 2 * frame["hour"] + 25 * (frame["carrier"] == "B6").astype(float)
    if task == "regression":
        return minutes.to_numpy(dtype="float64")
    return np.minimum(minutes.to_numpy(dtype="float64") // 30, 2).astype("int64")


def fit(setup: Setup, frame: pd.DataFrame, task: str) -> Any:
    model_cfg = TrainConfig.model_validate({"task": task, "model": MODEL}).model
    model = tr.build_estimator(
        model_cfg, setup.spec.columns, setup.spec.categorical, 0, {}, task, setup.spec.derive_step()
    )
    return model.fit(frame[setup.spec.columns], labels(frame, task))


def register(setup: Setup, name: str, model: Any, task: str) -> str:
    client = setup.tracking.client
    if not client.search_registered_models(filter_string=f"name = '{name}'"):
        client.create_registered_model(name)
    run_id = client.create_run(setup.tracking.get_or_create_experiment(name)).info.run_id
    info = setup.tracking.log_model(run_id, model, setup.spec, setup.holdout, task=task)
    mv = client.create_model_version(name, source=info.model_uri, run_id=run_id, model_id=info.model_id, tags=PASSED)
    return str(mv.version)


@pytest.fixture(scope="module")
def served(setup: Setup, mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TaskModels]:
    root = tmp_path_factory.mktemp("tasks")
    pipelines = root / "pipelines"
    pipelines.mkdir()
    raw = yaml.safe_load(FLIGHTS_YAML.read_text(encoding="utf-8"))
    raw["train"]["registered_model_name"] = setup.name
    (pipelines / f"{PIPELINE}.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    names, models = {PIPELINE: setup.name}, {PIPELINE: setup.models["1"]}
    suffix = uuid.uuid4().hex[:8]
    for pipeline, changes in TASK_YAML.items():
        task = changes["train"]["task"]
        doc = yaml.safe_load(FLIGHTS_YAML.read_text(encoding="utf-8"))
        doc["name"] = pipeline
        doc["features"]["label"] = changes["label"]
        doc["train"].pop("search", None)
        doc["train"].update(changes["train"], registered_model_name=f"{pipeline}_{suffix}")
        doc["train"]["model"] = MODEL
        doc["train"]["gates"]["min_primary"] = 0.0
        (pipelines / f"{pipeline}.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
        names[pipeline] = f"{pipeline}_{suffix}"
        models[pipeline] = fit(setup, setup.holdout, task)
        version = register(setup, names[pipeline], models[pipeline], task)
        setup.tracking.client.set_registered_model_alias(names[pipeline], CHAMPION, version)
    setup.tracking.client.set_registered_model_alias(setup.name, CHAMPION, "1")
    server = ModelServerProcess(mlflow_server, root / "lake", pipelines, "--poll-seconds", "0.5",
                                "--flush-seconds", "1", "--max-rows", "50")  # fmt: skip
    try:
        yield TaskModels(server, names, models, setup.holdout.head(30))
    finally:
        server.stop()


def post(served: TaskModels, path: str, payload: Any, **headers: str) -> requests.Response:
    return requests.post(f"{served.server.url}{path}", json=payload, headers={**AUTH, **headers}, timeout=30)


def offline(served: TaskModels, setup: Setup, pipeline: str, task: str) -> list[Any]:
    return tasks.served_predictions(served.models[pipeline], served.rows[setup.spec.columns], task)


@pytest.mark.parametrize(("pipeline", "task"), [(PIPELINE, "binary"), (REGRESSION, "regression"),
                                                (MULTICLASS, "multiclass")])  # fmt: skip
def test_predict_answers_as_served_predictions_offline(setup: Setup, served: TaskModels, pipeline: str,
                                                       task: str) -> None:  # fmt: skip
    rows = json_rows(served.rows, setup.spec)
    resp = post(served, f"/predict/{pipeline}", {"rows": rows})
    assert resp.status_code == 200, resp.text
    got, expected = resp.json()["predictions"], offline(served, setup, pipeline, task)
    assert len(got) == len(expected) == len(rows)
    assert max(tasks.prediction_difference(g, e) for g, e in zip(got, expected, strict=True)) <= 1e-12
    if task == "binary":  # unchanged: one probability per row, as before task types
        assert all(isinstance(p, float) and 0 <= p <= 1 for p in got)
    elif task == "regression":
        assert all(isinstance(p, float) for p in got) and len(set(got)) > 1
    else:
        assert [a["prediction"] for a in got] == [e["prediction"] for e in expected]
        assert {a["prediction"] for a in got} <= {0, 1, 2}
        assert all(set(a["probabilities"]) == {"0", "1", "2"} for a in got)
        assert all(abs(sum(a["probabilities"].values()) - 1) < 1e-9 for a in got)
    versions = requests.get(f"{served.server.url}/version", headers=AUTH, timeout=10).json()["pipelines"]
    scoring = versions[pipeline]["scoring"]
    if task == "binary":
        assert scoring.startswith("fast path"), scoring
    else:
        assert scoring == f"sklearn pipeline (no fast path: it replays binary classifiers only, train.task is {task})"


def test_inference_log_columns_per_task(setup: Setup, served: TaskModels) -> None:
    rows = json_rows(served.rows.head(6), setup.spec)
    answers = {}
    for pipeline in (REGRESSION, MULTICLASS):
        resp = post(served, f"/predict/{pipeline}", {"rows": rows}, **{"X-Request-ID": f"log-{pipeline}"})
        assert resp.status_code == 200, resp.text
        answers[pipeline] = resp.json()["predictions"]
    lake_root = served.server.log_path.parent / "lake"
    reg = logged(lake_root, REGRESSION, f"log-{REGRESSION}")
    assert reg["prediction"].tolist() == answers[REGRESSION]
    assert not [c for c in reg.columns if c.startswith(tasks.PROBA_PREFIX)]
    multi = logged(lake_root, MULTICLASS, f"log-{MULTICLASS}")
    assert multi["prediction"].tolist() == [a["prediction"] for a in answers[MULTICLASS]]
    proba = [c for c in multi.columns if c.startswith(tasks.PROBA_PREFIX)]
    assert proba == ["proba.0", "proba.1", "proba.2"]
    for i, answer in enumerate(answers[MULTICLASS]):
        assert {c[len("proba.") :]: multi.loc[i, c] for c in proba} == answer["probabilities"]
    # What the monitor reads back: class probabilities (frame_scores), as from the batch predictions.
    scores, classes = tasks.frame_scores(multi, "multiclass")
    assert classes == ["0", "1", "2"] and scores.shape == (6, 3)
    assert set(multi.columns) >= {*setup.spec.columns, "request_id", "row", "time", "model_name", "model_version"}


def test_a_champion_of_the_wrong_task_is_not_swapped_in(setup: Setup, served: TaskModels) -> None:
    name = served.names[REGRESSION]
    classifier = register(setup, name, setup.models["1"], "binary")  # a classifier in the regression pipeline
    setup.tracking.client.set_registered_model_alias(name, CHAMPION, classifier)
    resp = requests.post(f"{served.server.url}/admin/reload", headers=ADMIN_AUTH, timeout=120)
    state = resp.json()["pipelines"][REGRESSION]
    try:
        assert state["version"] == "1" and state["failed_version"] == classifier, state
        assert "TaskMismatch" in state["error"] and "not a regressor" in state["error"], state
        health = requests.get(f"{served.server.url}/health", timeout=10).json()
        assert health["models"][REGRESSION] == "1"
        again = post(served, f"/predict/{REGRESSION}", {"rows": json_rows(served.rows.head(2), setup.spec)})
        assert again.status_code == 200 and again.json()["model_version"] == "1"
    finally:
        setup.tracking.client.set_registered_model_alias(name, CHAMPION, "1")


# MLflow's scoring protocol ------------------------------------------------------------------------------------


def mlflow_body(frame: pd.DataFrame) -> str:
    """The body MLflow's scoring clients send for a DataFrame (dataframe_split, NaN for missing values)."""
    from mlflow.utils.proto_json_utils import dump_input_data

    return str(dump_input_data(frame))


@pytest.mark.parametrize("pipeline", [PIPELINE, REGRESSION, MULTICLASS])
def test_invocations_answer_as_predict_in_every_mlflow_format(setup: Setup, served: TaskModels, pipeline: str) -> None:
    from mlflow.deployments import PredictionsResponse

    records = json_rows(served.rows, setup.spec)
    expected = post(served, f"/predict/{pipeline}", {"rows": records}).json()["predictions"]
    frame = pd.DataFrame(records)  # missing numbers become NaN, as in a client's frame
    url = f"{served.server.url}/invocations/{pipeline}"
    resp = requests.post(url, data=mlflow_body(frame), headers={**AUTH, "Content-Type": "application/json"}, timeout=30)
    assert resp.status_code == 200, resp.text
    answer = PredictionsResponse.from_json(resp.text)
    assert answer["predictions"] == expected and answer["model_version"] == "1"
    columns = {c: [r[c] for r in records] for c in setup.spec.columns}
    split = {"columns": list(columns), "data": [list(r.values()) for r in records]}
    for payload in (
        {"dataframe_records": records},
        {"instances": records},
        {"inputs": columns},
        {"dataframe_split": split},
    ):
        for path, headers in ((f"/invocations/{pipeline}", {}), ("/invocations", {"X-MLOps-Pipeline": pipeline})):
            resp = post(served, path, payload, **headers)
            assert resp.status_code == 200, (path, list(payload), resp.text)
            assert resp.json()["predictions"] == expected, (path, list(payload))


def test_mlflow_deployments_client_scores_through_the_endpoints_route(
    setup: Setup, served: TaskModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.deployments import get_deploy_client

    from tests.fixtures.model_server import TOKEN

    records = json_rows(served.rows.head(5), setup.spec)
    expected = post(served, f"/predict/{MULTICLASS}", {"rows": records}).json()["predictions"]
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", TOKEN)  # what MLflow's clients send as a bearer token
    client = get_deploy_client(served.server.url)
    answer = client.predict(endpoint=MULTICLASS, inputs={"dataframe_records": records})
    assert answer["predictions"] == expected


INVOCATION_ERRORS: dict[str, tuple[Any, dict[str, str], int, str]] = {
    "not an object": ([1, 2], {}, 422, "must be a JSON object with one of dataframe_split"),
    "no format": ({"rows": []}, {}, 422, "exactly one of dataframe_split"),
    "two formats": ({"instances": [], "inputs": []}, {}, 422, "exactly one of"),
    "params": ({"instances": [{}], "params": {"k": 1}}, {}, 422, "'params' are not accepted"),
    "extra field": ({"instances": [{}], "colour": 1}, {}, 422, "unknown top-level field(s): colour"),
    "split without columns": ({"dataframe_split": {"data": [[1]]}}, {}, 422, "'dataframe_split' must be an object"),
    "split row length": (
        {"dataframe_split": {"columns": ["a", "b"], "data": [[1]]}},
        {},
        422,
        "dataframe_split.data[0]: expected a list of 2 values, got 1 values",
    ),
    "split too many rows": ({"dataframe_split": {"columns": ["a"], "data": [[1]] * 51}}, {}, 413, "at most 50"),
    "columns of two lengths": ({"inputs": {"a": [1], "b": [1, 2]}}, {}, 422, "all of one length"),
    "empty": ({"dataframe_records": []}, {}, 422, "'dataframe_records' is empty"),
    "missing feature": ({"instances": [{"carrier": "AA"}]}, {}, 422, "instances[0]: missing field(s)"),
    "csv": ("a,b\n1,2", {"Content-Type": "text/csv"}, 415, "send application/json"),
    "no pipeline header": ({"instances": [{}]}, {"X-MLOps-Pipeline": ""}, 404, "unknown pipeline ''"),
}


@pytest.mark.parametrize("case", list(INVOCATION_ERRORS))
def test_bad_invocations_get_a_clear_4xx(served: TaskModels, case: str) -> None:
    payload, headers, status, message = INVOCATION_ERRORS[case]
    url = f"{served.server.url}/invocations" + ("" if "X-MLOps-Pipeline" in headers else f"/{REGRESSION}")
    data = payload if isinstance(payload, str) else json.dumps(payload)
    resp = requests.post(url, data=data, headers={**AUTH, **headers}, timeout=30)
    assert resp.status_code == status and message in resp.json()["error"], resp.text


@pytest.mark.parametrize("pipeline", [PIPELINE, REGRESSION])  # scored by the fast path / by the sklearn pipeline
def test_an_integer_beyond_64_bits_among_many_rows_is_named_by_the_mlflow_field(
    setup: Setup, served: TaskModels, pipeline: str
) -> None:
    """More than 4 rows take the column-wise check, which leaves the integer range to scoring: its 400 names the
    request's own field, as the row-by-row check of fewer rows does."""
    records = json_rows(served.rows.head(7), setup.spec)
    records[6]["distance"] = 2**64
    columns = list(records[0])
    split = {"columns": columns, "data": [[r[c] for c in columns] for r in records]}
    for payload, where in (
        ({"dataframe_records": records}, "dataframe_records[6]"),
        ({"instances": records}, "instances[6]"),
        ({"inputs": records}, "inputs[6]"),
        ({"inputs": {c: [r[c] for r in records] for c in columns}}, "inputs[6]"),
        ({"dataframe_split": split}, "dataframe_split.data[6]"),
        ({"dataframe_split": {**split, "data": split["data"][-1:]}}, "dataframe_split.data[0]"),  # row by row
    ):
        resp = post(served, f"/invocations/{pipeline}", payload)
        expected = f"{where}.distance: integer out of range, got int {2**64}"
        assert resp.status_code == 400 and expected in resp.json()["error"], (list(payload), resp.text)


def test_invocations_need_the_token_and_a_pipeline_when_several_are_served(served: TaskModels) -> None:
    url = f"{served.server.url}/invocations"
    assert requests.post(url, json={"instances": [{}]}, timeout=30).status_code == 401
    resp = requests.post(url, json={"instances": [{}]}, headers=AUTH, timeout=30)
    assert resp.status_code == 400 and "X-MLOps-Pipeline" in resp.json()["error"]
    assert post(served, "/invocations", {"instances": [{}]}, **{"X-MLOps-Pipeline": "nope"}).status_code == 404
    assert post(served, f"/invocations/{REGRESSION}", {"instances": [{}]}).status_code == 422
    metrics = requests.get(f"{served.server.url}/metrics", timeout=10).text
    for status in (400, 401, 422):
        assert f'mlops_requests_total{{route="/invocations",pipeline="unknown",status="{status}"}}' in metrics or (
            f'mlops_requests_total{{route="/invocations",pipeline="{REGRESSION}",status="{status}"}}' in metrics
        ), metrics
    assert 'route="/invocations",pipeline="nope"' not in metrics  # label values stay bounded


def test_one_served_pipeline_needs_no_header(setup: Setup, server: ServerProcess) -> None:
    """The binary server of the other serving tests: MLflow's own client, unchanged, with the token added."""
    from mlflow.deployments import PredictionsResponse

    rows = json_rows(setup.holdout.head(12), setup.spec)
    expected = server.predict(rows).json()
    body = mlflow_body(pd.DataFrame(rows))
    resp = requests.post(f"{server.url}/invocations", data=body, headers={**AUTH, "Content-Type": "application/json"},
                         timeout=30)  # fmt: skip
    assert resp.status_code == 200, resp.text
    answer = PredictionsResponse.from_json(resp.text)
    assert answer["predictions"] == expected["predictions"] and answer["model_version"] == expected["model_version"]
    assert answer.get_predictions("ndarray").shape == (12,)
    assert requests.get(f"{server.url}/ping", timeout=10).status_code == 200  # what MLflow's clients probe
