"""Benchmark: the value of the monitor-triggered retrain loop on months of replayed data, against never and daily.

Run from the repo root: `.venv/bin/python benchmarks/bench_value.py [--pipeline flight_delays] [--start 2013-01-01]
[--end 2013-06-30] [--warmup-days 45] [--cache DIR] [--search] [--every 7] [--variant LABEL:KEY=VALUE,...]
[--split 2013-04-01] [--plot PATH] [--verbose]`.

The days of a shipped pipeline (--pipeline: flight_delays, or nyc_weather, any train.task) are landed with the
demo feeder and ingested (GX validation included) into a local lake (a temp folder, or --cache to keep it for
reruns). One model is trained on the warm-up days; then every later day is replayed in one process, no Airflow,
no MLflow, by each strategy:
  never   the first model scores every day;
  daily   each day a new model, trained on the window ending the day before, scores the day;
  monitor each day the champion scores the day (written to predictions/ as the score DAG does), then the
          monitor's own checks run on the lake (core.monitor.run_checks: drift of the window's inputs against
          the champion's reference sample, quality on matured labels against the champion's holdout figure,
          cool-down); a retrain it asks for trains on the window ending that day and, if the train DAG's gates
          pass against the champion, serves from the next day. Cool-down days cannot retrain whatever the checks
          say, so they are not checked (--check-cooldown-days to check them too: same models, fuller log).
Models are trained with training.fit on cfg.train (no search unless --search); windows never reach before
--start; each is checked against train.task (check_model) and scores as the score DAG does (model_scores /
predict_frame of core.train.tasks). Quality in production: the primary metric (train.metric.primary, compared in
its better direction) of each day's labelled rows as scored by the model in production that day, pooled per ISO
week; --split also reports the weeks before and from a day apart (settings chosen on the first span, judged on
the second), --plot draws the weeks. For a monitor loop, "alarms -> promoted share" is the share of the retrains
its alarms asked for that passed the gates: a retrain no better than the champion counts against the alarm.
Extra columns (--every, --variant) are labelled as such. With --cache, finished strategies are kept under
DIR/bench_value_runs and reused by an identical rerun (delete that folder after changing core code). Figures only,
no asserts; the thresholds are the config's unless a --variant says otherwise.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import os
import pickle
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from airflow_mlops.config import PipelineConfig
    from airflow_mlops.config.train import TrainConfig
    from airflow_mlops.core.ingest.labels import LabelSet
    from airflow_mlops.core.lake.storage import Lake

PIPELINE = "flight_delays"


# Data --------------------------------------------------------------------------------------------------------


@dataclass
class Day:
    """One day's feature rows, as the score DAG reads them, and the labels learnt afterwards."""

    ds: str
    features: pd.DataFrame
    labelled: np.ndarray
    """Mask of the rows whose label is known (cancelled flights never get one)."""
    y: np.ndarray
    """The known labels as the task trains on them (core.train.tasks.label_values)."""


def build_lake(lake: Lake, cfg: PipelineConfig, days: Sequence[str]) -> tuple[list[str], list[str], float]:
    """Land and ingest the days whose features partition is missing; (ingested, rejected, seconds)."""
    from airflow_mlops.core import demo
    from airflow_mlops.core.ingest.steps import BatchRejected, ingest_day
    from airflow_mlops.core.lake import paths

    todo = [ds for ds in days if not lake.exists(lake.uri(paths.features(cfg.name, ds)))]
    rejected: list[str] = []
    started = time.perf_counter()
    if todo:
        demo.feed_range(lake, cfg, todo[0], todo[-1])
        for n, ds in enumerate(todo, 1):
            try:
                ingest_day(lake, cfg, ds, {"dag_id": "bench_value", "run_id": "replay"})
            except BatchRejected as exc:  # the DAG would fail that day; production goes on without it
                rejected.append(ds)
                print(f"  {ds}: batch rejected: {str(exc).splitlines()[0]}", flush=True)
            if n % 30 == 0:
                print(f"  ingested {n}/{len(todo)} days ({time.perf_counter() - started:.0f} s)", flush=True)
    return todo, rejected, time.perf_counter() - started


def load_day(lake: Lake, cfg: PipelineConfig, ds: str, labels: LabelSet | None = None) -> Day | None:
    """The day's features; with a label source of its own, labelled by every outcome that landed (`labels`)."""
    from airflow_mlops.core.ingest.labels import attach_labels
    from airflow_mlops.core.lake import paths
    from airflow_mlops.core.train.tasks import label_values

    uri = lake.uri(paths.features(cfg.name, ds))
    if not lake.exists(uri):
        return None
    features = lake.read_parquet(uri)
    if labels is not None:
        features = attach_labels(features, labels, cfg)
    name = cfg.features.label.name
    label = features[name]
    labelled = label.notna().to_numpy()
    return Day(ds, features, labelled, label_values(label[labelled], cfg.train.task, name, uri).to_numpy())


