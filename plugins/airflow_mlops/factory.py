"""Turns pipeline configs into DAGs; DAG files only call build_all() and raise_pipeline_problems()."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Asset, Param

from airflow_mlops.config import PipelineConfig, PipelineConfigError, Problem, scan_pipelines
from airflow_mlops.operators import (
    BuildFeaturesOperator,
    CachedDayOperator,
    CheckVersionOperator,
    DeployFailedOperator,
    EvaluateModelOperator,
    IngestSourceOperator,
    MonitorOperator,
    PromoteModelOperator,
    RegisterModelOperator,
    RollbackOperator,
    ScorePartitionsOperator,
    SmokeTestOperator,
    TrainModelOperator,
    ValidateSourceOperator,
)
from airflow_mlops.sensors import LandingFileSensor, ServedVersionSensor


def features_asset(cfg: PipelineConfig) -> Asset:
    """The Asset `<p>.features`, updated once per ingested logical date."""
    return Asset(name=cfg.features_asset_name, uri=f"mlops://{cfg.name}/features", group="mlops")


def predictions_asset(cfg: PipelineConfig) -> Asset:
    """The Asset `<p>.predictions`, updated by each `<p>__score` run that wrote predictions."""
    return Asset(name=f"{cfg.name}.predictions", uri=f"mlops://{cfg.name}/predictions", group="mlops")


def model_asset(cfg: PipelineConfig) -> Asset:
    """The Asset `<p>.model`, updated by each `<p>__train` run that registered a version (promoted or not)."""
    return Asset(name=f"{cfg.name}.model", uri=f"mlops://{cfg.name}/model", group="mlops")


def champion_asset(cfg: PipelineConfig) -> Asset:
    """The Asset `<p>.champion`, updated by each promotion (`<p>__deploy`'s `promote`)."""
    return Asset(name=f"{cfg.name}.champion", uri=f"mlops://{cfg.name}/champion", group="mlops")


def default_args(cfg: PipelineConfig) -> dict[str, Any]:
    return {
        "owner": cfg.owner,
        "retries": cfg.retries,
        "retry_delay": timedelta(seconds=cfg.retry_delay_seconds),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=10),
        "execution_timeout": timedelta(minutes=cfg.task_timeout_minutes),
    }


SCHEDULED_KINDS = ("ingest",)
"""DAGs that get the pipeline's end_date. Airflow creates no task instance of a run whose logical date lies after
a DAG's end_date and reports that run a success, so an end_date only suits a DAG whose every run is one day of
data. The event DAGs (deploy, score, monitor; logical date: now, or none) never get one, and neither does train:
see train_schedule."""


def train_schedule(cfg: PipelineConfig, today: date | None = None) -> str | None:
    """`<p>__train`'s schedule: the configured one until the pipeline's end_date, then none.

    The train DAG has no end_date: with one, a run triggered from the form with its default logical date (now)
    after the pipeline ended would run no task and still succeed, silently. Without one, every run trains, and a
    run dated after the end trains on the window that ends on the pipeline's last day (TrainModelOperator). As
    catchup is off, the schedule would only ever add runs dated after the end once it passed: it stops instead
    (at the first parse after the end date)."""
    today = today or datetime.now(UTC).date()
    if cfg.end_date is not None and today > cfg.end_date:
        return None
    return cfg.train.schedule


log = logging.getLogger(__name__)

_AUTO_REGISTER: contextvars.ContextVar[bool] = contextvars.ContextVar("mlops_auto_register", default=True)
"""False while pipeline_problems() builds DAGs only to see whether they build (they must not become DAGs of
the file that called it)."""


def _dag_kwargs(cfg: PipelineConfig, kind: str, doc: str) -> dict[str, Any]:
    ends = cfg.end_date is not None and kind in SCHEDULED_KINDS
    return {
        "auto_register": _AUTO_REGISTER.get(),
        "dag_id": cfg.dag_id(kind),
        "description": f"{cfg.description} ({kind})".strip(),
        "start_date": datetime.combine(cfg.start_date, datetime.min.time(), UTC),
        "end_date": datetime.combine(cfg.end_date, datetime.min.time(), UTC) if ends and cfg.end_date else None,
        "default_args": default_args(cfg),
        "tags": sorted({"mlops", cfg.name, kind, *cfg.tags}),
        "doc_md": doc,
    }


