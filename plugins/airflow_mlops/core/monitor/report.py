"""The monitor's HTML page: the decision, drift per column, quality, the rows read and Evidently's report."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Literal

from airflow_mlops.config.train import METRIC_NAMES
from airflow_mlops.core.monitor.decision import fmt, quality_reason
from airflow_mlops.core.report import Link, Section, Table, Verdict, render_report

if TYPE_CHECKING:
    from airflow_mlops.config import PipelineConfig
    from airflow_mlops.core.monitor.current import CurrentData
    from airflow_mlops.core.monitor.decision import Decision
    from airflow_mlops.core.monitor.drift import DriftResult
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
) -> str:
    """The monitor's page: verdict and reasons, drift per column, quality, rows read, then Evidently's report."""
    label = decision.outcome.replace("_", " ").upper()
    summary = decision.reasons[0] if decision.reasons else decision.outcome
    if decision.retrain:
        summary = f"retrain triggered; {summary}"
    verdict = Verdict(ok=not decision.alarms, summary=summary, labels=(label, label))
    status: Literal["fail", "warn", "pass"] = (
        "fail" if decision.alarms else ("warn" if decision.outcome != "ok" else "pass")
    )
    sections = [Section(title="Decision", text="\n\n".join(decision.reasons), status=status)]
    if drift is not None:
        cols = list(drift.columns.items())
        sections.append(
            Section(
                title=f"Drift per column ({len(drift.drifted_columns)} of {len(cols)} drifted)",
                status="fail" if drift.drifted else "pass",
                text=(
                    f"Reference: {drift.rows_reference} rows of the champion's training days; current: "
                    f"{drift.rows_current} sampled production rows. Drift of the data when at least "
                    f"{drift.share_threshold:.0%} of the columns drift, or a critical column does."
                ),
                table=Table(
                    headers=("Drifted", "Column", "Method", "Score", "Threshold", "Critical"),
                    rows=[
                        (
                            "DRIFT" if c.drifted else "no",
                            name,
                            c.method,
                            fmt(c.score),
                            fmt(c.threshold),
                            "yes" if name in critical else "",
                        )
                        for name, c in cols
                    ],
                    statuses=["fail" if c.drifted else "pass" for _, c in cols],
                ),
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