# Models ------------------------------------------------------------------------------------------------------


@dataclass
class Model:
    """A trained model and what its training run records for the monitor."""

    version: str
    end_ds: str
    model: Any
    baselines: dict[str, float]
    reference: pd.DataFrame | None
    seconds: float
    importance: dict[str, float] = field(default_factory=dict)
    estimated: dict[str, float] = field(default_factory=dict)


@dataclass
class Trainer:
    """Trains on the window ending on a day, never reaching before the replay's first day."""

    lake: Lake
    cfg: PipelineConfig
    train_cfg: TrainConfig
    first_day: str
    fits: int = 0
    seconds: float = 0.0

    def window(self, end_ds: str) -> Any:
        from airflow_mlops.core.train import training as tr

        span = (date.fromisoformat(end_ds) - date.fromisoformat(self.first_day)).days + 1
        days = min(self.train_cfg.window_days, span)
        data = tr.load_window(self.lake, self.cfg, end_ds, days, min_rows=self.train_cfg.min_rows)
        split = tr.split_by_time(data.frame, self.train_cfg.validation_days, self.train_cfg.holdout_days)
        return split, tr.feature_spec(self.cfg, data.frame)

    def train(self, end_ds: str, version: str, monitored: bool) -> Model:
        """What train_step computes: the fit; for a model the monitor watches, also what the training run records
        for it: the holdout metrics (evaluate_step's, the quality baseline), the reference sample, the columns'
        permutation importance and the holdout estimate of the metrics (evaluate_step's)."""
        from airflow_mlops.core.monitor.current import reference_sample
        from airflow_mlops.core.monitor.estimate import ESTIMATED_PREFIX, holdout_estimates
        from airflow_mlops.core.train import evaluation as evals
        from airflow_mlops.core.train import training as tr
        from airflow_mlops.core.train.tasks import check_model

        started = time.perf_counter()
        split, spec = self.window(end_ds)
        fit = tr.fit(split, self.train_cfg, spec)
        check_model(fit.model, self.train_cfg.task)  # what the score DAG checks before scoring with it
        baselines: dict[str, float] = {}
        ref = None
        importance: dict[str, float] = {}
        estimated: dict[str, float] = {}
        if monitored:  # never/daily/every-N models are not monitored: their holdout figures are not needed
            holdout = evals.evaluate(fit.model, split.holdout, self.train_cfg, spec)
            baselines = {k: v for k, v in holdout.metrics.items() if not math.isnan(v)}
            ref = reference_sample(split, self.cfg, spec, fit.model)
            train = self.train_cfg
            importance = evals.feature_importance(
                fit.model, split.holdout, spec, train.metric.primary, seed=train.seed, threads=train.model.threads,
                task=train.task,
            )  # fmt: skip
            found = holdout_estimates(fit.model, split.holdout, spec.columns, self.cfg)
            estimated = {k[len(ESTIMATED_PREFIX) :]: v for k, v in found.items()}
        seconds = time.perf_counter() - started
        self.fits += 1
        self.seconds += seconds
        return Model(version, end_ds, fit.model, baselines, ref, seconds, importance, estimated)

    def gates(self, challenger: Model, champion: Model) -> Any:
        """The train DAG's gates: the challenger against the champion on the challenger's holdout."""
        from airflow_mlops.core.train import evaluation as evals

        split, spec = self.window(challenger.end_ds)
        ch = evals.evaluate(challenger.model, split.holdout, self.train_cfg, spec)
        cp = evals.evaluate(champion.model, split.holdout, self.train_cfg, spec, name=f"champion v{champion.version}")
        return evals.decide(ch, cp, self.train_cfg.gates)


def score(cfg: PipelineConfig, model: Model, day: Day) -> tuple[np.ndarray, list[Any]]:
    """What the task's metrics take (model_scores: P(1), class probabilities or values) and the model's classes."""
    from airflow_mlops.core.train import training as tr
    from airflow_mlops.core.train.tasks import model_classes, model_scores

    spec = tr.feature_spec(cfg, day.features)
    with tr.thread_limit(cfg.train.model.threads):
        return model_scores(model.model, day.features[spec.columns], cfg.train.task), model_classes(model.model)


