"""The inference log: unwritable rows block nothing, a bounded buffer, and what SIGTERM and SIGKILL leave behind."""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests

from airflow_mlops.core.lake.storage import open_lake
from airflow_mlops.serving.inference_log import BUFFER_FULL, INFERENCE_ZONE, UNWRITABLE, InferenceLog
from tests.fixtures.model_server import AUTH, ModelServerProcess
from tests.fixtures.served_models import MAX_ROWS, PIPELINE, Setup, json_rows

FLUSH_SECONDS = 1.0


class Model:
    name = "m"
    version = "1"
    columns = ("carrier", "distance")


def logged_rows(lake_root: Path) -> pd.DataFrame:
    lake = open_lake(str(lake_root))
    files = [f for f in lake.list(lake.zone_uri(INFERENCE_ZONE, PIPELINE)) if f.endswith(".parquet")]
    frames = [lake.read_parquet(f) for f in files]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["request_id", "row"])


def test_rows_parquet_cannot_hold_are_dropped_and_counted_the_others_written(tmp_path: Path) -> None:
    lake = open_lake(str(tmp_path / "lake"))
    log = InferenceLog(lake, flush_rows=1000)
    at = datetime.now(UTC)
    good = [{"carrier": f"C{i}", "distance": i} for i in range(9)]
    # Past the request checks (a bug, or a check missing): a lone surrogate cannot be written as UTF-8.
    rows = [*good[:4], {"carrier": "\ud800", "distance": 1}, *good[4:]]
    log.add("p", Model(), "req", at, rows, np.linspace(0, 1, len(rows)))
    assert len(log.flush()) == 1
    assert log.dropped == {("p", UNWRITABLE): 1} and log.rows_written == {"p": 9} and log.buffered == 0
    assert log.flush() == []  # nothing is retried: the bad row blocks no later flush
    log.add("p", Model(), "req2", at, good[:2], np.zeros(2))
    assert len(log.flush()) == 1 and log.rows_written == {"p": 11}
    files = lake.list(lake.zone_uri(INFERENCE_ZONE, "p"))
    written = pd.concat([lake.read_parquet(f) for f in files])
    assert sorted(written["carrier"]) == sorted([f"C{i}" for i in range(9)] + ["C0", "C1"])


def test_the_buffer_is_bounded_while_writes_fail(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the lake's folders would go")
    log = InferenceLog(open_lake(str(blocker / "lake")), flush_rows=1000, max_buffer_rows=20)
    at = datetime.now(UTC)
    rows = [{"carrier": "AA", "distance": 1}] * 15
    with caplog.at_level(logging.ERROR, logger="airflow_mlops.serving"):
        log.add("p", Model(), "r1", at, rows, np.zeros(15))
        assert log.flush() == [] and log.errors == 1 and log.buffered == 15  # kept for a retry
        log.add("p", Model(), "r2", at, rows, np.zeros(15))
    assert log.buffered == 20 and log.dropped == {("p", BUFFER_FULL): 10}
    assert "dropped 10 row(s) (buffer_full)" in caplog.text


def test_a_server_whose_lake_fails_bounds_its_buffer_and_counts_the_dropped_rows(
    setup: Setup, mlflow_server: str, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the lake's folders would go")
    proc = ModelServerProcess(
        mlflow_server, tmp_path / "lake", setup.pipelines_dir, "--max-rows", str(MAX_ROWS),
        "--lake-root", str(blocker / "lake"), "--flush-seconds", "0.3", "--max-buffer-rows", "20",
    )  # fmt: skip
    try:
        rows = json_rows(setup.holdout.head(10), setup.spec)
        for _ in range(4):
            assert proc.predict_rows(PIPELINE, rows).status_code == 200  # serving goes on
        # A flush that holds the taken rows while its write fails puts them back (dropping what no longer fits)
        # after the requests were answered: wait for a state between flushes, where every row is counted.
        pattern = rf'^mlops_inference_log_dropped_rows_total{{pipeline="{PIPELINE}",reason="buffer_full"}} (\d+)$'
        deadline, counts, text = time.monotonic() + 60, (0, 0), ""
        while time.monotonic() < deadline:
            text = requests.get(f"{proc.url}/metrics", timeout=10).text
            dropped = re.findall(pattern, text, re.MULTILINE)
            (buffered,) = re.findall(r"^mlops_inference_log_buffered_rows (\d+)$", text, re.MULTILINE)
            counts = (int(dropped[0]) if dropped else 0, int(buffered))
            if sum(counts) == 40:
                break
            time.sleep(0.05)
        assert counts[0] >= 20 and counts[1] <= 20 and sum(counts) == 40, text
        assert re.search(r"ERROR airflow_mlops.serving: inference log of \w+: dropped \d+ row", proc.log_tail())
    finally:
        proc.stop()


class Load:
    """Clients sending batches with unique request ids; records when each was answered 200, and its rows."""

    def __init__(self, proc: ModelServerProcess, rows: list[dict[str, Any]], clients: int = 2) -> None:
        self.proc, self.rows = proc, rows
        self.accepted: list[tuple[float, str, int]] = []  # (answered at, request id, rows)
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._client, args=(i,)) for i in range(clients)]
        for thread in self.threads:
            thread.start()

    def _client(self, i: int) -> None:
        n = 0
        with requests.Session() as session:
            while not self.stop.is_set():
                n += 1
                rid = f"c{i}-{n}-{uuid.uuid4().hex[:6]}"
                batch = self.rows[: 1 + n % len(self.rows)]
                try:
                    resp = session.post(f"{self.proc.url}/predict/{PIPELINE}", json={"rows": batch},
                                        headers={**AUTH, "X-Request-ID": rid}, timeout=30)  # fmt: skip
                except requests.RequestException:
                    time.sleep(0.05)  # the server is going away
                    continue
                if resp.status_code == 200:
                    self.accepted.append((time.monotonic(), rid, len(batch)))

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)