def build_ingest_dag(cfg: PipelineConfig) -> DAG:
    """`<p>__ingest`: wait for landing files, copy to raw, validate (quarantine on failure), build features."""
    doc = (
        f"### {cfg.name}: ingest\n{cfg.description}\n\n"
        "For the logical date: ends at once when a rerun has nothing to do (`step_cache`: every step's inputs, "
        "config and package are those of its recorded run; the earlier outputs stand), else waits for each "
        "source's landing file, copies it to `raw/` as typed Parquet, "
        "validates it with its Great Expectations suite (a failing batch goes to `quarantine/` and the run "
        "fails naming every failed expectation), then builds `features/` and updates the Asset "
        f"`{cfg.features_asset_name}`."
    )
    ingest = cfg.ingest
    with DAG(
        schedule=ingest.schedule,
        catchup=ingest.catchup,
        max_active_runs=ingest.max_active_runs,
        params={"force_rerun": force_rerun_param()},
        **_dag_kwargs(cfg, "ingest", doc),
    ) as dag:
        # Ends a rerun of a date with nothing to do before any other task starts (each would skip itself).
        cached = CachedDayOperator(task_id="step_cache", pipeline=cfg.name)
        features = BuildFeaturesOperator(task_id="build_features", pipeline=cfg.name, outlets=[features_asset(cfg)])
        for name in cfg.sources:
            wait = LandingFileSensor(
                task_id=f"wait_for_{name}",
                pipeline=cfg.name,
                source=name,
                poke_interval=ingest.sensor.poke_interval_seconds,
                timeout=ingest.sensor.timeout_seconds,
                deferrable=ingest.sensor.deferrable,
                mode="reschedule",
            )
            copy = IngestSourceOperator(task_id=f"ingest_{name}", pipeline=cfg.name, source=name)
            check = ValidateSourceOperator(task_id=f"validate_{name}", pipeline=cfg.name, source=name)
            cached >> wait >> copy >> check >> features
    return dag


RUN_DATE = "{{ (dag_run.logical_date or dag_run.run_after) | ds }}"
"""The run's date: manual and monitor-triggered runs in Airflow 3 may have no logical date (no `ds`)."""


def force_rerun_param() -> Param:
    """The form's "Force rerun": run the steps even when their inputs, config and package did not change."""
    return Param(
        False,
        type="boolean",
        title="Force rerun",
        description="Run every step again, even one whose inputs, config section and package version are those of "
        "its last successful run (which it otherwise skips, keeping that run's output).",
    )


def optional_date_param(title: str, description: str) -> Param:
    """A YYYY-MM-DD field of a trigger form that may stay empty."""
    return Param(None, type=["null", "string"], format="date", title=title, description=description)


def train_params(cfg: PipelineConfig) -> dict[str, Param]:
    """The typed trigger form of `<p>__train` (also what the monitor sets when it asks for a retrain)."""
    return {
        "end_date": optional_date_param(
            "Window end",
            "Last day of the training window (YYYY-MM-DD). Empty: the run's date, at most the pipeline's end_date.",
        ),
        "window_days": Param(
            cfg.train.window_days,
            type="integer",
            minimum=3,
            title="Window (days)",
            description="Days of features up to the window end; the latest train.holdout_days are the holdout.",
        ),
        "reason": Param(
            "manual",
            type="string",
            title="Reason",
            description="Why this training runs (recorded on the MLflow run), e.g. drift report or ticket.",
        ),
        "force": Param(
            False,
            type="boolean",
            title="Force",
            description="Register the model as challenger even if it fails the quality gates.",
        ),
        # Optional in the form (null allowed): the form marks a non-null string field required, which would block
        # submitting the defaults. `force` without a reason still fails at run time (EvaluateModelOperator).
        "force_reason": Param(
            None,
            type=["null", "string"],
            title="Why force",
            description="Required with force; recorded with who triggered the run on the run and the version.",
        ),
    }


def deploy_request(ti: Any, params: Mapping[str, Any], dag_run: Any) -> dict[str, str] | bool:
    """`passed_gates`: the conf of `<p>__deploy` when `register` gave the version the `challenger` alias, else
    False (nothing to deploy). Built as data, so no text in it is ever rendered as a template."""
    registered = ti.xcom_pull(task_ids="register")
    if not registered["promoted"]:
        return False
    how = "forced past the gates" if registered.get("outcome") == "forced" else "passed the gates"
    return {
        "version": str(registered["version"]),
        "reason": f"{params.get('reason') or 'manual'}: {how}",
        "requested_by": f"{dag_run.dag_id}/{dag_run.run_id}",
    }