def predict(cfg: PipelineConfig, model: Model, day: Day) -> tuple[pd.DataFrame, np.ndarray, list[Any]]:
    """The score DAG's prediction columns for the day (predict_frame), and `score`'s figures read back from them."""
    from airflow_mlops.core.train import training as tr
    from airflow_mlops.core.train.tasks import frame_scores, model_classes, predict_frame

    spec = tr.feature_spec(cfg, day.features)
    with tr.thread_limit(cfg.train.model.threads):
        predicted = predict_frame(model.model, day.features[spec.columns], cfg.train.task)
    scores, _ = frame_scores(predicted, cfg.train.task)
    return predicted, scores, model_classes(model.model)


# Strategies --------------------------------------------------------------------------------------------------


@dataclass
class Run:
    """One strategy's replay: per day the scores of the model in production and the retrains so far."""

    label: str
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    classes: dict[str, list[Any]] = field(default_factory=dict)
    """multiclass: the classes of each day's score columns (models of different windows may know different ones);
    read for multiclass only, so runs cached before this field existed still load for the other tasks."""
    retrains: dict[str, int] = field(default_factory=dict)
    """Models trained after the first one, counted up to and including each day (a retrain on a day
    serves from the next day)."""
    promoted: int = 0
    promoted_days: list[str] = field(default_factory=list)
    """The monitor loop: days whose retrain passed the gates (deployed from the next day)."""
    alarm_days: dict[str, list[str]] = field(default_factory=dict)
    """The monitor loop: checked days with an alarm, and which."""
    events: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def run_fixed(label: str, every: int, trainer: Trainer, first: Model, days: Sequence[Day]) -> Run:
    """Retrain every `every` days (0: never) on the window ending the day before; no gates."""
    run = Run(label)
    model, count, fit_s, score_s = first, 0, 0.0, 0.0
    for i, day in enumerate(days):
        if every and i and i % every == 0:
            prev = (date.fromisoformat(day.ds) - timedelta(days=1)).isoformat()
            model = trainer.train(prev, str(count + 2), monitored=False)
            fit_s += model.seconds
            count += 1
        started = time.perf_counter()
        run.scores[day.ds], run.classes[day.ds] = score(trainer.cfg, model, day)
        score_s += time.perf_counter() - started
        run.retrains[day.ds] = count
    run.promoted = count
    run.seconds = {"fit": fit_s, "score": score_s}
    return run


@dataclass
class Checked:
    """The monitor's verdict on one day and the figures behind it."""

    decision: Any
    drift: Any
    quality: Any
    how: str
    estimated: Any = None


def monitor_day(
    lake: Lake, cfg: PipelineConfig, ds: str, champion: Any, previous: Sequence[tuple[str, str]]
) -> Checked:
    """The monitor step's checks and decision for one day, without MLflow (run_checks takes the champion and
    the earlier retrains as arguments). Without drift among retrain.triggers a drift result cannot change the
    retrain decision, so that case skips Evidently (the costly part) and assembles the same decision from the
    pure parts: load_current, assess_quality, cooldown_blocker, decide."""
    from airflow_mlops.core.monitor.current import load_current
    from airflow_mlops.core.monitor.decision import cooldown_blocker, decide
    from airflow_mlops.core.monitor.drift import InsufficientData
    from airflow_mlops.core.monitor.monitor import champion_age, run_checks
    from airflow_mlops.core.monitor.quality import assess_quality

    mon = cfg.monitor
    if ("drift" in mon.retrain.triggers and mon.drift.alarm) or mon.estimated_quality.enabled:
        checks = run_checks(lake, cfg, ds, champion, previous)
        return Checked(checks.decision, checks.drift, checks.quality, "run_checks", checks.estimated)
    current = load_current(lake, cfg, ds, [], [], champion.version)
    insufficient: dict[str, str] = {}
    quality = None
    try:
        quality = assess_quality(current.quality, cfg, champion.baselines, champion.version, current.matured_days)
    except InsufficientData as exc:
        insufficient["quality"] = str(exc)
    blocker = cooldown_blocker(ds, previous, mon.retrain.cooldown_days)
    age = champion_age(cfg, ds, champion, [])
    decision = decide(cfg, None, quality, insufficient, blocker=blocker, train_active=False, age=age)
    return Checked(decision, None, quality, "quality only")


