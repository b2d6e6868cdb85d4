"""Lineage end to end: the DAGs run with dag.test() and OpenLineage's file transport, and the emitted events answer
"which partitions fed the model serving now" and "which predictions came from a model trained on a quarantined day".
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from airflow_mlops.core.ingest.steps import landing_uri
from airflow_mlops.core.lake import paths
from airflow_mlops.core.lake.hashing import frame_hash
from airflow_mlops.core.lake.storage import open_lake
from tests.dags.test_ingest_dag import asset_events
from tests.dags.test_train_dag import client, env  # noqa: F401  (env is a fixture)
from tests.fixtures.bad_corpus import BAD_CASES
from tests.fixtures.training_data import day_range

PIPELINE = "flight_delays"
ROOT = Path(__file__).resolve().parents[2]
QUARANTINED = "2013-03-10"  # inside the training window (2013-03-01..2013-03-20), rejected before training
LIVE = "2013-03-21"  # ingested for real after the window, then scored by the champion


# Answers from the events alone --------------------------------------------------------------------------------


def read_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def version(dataset: dict[str, Any]) -> str | None:
    return (dataset.get("facets") or {}).get("version", {}).get("datasetVersion")


def partition_date(name: str) -> str:
    match = re.search(r"/date=(\d{4}-\d{2}-\d{2})(/|$)", name)
    assert match, name
    return match.group(1)


def ended(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """COMPLETE and FAIL task events, oldest first."""
    done = [e for e in events if e["eventType"] in ("COMPLETE", "FAIL") and "." in e["job"]["name"]]
    return sorted(done, key=lambda e: e["eventTime"])


def trained_on(events: list[dict[str, Any]], model_name: str) -> dict[str, Any]:
    """The run that wrote `model_name` (a registered version) and the feature partitions it read."""
    (event,) = [e for e in ended(events) if any(o["name"] == model_name for o in e["outputs"])]
    return event | {"partitions": [i for i in event["inputs"] if "/features/" in i["name"]]}


def partitions_serving_now(events: list[dict[str, Any]], model: str) -> tuple[str, list[dict[str, Any]]]:
    """The version the last promotion or rollback left as champion, and the feature partitions it was trained on."""
    alias = f"models:/{model}@champion"
    last = [o for e in ended(events) for o in e["outputs"] if o["name"] == alias][-1]
    champion = version(last)
    assert champion is not None
    return champion, trained_on(events, f"models:/{model}/{champion}")["partitions"]


def quarantined_days(events: list[dict[str, Any]]) -> set[str]:
    return {partition_date(o["name"]) for e in ended(events) if e["eventType"] == "FAIL" for o in e["outputs"]
            if "/quarantine/" in o["name"]}  # fmt: skip


def predictions_from_quarantined_days(events: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """Every predictions partition written, and those whose model was trained on a quarantined day."""
    bad_days = quarantined_days(events)
    written, tainted = [], []
    for event in ended(events):
        for out in (o for o in event["outputs"] if "/predictions/" in o["name"]):
            written.append(out["name"])
            models = [i["name"] for i in event["inputs"] if i["name"].startswith("models:/")]
            days = {partition_date(p["name"]) for m in models for p in trained_on(events, m)["partitions"]}
            if days & bad_days:
                tainted.append(out["name"])
    return written, tainted


# The run ------------------------------------------------------------------------------------------------------


def run_dags(steps: list[dict[str, Any]], events: Path, tmp_path: Path) -> dict[str, dict[str, Any]]:
    """The steps in a fresh process with OpenLineage configured (its listener is set up when plugins load)."""
    steps_file, out_file = tmp_path / "steps.json", tmp_path / "runs.json"
    steps_file.write_text(json.dumps(steps))
    ol_env = {
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps({"type": "file", "log_file_path": str(events), "append": True}),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "mlops-test",
        # A thread instead of a fork per event: the test process holds MLflow clients and their threads.
        "AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD": "True",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "tests.fixtures.dag_runs", str(steps_file), str(out_file)],
        cwd=ROOT,
        env={**os.environ, **ol_env},
        capture_output=True,
        text=True,
        timeout=800,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    return {f"{r['dag_id']}:{i}": r for i, r in enumerate(json.loads(out_file.read_text()))}


def test_openlineage_events_answer_what_serves_and_what_was_quarantined(
    airflow_db,
    env,  # noqa: F811
    lake_root,
    model_server_factory,
    tmp_path,
) -> None:
    from airflow_mlops.config import pipeline_by_name
    from airflow_mlops.core.demo import feed_day

    server, pipelines = env
    cfg = pipeline_by_name(PIPELINE)
    lake = open_lake(str(lake_root))
    for day in (QUARANTINED, LIVE):  # the upstream system delivers both days; one flights file is bad
        feed_day(lake, cfg, day)
    bad = landing_uri(lake, cfg, "flights", QUARANTINED)
    lake.write_bytes(bad, BAD_CASES["missing_column"](lake.read_bytes(bad)))
    model_server = model_server_factory(server.uri, lake_root, pipelines, "--poll-seconds", "0.5")

    events_file = tmp_path / "openlineage.jsonl"
    runs = list(
        run_dags(
            [
                {"kind": "ingest", "logical_date": QUARANTINED},
                {"kind": "ingest", "logical_date": LIVE},
                {"kind": "train", "logical_date": "2013-03-20", "conf": {"reason": "lineage test"}},
                {"kind": "deploy", "logical_date": None, "conf": {"version": "1", "reason": "lineage test"}},
                {"kind": "score", "logical_date": None, "conf": {"partition": LIVE}},
                {"kind": "monitor", "logical_date": None, "conf": {"date": LIVE}},
            ],
            events_file,
            tmp_path,
        ).values()
    )
    states = [(r["dag_id"], r["state"]) for r in runs]
    assert states == [
        (f"{PIPELINE}__ingest", "failed"),
        (f"{PIPELINE}__ingest", "success"),
        (f"{PIPELINE}__train", "success"),
        (f"{PIPELINE}__deploy", "success"),
        (f"{PIPELINE}__score", "success"),
        (f"{PIPELINE}__monitor", "success"),
    ], [r["tasks"] for r in runs]
    assert runs[0]["tasks"]["validate_flights"] == "failed"
    events = read_events(events_file)

    # Every step of the package says what it read; those that write, what they wrote.
    completed = {e["job"]["name"]: e for e in ended(events) if e["eventType"] == "COMPLETE"}
    for job in ("ingest.ingest_flights", "ingest.validate_weather", "ingest.build_features", "train.train",
                "train.evaluate", "train.register", "deploy.check_version", "deploy.promote", "deploy.smoke_test",
                "score.score", "monitor.monitor"):  # fmt: skip
        assert completed[f"{PIPELINE}__{job}"]["inputs"], job
    assert all(completed[f"{PIPELINE}__{job}"]["outputs"] for job in ("ingest.build_features", "train.register"))

    # 1. Which partitions fed the model serving now? Version 1, trained on the window without the quarantined day.
    served, partitions = partitions_serving_now(events, PIPELINE)
    assert served == "1" == str(model_server.served(PIPELINE)["version"])
    days = sorted(partition_date(p["name"]) for p in partitions)
    assert days == [d for d in day_range("2013-03-01", 20) if d != QUARANTINED]
    assert days == client(server).get_model_version(PIPELINE, "1").tags["mlops.partitions"].split(",")
    for p in partitions:  # each partition is named by its lake path, with the content hash it had when read
        assert p["namespace"] == "file" and p["name"] == str(
            lake_root / paths.features(PIPELINE, partition_date(p["name"]))
        )
        assert version(p) == frame_hash(lake.read_parquet(p["name"]))

    # 2. Which predictions came from a model trained on a quarantined day? None; the day was quarantined.
    assert quarantined_days(events) == {QUARANTINED}
    written, tainted = predictions_from_quarantined_days(events)
    assert written == [str(lake_root / paths.predictions(PIPELINE, LIVE))]
    assert tainted == []
    # and the chain is whole: the scored features are the partition (and the content) the ingest wrote
    score = completed[f"{PIPELINE}__score.score"]
    (built,) = [e for e in ended(events) if e["job"]["name"] == f"{PIPELINE}__ingest.build_features"]
    scored = [(i["name"], version(i)) for i in score["inputs"] if "/features/" in i["name"]]
    assert scored == [(o["name"], version(o)) for o in built["outputs"] if "/features/" in o["name"]] != []
    # flight_delays' labels land later: the build also wrote the labels that landed that day, and the model read
    # the landings of its window (a lineage backend can tell which outcomes a model learnt from)
    assert [o["name"] for o in built["outputs"] if "/labels/" in o["name"]] == [
        str(lake_root / paths.labels(PIPELINE, LIVE))
    ]
    learnt = [i for i in trained_on(events, f"models:/{PIPELINE}/1")["inputs"] if "/labels/" in i["name"]]
    assert learnt and all(version(i) for i in learnt)

    # The Assets carry the same facts: `<p>.model` from register, `<p>.champion` from promote.
    run_ids = {r["run_id"] for r in runs}
    (model,) = [e for e in asset_events(f"{PIPELINE}.model") if e.get("dag_run_id") in run_ids]
    assert model["version"] == "1" and model["promoted"] is True and model["partitions"] == days
    assert model["content_hash"] == client(server).get_model_version(PIPELINE, "1").tags["mlops.content_hash"]
    (champion,) = [e for e in asset_events(f"{PIPELINE}.champion") if e.get("dag_run_id") in run_ids]
    assert champion["version"] == "1" and champion["replaced"] is None and champion["partitions"] == days
    assert champion["content_hash"] == model["content_hash"] and champion["mlflow_run_id"] == model["mlflow_run_id"]