def retrain_request(ti: Any) -> dict[str, str] | bool:
    """`retrain_wanted`: the conf of `<p>__train` when the monitor asks for a retrain, else False. Built as data:
    the reasons hold lake paths and exception texts, which must never be rendered as a template."""
    result = ti.xcom_pull(task_ids="monitor")
    if not result["retrain"]:
        return False
    reasons = "; ".join(str(r) for r in result["reasons"])
    return {
        "end_date": str(result["date"]),
        "reason": f"monitor {result['date']}: {reasons} (report {result['report_url']})",
    }


def build_train_dag(cfg: PipelineConfig) -> DAG:
    """`<p>__train`: train on the window, evaluate against the champion, register with alias `challenger`."""
    doc = (
        f"### {cfg.name}: train\n{cfg.description}\n\n"
        f"Assembles {cfg.train.window_days} days of `features/` up to the window end, splits them by time "
        f"(last {cfg.train.holdout_days} days are the holdout), trains `{cfg.train.model.estimator}`, evaluates "
        "the challenger and the current champion on the same holdout, logs everything to one MLflow run, and "
        "registers a model version with lineage to its data. Only a version that passes the gates gets the "
        "`challenger` alias. Trigger it by hand with the form; `force` needs a reason."
    )
    with DAG(
        schedule=train_schedule(cfg),
        catchup=False,
        max_active_runs=1,
        params=train_params(cfg),
        # Text: native rendering would literal_eval a reason from the form or the monitor ("1_000" became 1000).
        render_template_as_native_obj=False,
        **_dag_kwargs(cfg, "train", doc),
    ) as dag:
        train = TrainModelOperator(
            task_id="train",
            pipeline=cfg.name,
            ds=RUN_DATE,
            end_ds="{{ params.end_date }}",
            window_days="{{ params.window_days }}",
            reason="{{ params.reason }}",
            inlets=[features_asset(cfg)],  # the asset graph: features -> train
        )
        evaluate = EvaluateModelOperator(
            task_id="evaluate",
            pipeline=cfg.name,
            ds=RUN_DATE,
            force="{{ params.force }}",
            force_reason="{{ params.force_reason }}",
        )
        register = RegisterModelOperator(task_id="register", pipeline=cfg.name, ds=RUN_DATE, outlets=[model_asset(cfg)])
        train >> evaluate >> register
        if cfg.train.trigger_deploy:
            from airflow.providers.standard.operators.python import ShortCircuitOperator
            from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator

            promoted = ShortCircuitOperator(task_id="passed_gates", python_callable=deploy_request)
            deploy = TriggerDagRunOperator(
                task_id="trigger_deploy",
                trigger_dag_id=cfg.dag_id("deploy"),
                logical_date=None,  # no logical date: a deployment is an event, not a data interval
                # Built in Python by passed_gates: the reason (form or monitor text) is never part of a template.
                conf="{{ ti.xcom_pull(task_ids='passed_gates') | tojson }}",  # type: ignore[arg-type]  # JSON text
            )
            register >> promoted >> deploy
    return dag


SCORE_MAX_ACTIVE_RUNS = 16
"""Score runs at once per pipeline (each scores its own partitions)."""


def build_score_dag(cfg: PipelineConfig) -> DAG:
    """`<p>__score`: after each ingest (Asset `<p>.features`), the champion's predictions of the new partition."""
    doc = (
        f"### {cfg.name}: score\n{cfg.description}\n\n"
        f"Runs when `{cfg.features_asset_name}` is updated: the `champion` scores the new feature partition(s) "
        "into `predictions/` with the model version; a rerun replaces the partition. Skips while there is no "
        "champion. Trigger it by hand with a partition date to (re)score one day."
    )
    params = {
        "partition": optional_date_param(
            "Partition", "Feature partition (YYYY-MM-DD) to score. Empty: the partitions of the triggering ingest."
        ),
        "force_rerun": force_rerun_param(),
    }
    with DAG(
        schedule=[features_asset(cfg)],
        catchup=False,
        # Not 1: with one active run, Airflow (3.x, apache/airflow#56050) keeps an event that arrives while the
        # run is active queued until the next event, so a day's predictions waited a day. Runs of different
        # partitions are independent and a rerun of one replaces its partition, so they may overlap.
        max_active_runs=SCORE_MAX_ACTIVE_RUNS,
        params=params,
        render_template_as_native_obj=True,
        **_dag_kwargs(cfg, "score", doc),
    ) as dag:
        ScorePartitionsOperator(
            task_id="score",
            pipeline=cfg.name,
            ds="{{ params.partition }}",
            inlets=[champion_asset(cfg)],  # the asset graph: champion -> score (it runs on features)
            outlets=[predictions_asset(cfg)],
        )
    return dag