def run_monitor(
    label: str,
    cfg: PipelineConfig,
    trainer: Trainer,
    first: Model,
    days: Sequence[Day],
    gates: bool,
    check_cooldown_days: bool,
) -> Run:
    """The monitor-triggered loop, each day: score with the champion, monitor, maybe retrain and deploy.

    During a cool-down the decision cannot be a retrain whatever the checks find, so those days are not
    checked unless `check_cooldown_days` (their outcome then shows in the log; the models are the same).
    """
    from airflow_mlops.core.lake import paths
    from airflow_mlops.core.monitor.decision import cooldown_blocker
    from airflow_mlops.core.monitor.monitor import Champion

    lake = trainer.lake
    name = cfg.train.model_name(cfg.name)
    run = Run(label)
    # Predictions of an earlier replay (another strategy or run) must not reach this one's monitor.
    for ds in _dates(trainer.first_day, days[-1].ds):
        lake.delete(lake.uri(paths.predictions(cfg.name, ds)))
    champion, versions, count = first, 1, 0
    previous: list[tuple[str, str]] = []
    seconds = {"score": 0.0, "monitor": 0.0, "fit": 0.0, "gates": 0.0}
    checked_days = 0
    for day in days:
        started = time.perf_counter()
        predicted, scores, classes = predict(cfg, champion, day)
        out = day.features[["ds", *cfg.features.key, cfg.features.timestamp]].copy()
        for col in predicted.columns:  # prediction, and the class probabilities of a multiclass model
            out[col] = predicted[col].to_numpy()
        out["model_name"] = name
        out["model_version"] = champion.version
        lake.write_parquet(lake.uri(paths.predictions(cfg.name, day.ds)), out)
        run.scores[day.ds], run.classes[day.ds] = scores, classes
        seconds["score"] += time.perf_counter() - started

        run.retrains[day.ds] = count
        blocker = cooldown_blocker(day.ds, previous, cfg.monitor.retrain.cooldown_days)
        if blocker is not None and not check_cooldown_days:
            run.outcomes["cool-down, not checked"] = run.outcomes.get("cool-down, not checked", 0) + 1
            continue
        started = time.perf_counter()
        current = Champion(
            name, champion.version, None, champion.reference, champion.baselines, champion.importance,
            champion.estimated, champion.end_ds,
        )  # fmt: skip
        checked = monitor_day(lake, cfg, day.ds, current, previous)
        seconds["monitor"] += time.perf_counter() - started
        checked_days += 1
        decision = checked.decision
        run.outcomes[decision.outcome] = run.outcomes.get(decision.outcome, 0) + 1
        run.log.append(f"{day.ds} v{champion.version}: {decision.outcome}, {_figures(checked)}")
        if decision.alarms:
            run.alarm_days[day.ds] = list(decision.alarms)
        if decision.retrain:
            previous.append((day.ds, f"replay-{day.ds}"))
            versions += 1
            challenger = trainer.train(day.ds, str(versions), monitored=True)
            seconds["fit"] += challenger.seconds
            count += 1
            verdict = "deployed"
            if gates:
                started = time.perf_counter()
                gate = trainer.gates(challenger, champion)
                seconds["gates"] += time.perf_counter() - started
                if not gate.promote:
                    verdict = f"NOT deployed ({gate.reason})"
            if verdict == "deployed":
                champion = challenger
                run.promoted += 1
                run.promoted_days.append(day.ds)
            run.events.append(
                f"{day.ds} v{challenger.version} {verdict}; {_figures(checked)}; alarms {','.join(decision.alarms)}"
            )
        run.retrains[day.ds] = count
    run.outcomes["days checked"] = checked_days
    run.seconds = seconds
    return run


def _figures(checked: Checked) -> str:
    parts = []
    if checked.drift is not None:
        d = checked.drift
        crit = f", critical {','.join(d.critical_drifted)}" if d.critical_drifted else ""
        weighted = f", weighted share {d.weighted_share:.2f}" if d.weighted_share is not None else ""
        parts.append(f"drift {len(d.drifted_columns)}/{len(d.columns)} columns{crit}{weighted}")
    elif checked.how != "run_checks":
        parts.append("drift not checked (not a trigger)")
    else:
        parts.append("drift n/a")
    if getattr(checked, "estimated", None) is not None:
        e = checked.estimated
        parts.append(f"estimated {e.metric} {e.value:.3f} vs holdout estimate {e.baseline:.3f}")
    if checked.quality is not None:
        q = checked.quality
        parts.append(f"{q.metric} {q.value:.3f} vs holdout {q.baseline:.3f} on {q.rows} rows")
    else:
        parts.append("quality n/a (too few matured rows of this champion)")
    return "; ".join(parts)


def _short(text: str, width: int = 150) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _dates(start: str, end: str) -> list[str]:
    first, last = date.fromisoformat(start), date.fromisoformat(end)
    return [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


def with_monitor(cfg: PipelineConfig, assignments: str) -> PipelineConfig:
    """The config with monitor settings replaced, e.g. `retrain.cooldown_days=7,quality.max_drop=0.03`."""
    from airflow_mlops.config.monitor import MonitorConfig

    data = cfg.monitor.model_dump()
    # Split on the commas that start a new KEY=, so JSON lists like ["drift","quality"] stay whole.
    for item in filter(None, (a.strip() for a in re.split(r",(?=\s*[\w.]+=)", assignments))):
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"--variant: {item!r} is not KEY=VALUE")
        *parents, leaf = key.strip().split(".")
        node = data
        for part in parents:
            node = node[part]
        if leaf not in node:
            raise SystemExit(f"--variant: monitor has no setting {key!r}")
        try:
            node[leaf] = json.loads(raw)
        except json.JSONDecodeError:
            node[leaf] = raw
    return cfg.model_copy(update={"monitor": MonitorConfig.model_validate(data)})


