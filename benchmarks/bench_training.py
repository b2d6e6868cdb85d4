"""Benchmark: train on all of 2013 (real flights), printing seconds and peak memory per step.

Run from the repo root: `.venv/bin/python benchmarks/bench_training.py [--search] [--max-iter N]`.
Targets (issue 3): fit at most 60 s and 4 GiB on this machine. Figures only, no asserts.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.fixtures: the real-data feature builder and the MLflow server

T = TypeVar("T")
ROWS: list[tuple[str, float, float, str]] = []


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux: write 5 to clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def step(name: str, fn: Callable[[], T], note: Callable[[T], str] = lambda _: "") -> T:
    """Run one step; record wall seconds and the process's peak RSS during it."""
    reset = _reset_peak()
    started = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - started
    peak = _peak_rss_mib()
    ROWS.append((name, seconds, peak, note(result) + ("" if reset else " (peak since process start)")))
    print(f"  {name:<22} {seconds:8.2f} s  peak RSS {peak:8.0f} MiB  {ROWS[-1][3]}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--search", action="store_true", help="also run the config's small random search")
    parser.add_argument("--max-iter", type=int, default=150, help="boosting iterations (proposed config: 150)")
    parser.add_argument("--threads", type=int, default=1, help="train.model.threads (0: all cores; config default 1)")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    import yaml

    from airflow_mlops.config.train import TrainConfig
    from airflow_mlops.core.lake.storage import open_lake
    from airflow_mlops.core.registry.tracking import Lineage, RunTags, Tracking
    from airflow_mlops.core.train import card as cards
    from airflow_mlops.core.train import evaluation as evals
    from airflow_mlops.core.train import training as tr
    from tests.airflow_mlops.test_config_training import FLIGHT_DELAYS_TRAIN
    from tests.fixtures.mlflow_server import MlflowServer
    from tests.fixtures.training_data import build_features, flight_config, write_partitions

    raw = yaml.safe_load(FLIGHT_DELAYS_TRAIN)
    raw.update({"window_days": 365, "validation_days": 14, "holdout_days": 14, "min_rows": 100_000})
    raw["model"]["params"]["max_iter"] = args.max_iter
    raw["model"]["threads"] = args.threads or None
    if not args.search:
        raw.pop("search")
    train = TrainConfig.model_validate(raw)
    cfg = flight_config()
    print(f"cpus: {os.cpu_count()}, threads: {train.model.threads or 'all'}, load average: {os.getloadavg()[0]:.1f}")
    print(f"model params: {train.model.params}, search: {bool(train.search)}")

    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        server = MlflowServer(Path(tmp, "mlflow"))
        server.start(wait=False)  # boots while the features are built
        lake = open_lake(str(Path(tmp, "lake")))
        print("preparing (not a training step):")
        step(
            "build + write features",
            lambda: write_partitions(lake, cfg, build_features(cfg)),
            lambda days: f"{len(days)} daily partitions of real 2013 flights",
        )
        server.wait_healthy()
        tracking = Tracking(server.uri)

        print("training steps:")
        data = step(
            "load window",
            lambda: tr.load_window(lake, cfg, "2013-12-31", train.window_days, min_rows=train.min_rows),
            lambda d: f"{len(d.frame)} labelled rows, {len(d.partitions)} partitions",
        )
        split = step(
            "split",
            lambda: tr.split_by_time(data.frame, train.validation_days, train.holdout_days),
            lambda s: f"train {len(s.train)} / validation {len(s.validation)} / holdout {len(s.holdout)} rows",
        )
        spec = tr.feature_spec(cfg, data.frame)
        fitted = step(
            "fit",
            lambda: tr.fit(split, train, spec),
            lambda f: f"{len(f.candidates)} candidate(s), refit on {f.train_rows} rows",
        )
        challenger = step(
            "evaluate",
            lambda: evals.evaluate(fitted.model, split.holdout, train, spec),
            lambda e: f"roc_auc {e.primary:.4f}, max slice disparity {e.max_disparity:.3f}",
        )
        importance = step(
            "importance + plots",
            lambda: cards.evaluation_plots(
                challenger,
                None,
                evals.feature_importance(
                    fitted.model, split.holdout, spec, train.metric.primary, train.seed, threads=train.model.threads
                ),
                train.metric.threshold,
            ),
            lambda p: f"{len(p)} PNGs",
        )
        decision = evals.decide(challenger, None, train.gates)

        def log_and_register() -> Any:
            tags = RunTags("flight_delays__train", "bench__2013-12-31", "2013-12-31", "train")
            run_id = tracking.start_or_resume_run("flight_delays", tags)
            tracking.log_training_data(run_id, data, spec)
            tracking.log_fit(run_id, fitted, split.summary(), train.model.estimator)
            logged = tracking.log_model(run_id, fitted.model, spec, split.holdout)
            tracking.log_evaluation(run_id, challenger, "holdout")
            tracking.log_decision(run_id, decision)
            tracking.log_files(run_id, importance, "plots")
            card = cards.model_card(
                model_name="flight_delays",
                version=None,
                data=data.summary,
                split=split.summary(),
                estimator=train.model.estimator,
                params=fitted.params,
                challenger=challenger,
                champion=None,
                champion_version=None,
                decision=decision,
                airflow_run_url=None,
                mlflow_run_url=tracking.run_url(run_id),
            )
            tracking.log_files(run_id, {"model_card.md": card})
            lineage = Lineage("flight_delays", tags.dag_id, tags.run_id, tags.logical_date, run_id, data.summary)
            version = tracking.register("flight_delays", logged, decision, card, lineage)
            tracking.end_run(run_id)
            return version

        step("log + register", log_and_register, lambda v: f"version {v.version}, aliases {v.aliases}")
        server.stop()

    print("\nsummary (fit target: <= 60 s and <= 4096 MiB):")
    print(f"{'step':<22} {'seconds':>8} {'peak MiB':>9}")
    for name, seconds, peak, _ in ROWS:
        print(f"{name:<22} {seconds:8.2f} {peak:9.0f}")
    print(f"decision: {decision.outcome} ({decision.reason}); load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
