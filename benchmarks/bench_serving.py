"""Benchmark: our model server against `mlflow models serve` on the same registered model, side by side.

Run from the repo root: `.venv/bin/python benchmarks/bench_serving.py [--seconds 10] [--clients 1 4]`.
Starts a real MLflow server, trains and registers one model (the demo config's estimator settings on synthetic
rows), starts both servers, and prints requests per second, p50 and p99 latency for single-row and 100-row
requests, of feature rows (every feature column, as the feature store holds them) and of base rows (the
model computes its derived features). `mlflow models serve` takes base rows only (the model's signature:
it drops the derived columns sent and computes them from inputs feature rows lack), so both forms of ours are
compared with its base-row figures. Targets (issue 4): at least 3x MLflow's single-row throughput, p99 at
most 20 ms. Figures only.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.fixtures: synthetic feature rows and the MLflow server process

TOKEN = "bench-token"
FORMS = ("feature", "base")  # the two forms of a request row (docs/serving.md)


def wait_http(port: int, path: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"server on port {port} not up after {timeout}s:\n{log.read_text(errors='replace')[-3000:]}")


def run_load(
    port: int, path: str, body: bytes, headers: dict[str, str], seconds: float, clients: int
) -> dict[str, Any]:
    """`clients` threads, each with one keep-alive connection, sending the same request for `seconds`."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = [0.0, 0.0]  # start, end: set by the barrier before any client passes it

    def start_clock() -> None:
        stop_at[0] = time.perf_counter()
        stop_at[1] = stop_at[0] + seconds

    ready = threading.Barrier(clients + 1, action=start_clock)

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: list[float] = []
        bad = 0
        for _ in range(20):  # warm-up, not measured
            conn.request("POST", path, body=body, headers=headers)
            conn.getresponse().read()
        ready.wait()  # the clock starts when every client is warm
        while time.perf_counter() < stop_at[1]:
            started = time.perf_counter()
            conn.request("POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            mine.append(time.perf_counter() - started)
            bad += resp.status != 200
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    ready.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - stop_at[0]
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, math.ceil(q * len(latencies)) - 1)] * 1000 if latencies else math.nan

    return {"requests": len(latencies), "rps": len(latencies) / elapsed, "p50": pct(0.50), "p99": pct(0.99),
            "errors": errors[0]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per case")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4], help="concurrent client connections")
    parser.add_argument("--max-iter", type=int, default=150, help="boosting iterations of the model")
    parser.add_argument("--forms", nargs="+", choices=FORMS, default=list(FORMS), help="row forms to send")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    import yaml
    from mlflow import MlflowClient

    from airflow_mlops.config.train import TrainConfig
    from airflow_mlops.core.lake.storage import open_lake
    from airflow_mlops.core.registry.tracking import CHAMPION, Tracking, client_rows, raw_rows
    from airflow_mlops.core.train import training as tr
    from tests.fixtures.mlflow_server import MlflowServer, free_port
    from tests.fixtures.training_data import (
        FLIGHTS_YAML,
        day_range,
        flight_config,
        synthetic_features,
        write_partitions,
    )

    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp_dir:
        tmp = Path(tmp_dir)
        print("starting an MLflow server ...", flush=True)
        mlflow_server = MlflowServer(tmp / "mlflow")
        mlflow_server.start()
        procs: list[subprocess.Popen[bytes]] = []
        try:
            cfg = flight_config()
            lake = open_lake(str(tmp / "lake"))
            write_partitions(lake, cfg, synthetic_features(cfg, day_range("2013-03-01", 30), rows_per_day=300))
            raw_cfg = yaml.safe_load(FLIGHTS_YAML.read_text(encoding="utf-8"))
            model_params = {**raw_cfg["train"]["model"]["params"], "max_iter": args.max_iter}
            train = TrainConfig.model_validate(
                {"window_days": 30, "validation_days": 3, "holdout_days": 3, "min_rows": 100,
                 "model": {"params": model_params, "categorical": "native"}}
            )  # fmt: skip
            data = tr.load_window(lake, cfg, "2013-03-30", 30, min_rows=100)
            split = tr.split_by_time(data.frame, train.validation_days, train.holdout_days)
            spec = tr.feature_spec(cfg, data.frame)
            model = tr.fit(split, train, spec).model
            name = f"bench_{uuid.uuid4().hex[:6]}"
            tracking = Tracking(mlflow_server.uri)
            client: MlflowClient = tracking.client
            client.create_registered_model(name)
            run_id = client.create_run(tracking.get_or_create_experiment(name)).info.run_id
            info = tracking.log_model(run_id, model, spec, split.holdout)
            # The tag the train DAG gives a version that passed its gates: the server serves no other champion.
            client.create_model_version(
                name, source=info.model_uri, run_id=run_id, model_id=info.model_id, tags={"mlops.gate_passed": "true"}
            )
            client.set_registered_model_alias(name, CHAMPION, "1")
            print(f"registered {name} v1 ({args.max_iter} iterations)", flush=True)

            pipelines = tmp / "pipelines"
            pipelines.mkdir()
            raw_cfg["train"]["registered_model_name"] = name
            (pipelines / "flight_delays.yaml").write_text(yaml.safe_dump(raw_cfg), encoding="utf-8")
            env = {
                **os.environ,
                # mlflow models serve runs `uvicorn` from PATH and resolves models:/ through the registry URI.
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                "MLFLOW_TRACKING_URI": mlflow_server.uri,
                "MLFLOW_REGISTRY_URI": mlflow_server.uri,
                "MLOPS_MODEL_SERVER_TOKEN": TOKEN,
                "MLOPS_LAKE_ROOT": str(tmp / "lake"),
                "MLOPS_PIPELINES_DIR": str(pipelines),
            }
            ours_port, theirs_port = free_port(), free_port()
            ours_log, theirs_log = tmp / "ours.log", tmp / "mlflow-serve.log"
            with open(ours_log, "wb") as out:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "airflow_mlops.serving", "--port", str(ours_port), "--log-level", "warning"],
                    stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                ))  # fmt: skip
            with open(theirs_log, "wb") as out:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{name}/1", "--env-manager",
                     "local", "--host", "127.0.0.1", "-p", str(theirs_port), "--workers", "1"],
                    stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                ))  # fmt: skip
            wait_http(ours_port, "/health", procs[0], ours_log)
            wait_http(theirs_port, "/ping", procs[1], theirs_log)
            conn = http.client.HTTPConnection("127.0.0.1", ours_port, timeout=30)
            conn.request("GET", "/version", headers={"Authorization": f"Bearer {TOKEN}"})
            served = json.loads(conn.getresponse().read())["pipelines"]["flight_delays"]
            print(f"ours serves v{served['version']} by {served['scoring']}", flush=True)

            # The synthetic feature rows' plane_age is 2013 - plane_year: their base rows say year 2013.
            holdout = split.holdout.head(100).assign(year=2013)
            rows = {
                form: [
                    {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()}
                    for r in (raw_rows if form == "feature" else client_rows)(holdout, spec).to_dict("records")
                ]
                for form in args.forms
            }
            results = []
            for form in args.forms:
                for batch in (1, 100):
                    sample = rows[form][:batch]
                    cases = [
                        ("ours", ours_port, "/predict/flight_delays", json.dumps({"rows": sample}).encode(),
                         {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}),
                    ]  # fmt: skip
                    if form == "base":  # the only rows mlflow's server scores (every feature-row request fails)
                        cases.append(("mlflow models serve", theirs_port, "/invocations",
                                      json.dumps({"dataframe_records": sample}).encode(),
                                      {"Content-Type": "application/json"}))  # fmt: skip
                    for clients in args.clients:
                        for label, port, path, body, headers in cases:
                            res = run_load(port, path, body, headers, args.seconds, clients)
                            results.append((label, form, batch, clients, res))
                            print(f"  {label:<20} {form:<7} rows={batch:<4} clients={clients}  {res['rps']:8.1f} "
                                  f"req/s  p50 {res['p50']:7.2f} ms  p99 {res['p99']:7.2f} ms  "
                                  f"({res['requests']} requests, {res['errors']} errors)", flush=True)  # fmt: skip
            by = {(label, f, b, c): r for label, f, b, c, r in results}
            if "base" not in args.forms:
                return  # no mlflow figures to compare with
            print("\nratio ours / mlflow models serve on base rows (req/s):")
            for form in args.forms:
                for batch in (1, 100):
                    for clients in args.clients:
                        ours = by[("ours", form, batch, clients)]
                        theirs = by[("mlflow models serve", "base", batch, clients)]
                        print(
                            f"  ours {form:<7} rows={batch:<4} clients={clients}  {ours['rps'] / theirs['rps']:5.1f}x"
                        )
            print("\ntargets (issue 4), single row: >= 3x mlflow req/s, p99 <= 20 ms:")
            for form in args.forms:
                for clients in args.clients:
                    ours = by[("ours", form, 1, clients)]
                    ratio = ours["rps"] / by[("mlflow models serve", "base", 1, clients)]["rps"]
                    verdict = "met" if ratio >= 3 and ours["p99"] <= 20 else "MISSED"
                    print(f"  {form:<7} clients={clients}  {ratio:5.1f}x  p99 {ours['p99']:6.2f} ms  {verdict}")
        finally:
            for proc in procs:  # each in its own session: mlflow's serve spawns worker processes
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
            mlflow_server.stop()


if __name__ == "__main__":
    main()