# Report ------------------------------------------------------------------------------------------------------


def metric_of(cfg: PipelineConfig, y: np.ndarray, s: np.ndarray, classes: Sequence[Any] = ()) -> float:
    from airflow_mlops.core.train.tasks import compute_metrics

    if len(y) == 0:
        return math.nan
    train = cfg.train
    return compute_metrics(y, s, train.metric.threshold, train.task, classes)[train.metric.primary]


def day_metric(cfg: PipelineConfig, run: Run, day: Day) -> float:
    classes = run.classes[day.ds] if cfg.train.task == "multiclass" else ()
    return metric_of(cfg, day.y, run.scores[day.ds][day.labelled], classes)


def pooled(cfg: PipelineConfig, run: Run, days: Sequence[Day]) -> float:
    if not days:
        return math.nan
    ys = np.concatenate([d.y for d in days])
    if cfg.train.task != "multiclass":
        return metric_of(cfg, ys, np.concatenate([run.scores[d.ds][d.labelled] for d in days]))
    # Each day's probability columns onto the classes of all the days' models (0 for a class a model lacks).
    classes = list(dict.fromkeys(str(c) for d in days for c in run.classes[d.ds]))
    blocks = []
    for d in days:
        rows = run.scores[d.ds][d.labelled]
        block = np.zeros((len(rows), len(classes)))
        block[:, [classes.index(str(c)) for c in run.classes[d.ds]]] = rows
        blocks.append(block)
    return metric_of(cfg, ys, np.concatenate(blocks), classes)


def iso_weeks(days: Sequence[Day]) -> dict[str, list[Day]]:
    weeks: dict[str, list[Day]] = {}
    for day in days:
        iso = date.fromisoformat(day.ds).isocalendar()
        weeks.setdefault(f"{iso.year}-W{iso.week:02d}", []).append(day)
    return weeks


def retrains_in(run: Run, days: Sequence[Day], all_days: Sequence[Day]) -> int:
    """Models trained by `run` on the days of `days` (a span of `all_days`)."""
    before = [d.ds for d in all_days if d.ds < days[0].ds]
    return run.retrains[days[-1].ds] - (run.retrains[before[-1]] if before else 0)


def promoted_in(run: Run, days: Sequence[Day], all_days: Sequence[Day]) -> int:
    """Retrains of `run` on the days of `days` that were deployed (every one, for a fixed schedule)."""
    if not run.outcomes:
        return retrains_in(run, days, all_days)
    return sum(days[0].ds <= ds <= days[-1].ds for ds in run.promoted_days)