def test_after_sigterm_every_accepted_row_is_in_the_log(setup: Setup, mlflow_server: str, tmp_path: Path) -> None:
    lake_root = tmp_path / "lake"
    proc = ModelServerProcess(mlflow_server, lake_root, setup.pipelines_dir, "--max-rows", str(MAX_ROWS),
                              "--flush-seconds", "3600", "--flush-rows", "1000000")  # fmt: skip
    load = Load(proc, json_rows(setup.holdout.head(20), setup.spec))
    try:
        time.sleep(3)
        proc.proc.send_signal(signal.SIGTERM)  # under load: requests in flight, rows in the buffer
        assert proc.proc.wait(timeout=90) in (0, -signal.SIGTERM), proc.log_tail()
    finally:
        load.join()
        proc.stop()
    assert len(load.accepted) > 10
    logged = logged_rows(lake_root)
    counts = logged.groupby("request_id").size().to_dict()
    missing = [(rid, n, counts.get(rid, 0)) for _, rid, n in load.accepted if counts.get(rid, 0) != n]
    assert not missing, missing[:5]
    assert len(logged) == sum(n for _, _, n in load.accepted)


def test_after_sigkill_the_loss_is_bounded_by_the_flush_interval(
    setup: Setup, mlflow_server: str, tmp_path: Path
) -> None:
    lake_root = tmp_path / "lake"
    proc = ModelServerProcess(mlflow_server, lake_root, setup.pipelines_dir, "--max-rows", str(MAX_ROWS),
                              "--flush-seconds", str(FLUSH_SECONDS), "--flush-rows", "1000000")  # fmt: skip
    load = Load(proc, json_rows(setup.holdout.head(20), setup.spec))
    try:
        time.sleep(4)
        # Taken before the request: a batch answered while /metrics was on its way back was added after the
        # gauge was read, and its answer time may still come before the scrape's.
        scraped = time.monotonic()
        metrics = requests.get(f"{proc.url}/metrics", timeout=10).text
        time.sleep(0.5)
        os.kill(proc.proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        proc.proc.wait(timeout=60)
    finally:
        load.join()
        proc.stop()
    assert f"mlops_inference_log_flush_interval_seconds {FLUSH_SECONDS}" in metrics
    (at_risk,) = re.findall(r"^mlops_inference_log_buffered_rows (\d+)$", metrics, re.MULTILINE)
    counts = logged_rows(lake_root).groupby("request_id").size().to_dict()
    lost = [(at, rid, n) for at, rid, n in load.accepted if counts.get(rid, 0) != n]
    assert len(load.accepted) > 10 and len(lost) < len(load.accepted)
    # Lost: at most the rows in memory when /metrics was read plus those accepted since; all were
    # accepted within a flush interval (plus a write's time on a busy machine) before the kill.
    after_scrape = sum(n for at, _, n in load.accepted if at >= scraped)
    assert sum(n for _, _, n in lost) <= int(at_risk) + after_scrape
    assert all(at > killed - FLUSH_SECONDS - 3.0 for at, _, _ in lost), (killed, lost[:3])
