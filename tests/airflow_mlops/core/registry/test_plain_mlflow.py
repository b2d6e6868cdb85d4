"""A logged model in plain MLflow: a fresh virtualenv with the model's requirements only (MLflow, scikit-learn,
skops...), no checkout, loads the champion with `mlflow.pyfunc.load_model` and serves it with `mlflow models
serve`, both predicting what the project predicts from the same rows of base columns."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests

from airflow_mlops.config.train import TrainConfig
from airflow_mlops.core.ingest.features import join_sources
from airflow_mlops.core.lake.storage import open_lake
from airflow_mlops.core.registry.models import mlflow_uris
from airflow_mlops.core.registry.tracking import CHAMPION, Tracking, client_rows
from airflow_mlops.core.train import training as tr
from tests.airflow_mlops.config.test_expressions import real_sources
from tests.fixtures.mlflow_server import free_port
from tests.fixtures.training_data import day_range, flight_config, synthetic_features, write_partitions

ROOT = Path(__file__).resolve().parents[4]
LOCK = ROOT / "requirements.lock"

PREDICT = """\
import importlib.util, json, sys
import mlflow
import pandas as pd

uri, rows = sys.argv[1], json.load(open(sys.argv[2]))
model = mlflow.pyfunc.load_model(uri)
print(json.dumps({
    "project_installed": importlib.util.find_spec("airflow_mlops") is not None,
    "predictions": model.predict(pd.DataFrame.from_records(rows)).tolist(),
}))
"""


def fresh_venv(workdir: Path, requirements: Path) -> tuple[Path, dict[str, str]]:
    """A virtualenv with the model's requirements only, at the lock's versions, from uv's cache (as
    tests/install does); and the environment to run its programs in (nothing of this checkout on it)."""
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    assert uv, "uv is needed (scripts/setup.sh installs it into .venv)"
    cache = subprocess.run([uv, "cache", "dir"], capture_output=True, text=True, check=True).stdout.strip()
    venv = workdir / "venv"
    network = {k: v for k, v in os.environ.items() if re.search(r"proxy|ssl|cert|ca_bundle|^uv_", k, re.I)}
    env = {
        **network,
        "PATH": os.pathsep.join([str(venv / "bin"), "/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": str(workdir / "home"),
        "VIRTUAL_ENV": str(venv),
        "UV_CACHE_DIR": cache,
        "UV_LINK_MODE": "hardlink",
        "UV_PYTHON_DOWNLOADS": "never",
        "LANG": "C.UTF-8",
    }
    (workdir / "home").mkdir(parents=True)
    for cmd in (
        [uv, "venv", "--quiet", "--python", sys.executable, str(venv)],
        [uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), "-c", str(LOCK),
         "-r", str(requirements)],
    ):  # fmt: skip
        proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"{cmd} exited {proc.returncode}\n{proc.stderr[-4000:]}"
    return venv, env


@pytest.fixture(scope="module")
def champion(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Any, tr.FeatureSpec]:
    """A model trained and logged by the project, registered with the `champion` alias: (name, model, spec)."""
    cfg = flight_config()
    root = tmp_path_factory.mktemp("plain-mlflow")
    lake = open_lake(str(root / "lake"))
    write_partitions(lake, cfg, synthetic_features(cfg, day_range("2013-03-01", 10), rows_per_day=120, seed=5))
    train = TrainConfig.model_validate(
        {
            "window_days": 10,
            "validation_days": 2,
            "holdout_days": 2,
            "min_rows": 100,
            "model": {"params": {"max_iter": 10}},
        }
    )
    data = tr.load_window(lake, cfg, "2013-03-10", train.window_days, min_rows=train.min_rows)
    split = tr.split_by_time(data.frame, train.validation_days, train.holdout_days)
    spec = tr.feature_spec(cfg, data.frame)
    model = tr.fit(split, train, spec).model
    name = f"plain_{uuid.uuid4().hex[:8]}"
    tracking = Tracking(mlflow_server)
    tracking.client.create_registered_model(name)
    run_id = tracking.client.create_run(tracking.get_or_create_experiment(name)).info.run_id
    info = tracking.log_model(run_id, model, spec, split.holdout)
    mv = tracking.client.create_model_version(name, source=info.model_uri, run_id=run_id, model_id=info.model_id)
    tracking.client.set_registered_model_alias(name, CHAMPION, mv.version)
    return name, model, spec


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_plain_mlflow_loads_and_serves_the_champion_in_a_fresh_venv(
    champion: tuple[str, Any, tr.FeatureSpec], mlflow_server: str, tmp_path: Path
) -> None:
    name, model, spec = champion
    uri = f"models:/{name}@{CHAMPION}"

    with mlflow_uris(mlflow_server, mlflow_server):
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp_path)))
    requirements = local / "requirements.txt"
    assert not [r for r in requirements.read_text().split() if "airflow" in r]
    venv, env = fresh_venv(tmp_path / "fresh", requirements)
    env["MLFLOW_TRACKING_URI"] = mlflow_server

    cfg = flight_config()
    base = join_sources(cfg, real_sources(cfg, "2013-03-05")).head(25)  # real rows as a client knows them
    sent = json.loads(client_rows(base, spec).to_json(orient="records"))
    expected = model.predict_proba(pd.DataFrame.from_records(sent))
    (tmp_path / "rows.json").write_text(json.dumps(sent))
    (tmp_path / "predict.py").write_text(PREDICT)

    proc = subprocess.run(
        [str(venv / "bin" / "python"), str(tmp_path / "predict.py"), uri, str(tmp_path / "rows.json")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["project_installed"] is False
    assert np.allclose(out["predictions"], expected, rtol=0, atol=1e-12)

    port = free_port()
    with (tmp_path / "serve.log").open("w") as log:
        server = subprocess.Popen(
            [str(venv / "bin" / "mlflow"), "models", "serve", "-m", uri, "--env-manager", "local",
             "--host", "127.0.0.1", "--port", str(port)],
            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-4000:]
            try:
                if requests.get(f"http://127.0.0.1:{port}/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-4000:]
            time.sleep(1)
        body = {"dataframe_split": {"columns": list(sent[0]), "data": [list(r.values()) for r in sent]}}
        resp = requests.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=60)
        assert resp.status_code == 200, resp.text
        assert np.allclose(resp.json()["predictions"], expected, rtol=0, atol=1e-12)
    finally:
        server.terminate()
        server.wait(timeout=30)