def report(
    cfg: PipelineConfig, runs: Sequence[Run], days: Sequence[Day], all_days: Sequence[Day], title: str = ""
) -> None:
    """The week-by-week table and the totals of the replay's `days` (a span of `all_days`)."""
    from airflow_mlops.config.train import LOWER_IS_BETTER

    metric = cfg.train.metric.primary
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0  # gains and wins in the metric's better direction
    weeks = iso_weeks(days)
    width = max(12, *(len(r.label) for r in runs))
    head = f"{'week':<9} {'days':>4} {'rows':>6}  " + " ".join(f"{r.label:>{width}}" for r in runs)
    head += "  | retrains so far: " + " ".join(f"{r.label:>{width}}" for r in runs)
    print(
        f"\n{title or 'replay'} {days[0].ds}..{days[-1].ds}: {metric}{' (lower is better)' if sign < 0 else ''} of "
        f"each day's labelled {cfg.features.base} scored by the model in production that day, pooled per ISO week"
    )
    print(head)
    print("-" * len(head))
    weekly: dict[str, list[float]] = {r.label: [] for r in runs}
    for week, members in weeks.items():
        rows = sum(int(d.labelled.sum()) for d in members)
        cells = []
        for r in runs:
            value = pooled(cfg, r, members)
            weekly[r.label].append(value)
            cells.append(f"{value:>{width}.4f}")
        counts = " ".join(f"{r.retrains[members[-1].ds]:>{width}d}" for r in runs)
        print(f"{week:<9} {len(members):>4} {rows:>6}  " + " ".join(cells) + f"  | {'':<17}{counts}")
    print("-" * len(head))

    def line(title: str, values: Sequence[float], fmt: str = ".4f") -> None:
        sign, fmt = ("+", fmt[1:]) if fmt.startswith("+") else ("", fmt)
        print(f"{title:<26} " + " ".join(f"{v:>{sign}{width}{fmt}}" for v in values))

    print(f"{'totals':<26} " + " ".join(f"{r.label:>{width}}" for r in runs))
    line(f"mean weekly {metric}", [float(np.nanmean(weekly[r.label])) for r in runs])
    daily = {r.label: [day_metric(cfg, r, d) for d in days] for r in runs}
    line(f"mean daily {metric}", [float(np.nanmean(daily[r.label])) for r in runs])
    line(f"pooled {metric}", [pooled(cfg, r, days) for r in runs])
    retrains = {r.label: retrains_in(r, days, all_days) for r in runs}
    line("retrains", [float(retrains[r.label]) for r in runs], ".0f")
    line("models deployed", [float(promoted_in(r, days, all_days)) for r in runs], ".0f")
    # A retrain the gates refused (no better than the champion) counts against the alarm that asked for it.
    line(
        "alarms -> promoted share",
        [promoted_in(r, days, all_days) / retrains[r.label] if r.outcomes and retrains[r.label] else math.nan
         for r in runs],
        ".2f",
    )  # fmt: skip
    by_label = {r.label: r for r in runs}
    never, every_day = by_label.get("never"), by_label.get("daily")
    if never and every_day:
        gain = sign * float(np.nanmean(weekly["daily"]) - np.nanmean(weekly["never"]))
        kept = []
        for r in runs:
            own = sign * float(np.nanmean(weekly[r.label]) - np.nanmean(weekly["never"])) + 0.0  # no "-0.00"
            kept.append(own / gain if gain > 0 else math.nan)
        line("share of daily gain", kept, ".2f")
        n_daily = retrains["daily"]
        line("retrains / daily's", [retrains[r.label] / n_daily if n_daily else math.nan for r in runs], ".2f")
        wins = []
        for r in runs:
            diffs = sign * (np.array(weekly[r.label]) - np.array(weekly["never"]))
            wins.append(float(np.sum(diffs > 0)))
        line("weeks better than never", wins, ".0f")
        line(
            "mean weekly - daily's",
            [sign * float(np.nanmean(weekly[r.label]) - np.nanmean(weekly["daily"])) + 0.0 for r in runs],
            "+.4f",
        )


