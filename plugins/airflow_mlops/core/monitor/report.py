"""The monitor's HTML page: the decision, drift per column, quality, the rows read and Evidently's report."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Literal

from airflow_mlops.config.train import METRIC_NAMES
from airflow_mlops.core.monitor.decision import estimated_reason, fmt, quality_reason
from airflow_mlops.core.report import Link, Section, Table, Verdict, render_report

if TYPE_CHECKING:
    from airflow_mlops.config import PipelineConfig
    from airflow_mlops.core.monitor.current import CurrentData
    from airflow_mlops.core.monitor.decision import Decision
    from airflow_mlops.core.monitor.drift import DriftResult
    from airflow_mlops.core.monitor.estimate import EstimatedQuality
    from airflow_mlops.core.monitor.prediction import PredictionDrift
    from airflow_mlops.core.monitor.quality import QualityResult


def render_monitor_html(
    cfg: PipelineConfig,
    ds: str,
    decision: Decision,
    context: Mapping[str, str | Link],
    current: CurrentData | None,
    drift: DriftResult | None,
    quality: QualityResult | None,
    critical: Sequence[str],
    prediction: PredictionDrift | None = None,
    estimated: EstimatedQuality | None = None,
) -> str:
    """The monitor's page: verdict and reasons, drift per column, prediction drift, estimated quality, quality,
    rows read, then Evidently's report."""
    label = decision.outcome.replace("_", " ").upper()
    summary = decision.reasons[0] if decision.reasons else decision.outcome
    if decision.retrain:  # the alarm(s) that asked for it, not the first check's line (which may be calm)
        summary = f"retrain triggered; {decision.retrain_reason.removeprefix('monitor: ') or summary}"
    verdict = Verdict(ok=not decision.alarms, summary=summary, labels=(label, label))
    status: Literal["fail", "warn", "pass"] = (
        "fail" if decision.alarms else ("warn" if decision.outcome != "ok" else "pass")
    )
    sections = [Section(title="Decision", text="\n\n".join(decision.reasons), status=status)]
    if drift is not None:
        cols = list(drift.columns.items())
        weighted = drift.weighted_share is not None
        counted = (
            f"of the champion's importance ({drift.weighted_share:.0%} now; plain share {drift.share:.0%})"
            if weighted
            else "of the columns"
        )
        sections.append(
            Section(
                title=f"Drift per column ({len(drift.drifted_columns)} of {len(cols)} drifted)",
                status="fail" if drift.drifted else "pass",
                text=(
                    f"Reference: {drift.rows_reference} rows of the champion's training days; current: "
                    f"{drift.rows_current} sampled production rows. Drift of the data when at least "
                    f"{drift.share_threshold:.0%} {counted} drift, or a critical column does."
                    + ("" if cfg.monitor.drift.alarm else " Reported only: monitor.drift.alarm is false.")
                ),
                table=Table(
                    headers=("Drifted", "Column", "Method", "Score", "Threshold", "Critical")
                    + (("Weight",) if weighted else ()),
                    rows=[
                        (
                            "DRIFT" if c.drifted else "no",
                            name,
                            c.method,
                            fmt(c.score),
                            fmt(c.threshold),
                            "yes" if name in critical else "",
                        )
                        + ((f"{drift.weights.get(name, 0.0):.0%}",) if weighted else ())
                        for name, c in cols
                    ],
                    statuses=["fail" if c.drifted else "pass" for _, c in cols],
                ),
            )
        )
    if prediction is not None:
        sections.append(_prediction_section(prediction, cfg.monitor.prediction_drift.alarm))
    if estimated is not None:
        sections.append(
            Section(
                title=f"Estimated quality ({estimated.rows} unlabelled rows)",
                status="fail" if estimated.degraded else "pass",
                text=estimated_reason(estimated)
                + ". Estimated from the champion's own probabilities (confidence-based): it sees inputs moving to"
                " where the model is unsure, not a changed relation between inputs and outcome.",
            )
        )
    if quality is not None:
        names = [m for m in METRIC_NAMES if m in quality.metrics]
        sections.append(
            Section(
                title=f"Quality on matured labels ({quality.rows} rows)",
                status="fail" if quality.degraded else "pass",
                text=quality_reason(quality),
                table=Table(
                    headers=("Metric", "Matured rows", f"Champion v{quality.champion_version} holdout"),
                    rows=[
                        (
                            m + (" (primary)" if m == quality.metric else ""),
                            fmt(quality.metrics[m]) if not math.isnan(quality.metrics[m]) else "-",
                            fmt(quality.baselines[m]) if m in quality.baselines else "-",
                        )
                        for m in names
                    ],
                    statuses=[
                        ("fail" if quality.degraded else "pass") if m == quality.metric else "info" for m in names
                    ],
                ),
            )
        )
    if current is not None:
        rows = [
            (source, day, str(count))
            for source, by_day in current.rows_by_day.items()
            for day, count in sorted(by_day.items())
        ]
        text = (
            f"Window {current.days[0]}..{current.days[-1]}; labels matured up to "
            f"{current.matured_days[-1] if current.matured_days else '(none)'}. Sampled for drift: "
            f"{len(current.rows)} of {current.total_rows} rows. Predictions without features: "
            f"{current.unmatched_rows}; matured rows of other model versions: {current.other_version_rows}; "
            f"matured rows of the champion without a known label: {current.unlabelled_rows}."
        )
        sections.append(
            Section(title="Production rows read", text=text, table=Table(headers=("Source", "Day", "Rows"), rows=rows))
        )
    page = render_report(f"Monitor of {cfg.name} for {ds}", context, sections, verdict)
    if drift is not None and drift.html:
        # Evidently's page is a whole document with its own scripts: a sandboxed srcdoc frame keeps both apart.
        frame = (
            '<section class="info"><h2>Evidently data drift report</h2>'
            f'<iframe title="Evidently data drift report" sandbox="allow-scripts" '
            f'style="width:100%;height:1800px;border:0" srcdoc="{html.escape(drift.html, quote=True)}"></iframe>'
            "</section>"
        )
        cut = page.rfind("<footer>")
        page = page[:cut] + frame + page[cut:]
    return page