def build_deploy_dag(cfg: PipelineConfig) -> DAG:
    """`<p>__deploy`: approve when needed, promote, wait until served, smoke-test; roll back and fail on any failure."""
    from airflow_mlops.approval import DeployApprovalOperator

    deploy = cfg.deploy
    approval = "every version" if deploy.approval.required else "a version registered with force"
    doc = (
        f"### {cfg.name}: deploy\n{cfg.description}\n\n"
        "Checks the version (given, else the `challenger`) and gathers its evidence. A human approves "
        f"{approval} in the Airflow UI (Required actions) before it goes further; the user who forced a version "
        "cannot approve it, and a rejection or an unanswered request fails the run. Then makes it `champion` "
        "(the old champion becomes `previous`), waits until the model server reports it, and smoke-tests it on "
        "holdout rows of its own training window (schema, predictions equal to offline ones, latency budget). If "
        "any step fails, `champion` goes back to the version this run replaced, the server returns to it, and the "
        "run fails naming why. Approvals, rejections, promotions and rollbacks are audit records "
        "(`mlops.audit.*` tags) on the registered model."
    )
    params = {
        "version": Param(
            None,
            type=["null", "string", "integer"],
            title="Model version",
            description="Registered model version to deploy. Empty: the current `challenger`.",
        ),
        "reason": Param("manual", type="string", title="Reason", description="Why, recorded in the audit record."),
    }
    with DAG(
        schedule=None,
        catchup=False,
        max_active_runs=1,
        params=params,
        **_dag_kwargs(cfg, "deploy", doc),
    ) as dag:
        common = {"pipeline": cfg.name, "ds": RUN_DATE}
        check = CheckVersionOperator(
            task_id="check_version", version="{{ params.version }}", inlets=[model_asset(cfg)], **common
        )
        version = "{{ ti.xcom_pull(task_ids='check_version')['version'] }}"
        # Always there; it skips at run time when neither the config nor a forced version asks for a human.
        approve = DeployApprovalOperator(
            task_id="approve",
            pipeline=cfg.name,
            subject=f"Deploy {cfg.train.model_name(cfg.name)} v{version}?",
            body="{{ ti.xcom_pull(task_ids='check_version')['markdown'] }}",
            response_timeout=timedelta(minutes=deploy.approval.timeout_minutes),
            assigned_users=[{"id": u, "name": u} for u in deploy.approval.approvers] or None,
        )
        # none_failed: runs after an approval or a skipped (not needed) one; a rejection or timeout fails approve.
        promote = PromoteModelOperator(
            task_id="promote", trigger_rule="none_failed", outlets=[champion_asset(cfg)], **common
        )
        serving = ServedVersionSensor(
            task_id="wait_until_served",
            pipeline=cfg.name,
            version=version,
            poke_interval=deploy.poke_interval_seconds,
            timeout=deploy.serve_timeout_seconds,
            mode="reschedule",
        )
        smoke = SmokeTestOperator(task_id="smoke_test", **common)
        # Puts the old champion back and emits its event of `<p>.champion`; deploy_failed then fails the run on
        # purpose (AirflowFailException, never retried): an event is only emitted by a task that succeeds.
        rollback = RollbackOperator(
            task_id="rollback", trigger_rule="one_failed", outlets=[champion_asset(cfg)], **common
        )
        failed = DeployFailedOperator(task_id="deploy_failed")
        check >> approve >> promote >> serving >> smoke
        [approve, promote, serving, smoke] >> rollback >> failed
    return dag