def plot(cfg: PipelineConfig, runs: Sequence[Run], days: Sequence[Day], path: Path, split: str | None) -> None:
    """Week by week: each strategy's metric, the monitor loops' promotions marked, the tuning span shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.dates import date2num

    def x(ds: str) -> float:
        return float(date2num(date.fromisoformat(ds)))  # type: ignore[no-untyped-call]

    weeks = iso_weeks(days)
    starts = [x(members[0].ds) for members in weeks.values()]
    fig, ax = plt.subplots(figsize=(11, 4.8))
    for r in runs:
        values = [pooled(cfg, r, members) for members in weeks.values()]
        n = r.retrains[days[-1].ds]
        style = {"never": ":", "daily": "--"}.get(r.label, "-")
        ax.plot(starts, values, style, marker="o", markersize=3, label=f"{r.label} ({n} retrains)")
        for ds in r.promoted_days if r.outcomes else []:
            ax.axvline(x(ds), color=ax.lines[-1].get_color(), alpha=0.25, linewidth=1)
    if split:
        ax.axvspan(starts[0], x(split), color="0.9", zorder=0, label="settings chosen here")
    ax.set_ylabel(f"weekly {cfg.train.metric.primary}")
    ax.set_title(f"{cfg.name}: model in production each day, pooled per ISO week (vertical lines: promotions)")
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3)
    ax.xaxis_date()
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"plot: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", default=PIPELINE, help="pipeline config (include/pipelines/<name>.yaml)")
    parser.add_argument("--start", default="2013-01-01", help="first day of data (YYYY-MM-DD)")
    parser.add_argument("--end", default="2013-06-30", help="last day replayed (YYYY-MM-DD)")
    parser.add_argument("--warmup-days", type=int, default=45, help="days before the replay: the first model's data")
    parser.add_argument("--cache", type=Path, help="keep the built lake in this folder (reruns skip the ingest)")
    parser.add_argument("--search", action="store_true", help="use train.search (default: none, one fit per model)")
    parser.add_argument("--threads", type=int, help="train.model.threads override (default: the config's)")
    parser.add_argument(
        "--check-cooldown-days",
        action="store_true",
        help="monitor loop: also run the checks on cool-down days (same models; slower; fuller outcome log)",
    )
    parser.add_argument(
        "--split", help="also report the days before and from this day (YYYY-MM-DD) apart: where settings were chosen"
    )
    parser.add_argument("--plot", type=Path, help="write the week-by-week plot (PNG) here")
    parser.add_argument("--verbose", action="store_true", help="print each monitored day's outcome and figures")
    parser.add_argument("--no-gates", action="store_true", help="monitor loop: deploy every retrain, no gates")
    parser.add_argument(
        "--every", type=int, action="append", help="extra fixed-schedule strategy, retrain every N days (repeatable)"
    )
    parser.add_argument(
        "--strategies",
        default="never,daily,monitor",
        help="comma-separated subset of never,daily,monitor to run (default: all three)",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL:KEY=VALUE,...",
        help="extra monitor loop with monitor settings overridden, e.g. cool7:retrain.cooldown_days=7 (repeatable)",
    )
    args = parser.parse_args()
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)

    from airflow_mlops.config import pipeline_by_name
    from airflow_mlops.core.ingest.labels import read_labels
    from airflow_mlops.core.lake.storage import open_lake

    total = time.perf_counter()
    cfg = pipeline_by_name(args.pipeline)
    model_update: dict[str, Any] = {} if args.threads is None else {"threads": args.threads}
    train_cfg = cfg.train.model_copy(
        update={
            "search": cfg.train.search if args.search else None,
            "model": cfg.train.model.model_copy(update=model_update),
        }
    )
    cfg = cfg.model_copy(update={"train": train_cfg})
    days_all = _dates(args.start, args.end)
    if args.warmup_days < train_cfg.validation_days + train_cfg.holdout_days + 1 or args.warmup_days >= len(days_all):
        raise SystemExit(f"--warmup-days {args.warmup_days}: too few for the split or no day left to replay")
    warmup_end = days_all[args.warmup_days - 1]
    replay = days_all[args.warmup_days :]
    print(
        f"{cfg.name}: data {args.start}..{args.end}; first model on {args.start}..{warmup_end} "
        f"({args.warmup_days} days); replay {replay[0]}..{replay[-1]} ({len(replay)} days)"
    )
    print(
        f"training: {train_cfg.model.estimator} {train_cfg.model.params}, "
        f"search {'train.search ' + str(train_cfg.search.n_iter) + ' candidates' if train_cfg.search else 'none'}, "
        f"window {train_cfg.window_days} days (never before {args.start}), validation {train_cfg.validation_days} + "
        f"holdout {train_cfg.holdout_days} days, refit_with_validation {train_cfg.model.refit_with_validation}, "
        f"threads {train_cfg.model.threads}"
    )
    mon = cfg.monitor
    print(
        f"monitor: window {mon.window_days} days, sources {mon.sources}, drift columns "
        f"{','.join(mon.drift.columns) or 'all model inputs'}, {mon.drift.numeric_method} "
        f"{mon.drift.numeric_threshold} / {mon.drift.categorical_method} {mon.drift.categorical_threshold}"
        f"{f' (per column {mon.drift.thresholds})' if mon.drift.thresholds else ''}, "
        f"critical {mon.drift.critical}, share_threshold {mon.drift.share_threshold}; quality max_drop "
        f"{mon.quality.max_drop}, label_delay {mon.quality.label_delay_days} d, min_rows {mon.quality.min_rows}; "
        f"triggers {mon.retrain.triggers}, cooldown {mon.retrain.cooldown_days} d, "
        f"max_age {mon.retrain.max_age_days} d; "
        f"gates {'off' if args.no_gates else 'on (train.gates)'}"
    )

    with tempfile.TemporaryDirectory(prefix="bench-value-") as tmp:
        root = args.cache or Path(tmp)
        lake = open_lake(str(root))
        ingested, rejected, ingest_s = build_lake(lake, cfg, days_all)
        print(
            f"lake {root}: {len(ingested)} day(s) ingested in {ingest_s:.1f} s"
            + (f" ({ingest_s / len(ingested):.2f} s/day)" if ingested else " (cached)")
            + (f"; rejected: {', '.join(rejected)}" if rejected else ""),
            flush=True,
        )
        started = time.perf_counter()
        # Outcomes that land later (a label source): every landing counts, as the days were scored long ago.
        labels = read_labels(lake, cfg, None, days_all[-1]) if cfg.label_source is not None else None
        loaded = [load_day(lake, cfg, ds, labels) for ds in replay]
        days = [d for d in loaded if d is not None]
        missing = [ds for ds, d in zip(replay, loaded, strict=True) if d is None]
        print(
            f"replay days loaded in {time.perf_counter() - started:.1f} s: {len(days)} days, "
            f"{sum(int(d.labelled.sum()) for d in days)} labelled rows"
            + (f"; no features for {', '.join(missing)}" if missing else ""),
            flush=True,
        )

        trainer = Trainer(lake, cfg, train_cfg, args.start)
        first = trainer.train(warmup_end, "1", monitored=True)
        print(f"first model: window ending {warmup_end}, {first.seconds:.1f} s, holdout {first.baselines}", flush=True)

        runs: list[Run] = []
        timings: dict[str, float] = {}

        key = {
            "start": args.start,
            "end": args.end,
            "warmup": args.warmup_days,
            "train": train_cfg.model_dump(mode="json"),
            "features": cfg.features.model_dump(mode="json"),
            "days": [d.ds for d in days],
            "gates": not args.no_gates,
            "check_cooldown_days": args.check_cooldown_days,
            "pipeline": cfg.name,
        }

        reused: set[str] = set()

        def timed(label: str, fn: Callable[[], Run], extra: Any = None) -> None:
            """Run a strategy, or with --cache reuse the result of a finished identical run (replays are slow)."""
            saved = None
            if args.cache:
                blob = json.dumps({**key, "label": label, "extra": extra}, sort_keys=True, default=str)
                saved = args.cache / "bench_value_runs" / f"{hashlib.sha256(blob.encode()).hexdigest()[:16]}.pkl"
            started = time.perf_counter()
            if saved is not None and saved.exists():
                run: Run = pickle.loads(saved.read_bytes())
                note = f"reused {saved}"
                reused.add(label)
            else:
                run = fn()
                note = ""
                if saved is not None:
                    saved.parent.mkdir(parents=True, exist_ok=True)
                    saved.write_bytes(pickle.dumps(run))
            timings[label] = time.perf_counter() - started
            runs.append(run)
            parts = ", ".join(f"{k} {v:.1f} s" for k, v in run.seconds.items())
            print(f"strategy {label}: {timings[label]:.1f} s ({parts}) {note}".rstrip(), flush=True)

        wanted = set(args.strategies.split(","))
        gates = not args.no_gates
        if "never" in wanted:
            timed("never", functools.partial(run_fixed, "never", 0, trainer, first, days))
        if "monitor" in wanted:
            mon_key = cfg.monitor.model_dump(mode="json")
            timed(
                "monitor",
                functools.partial(run_monitor, "monitor", cfg, trainer, first, days, gates, args.check_cooldown_days),
                mon_key,
            )
        if "daily" in wanted:
            timed("daily", functools.partial(run_fixed, "daily", 1, trainer, first, days))
        for n in args.every or []:
            if n > 1:
                label = f"every{n}d(extra)"
                timed(label, functools.partial(run_fixed, label, n, trainer, first, days))
        for spec in args.variant:
            name, _, assignments = spec.partition(":")
            label = f"{name}(extra)"
            variant_cfg = with_monitor(cfg, assignments)
            variant_trainer = Trainer(lake, variant_cfg, train_cfg, args.start)
            print(f"variant {label}: monitor {assignments}", flush=True)
            timed(
                label,
                functools.partial(
                    run_monitor, label, variant_cfg, variant_trainer, first, days, gates, args.check_cooldown_days
                ),
                variant_cfg.monitor.model_dump(mode="json"),
            )
        # Columns in the order of the brief: never, daily, monitor, then the extras.
        order = {"never": 0, "daily": 1, "monitor": 2}
        runs.sort(key=lambda r: order.get(r.label, 3))

        report(cfg, runs, days, days)
        if args.split:
            before = [d for d in days if d.ds < args.split]
            after = [d for d in days if d.ds >= args.split]
            if before and after:
                report(cfg, runs, before, days, "settings chosen on")
                report(cfg, runs, after, days, "reported separately")
        if args.plot:
            plot(cfg, runs, days, args.plot, args.split)
        for run in runs:
            if run.outcomes:
                print(f"\n{run.label}: monitor outcomes {run.outcomes}; retrains:")
                for event in run.events:
                    print(f"  {event}")
                if args.verbose:
                    print(f"{run.label}: each checked day")
                    for entry in run.log:
                        print(f"  {entry}")
        print(
            f"\ntimings (machine shared with other jobs; wall seconds): ingest {ingest_s:.1f} s"
            + (f" ({ingest_s / len(ingested):.2f} s/day)" if ingested else " (lake cached)")
            + f"; first model {first.seconds:.1f} s"
        )
        for run in runs:
            n = run.retrains[days[-1].ds]
            parts = ", ".join(f"{k} {v:.1f} s" for k, v in run.seconds.items())
            per = f", {run.seconds.get('fit', 0.0) / n:.1f} s/model" if n else ""
            note = " (reused from --cache)" if run.label in reused else ""
            print(f"  {run.label:<18} {timings[run.label]:8.1f} s  ({parts}{per}){note}")
        print(f"  total {time.perf_counter() - total:.1f} s")


if __name__ == "__main__":
    main()