def _prediction_section(prediction: PredictionDrift, alarm: bool) -> Section:
    """The champion's output distributions, current against reference, one row per output column."""
    cols = list(prediction.drift.columns.items())
    moved: Literal["fail", "warn"] = "fail" if alarm else "warn"  # reported only: it decides nothing
    outputs = {
        "binary": "the probability of true",
        "regression": "the predicted value",
        "multiclass": "the predicted class and each class probability",
    }.get(prediction.task, "the prediction")
    return Section(
        title=f"Prediction drift ({len(prediction.drift.drifted_columns)} of {len(cols)} outputs drifted)",
        status=moved if prediction.drifted else "pass",
        text=(
            f"Outputs of champion v{prediction.champion_version} ({prediction.task}: {outputs}): "
            f"{prediction.drift.rows_reference} rows of its reference sample against {prediction.drift.rows_current} "
            f"sampled production rows it predicted ({prediction.other_rows} rows of other model versions or "
            f"without a prediction left out). The verdict is that of `prediction`"
            + ("; class probabilities are shown, not judged. " if prediction.task == "multiclass" else ". ")
            + ("A drifted output is an alarm." if alarm else "Reported only: monitor.prediction_drift.alarm is false.")
        ),
        table=Table(
            headers=("Drifted", "Output", "Method", "Score", "Threshold"),
            rows=[("DRIFT" if c.drifted else "no", name, c.method, fmt(c.score), fmt(c.threshold)) for name, c in cols],
            statuses=[("pass" if not c.drifted else moved if name == "prediction" else "info") for name, c in cols],
        ),
    )