def build_monitor_dag(cfg: PipelineConfig) -> DAG:
    """`<p>__monitor`: drift and quality of the champion in production; triggers `<p>__train` on an alarm."""
    mon = cfg.monitor
    trigger = f"{cfg.name}.predictions" if "predictions" in mon.sources else cfg.features_asset_name
    when = f"on `{mon.schedule}`" if mon.schedule else f"after every ingest (Asset `{trigger}`)"
    doc = (
        f"### {cfg.name}: monitor\n{cfg.description}\n\n"
        f"Runs {when}. Compares the last {mon.window_days} days of production inputs "
        f"({', '.join(mon.sources)}) with the champion's reference sample (Evidently), scores the champion on "
        "the labels that have matured, writes an HTML report (task link *Drift report*) and the figures to MLflow, "
        "alerts when a threshold is crossed, and triggers `<p>__train` with the reason, at most once per "
        f"{mon.retrain.cooldown_days}-day cool-down and never while a training run is active."
    ).replace("<p>", cfg.name)
    params = {
        "date": optional_date_param(
            "Date", "Last day of the monitored window (YYYY-MM-DD). Empty: the newest ingested partition."
        ),
        "force_rerun": force_rerun_param(),
    }
    with DAG(
        # After scoring when predictions are monitored (so the new day's predictions are there), else after ingest.
        schedule=mon.schedule or [predictions_asset(cfg) if "predictions" in mon.sources else features_asset(cfg)],
        catchup=False,
        max_active_runs=1,
        params=params,
        render_template_as_native_obj=True,
        **_dag_kwargs(cfg, "monitor", doc),
    ) as dag:
        from airflow.providers.standard.operators.python import ShortCircuitOperator
        from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator

        monitor = MonitorOperator(
            task_id="monitor", pipeline=cfg.name, ds="{{ params.date }}", inlets=[champion_asset(cfg)]
        )
        wanted = ShortCircuitOperator(task_id="retrain_wanted", python_callable=retrain_request)
        request = "ti.xcom_pull(task_ids='retrain_wanted')"
        retrain = TriggerDagRunOperator(
            task_id="trigger_retrain",
            trigger_dag_id=cfg.dag_id("train"),
            # No logical date: the window end is in the conf, and the train DAG's end_date must not apply.
            logical_date=None,
            # One retrain per monitored date: a rerun of this task finds the run it made instead of adding one.
            trigger_run_id=f"monitor__{{{{ {request}['end_date'] }}}}",
            skip_when_already_exists=True,
            # Built in Python by retrain_wanted: the reasons (data, exception texts) are never part of a template.
            conf=f"{{{{ {request} | tojson }}}}",  # type: ignore[arg-type]  # JSON text: parsed by the operator
        )
        monitor >> wanted >> retrain
    return dag


BUILDERS = (build_ingest_dag, build_train_dag, build_deploy_dag, build_score_dag, build_monitor_dag)


def build_pipeline(cfg: PipelineConfig) -> dict[str, DAG]:
    """The DAGs of one pipeline, keyed by dag_id."""
    return {dag.dag_id: dag for dag in (builder(cfg) for builder in BUILDERS)}


def build_all(folder: Path | None = None) -> dict[str, DAG]:
    """Every DAG of every valid pipeline config in the folder, keyed by dag_id.

    A file that is invalid, or whose DAGs cannot be built, is left out and logged: it must not stop the
    other pipelines' DAGs from updating. `raise_pipeline_problems` (another DAG file) reports it in the UI.
    """
    dags: dict[str, DAG] = {}
    scan = scan_pipelines(folder)
    for problem in scan.problems:
        log.error("Pipeline file left out: %s", problem)
    for cfg in scan.configs:
        try:
            dags.update(build_pipeline(cfg))
        except Exception:
            log.exception("The DAGs of pipeline %s cannot be built; it is left out", cfg.name)
    return dags


def pipeline_problems(folder: Path | None = None) -> list[Problem]:
    """The problems of every pipeline file in the folder: invalid configs, and valid ones whose DAGs do not build."""
    scan = scan_pipelines(folder)
    problems = list(scan.problems)
    token = _AUTO_REGISTER.set(False)
    try:
        for cfg in scan.configs:
            try:
                build_pipeline(cfg)
            except Exception as exc:
                message = f"its DAGs cannot be built: {type(exc).__name__}: {exc}"
                problems.append(Problem(str(scan.files[cfg.name]), None, "(dags)", message))
    finally:
        _AUTO_REGISTER.reset(token)
    return problems


def raise_pipeline_problems(folder: Path | None = None) -> None:
    """Raise PipelineConfigError listing every problem (`file:line: key: message`), if there is any.

    Called by its own DAG file, so the error is that file's import error in the Airflow UI while the DAG
    file of build_all() keeps importing: an import error marks every DAG of its file stale, and one bad
    pipeline file must not stop the others.
    """
    problems = pipeline_problems(folder)
    if problems:
        raise PipelineConfigError(problems)
