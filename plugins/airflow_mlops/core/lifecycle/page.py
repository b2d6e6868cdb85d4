"""The lifecycle pages as HTML: every value from data escaped, every link checked, no template, no script."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote

from airflow_mlops.config.train import LOWER_IS_BETTER
from airflow_mlops.core.lifecycle import svg
from airflow_mlops.core.lifecycle.data import MonitorPoint, PipelineData, RunRef, Version
from airflow_mlops.core.report import CSS as REPORT_CSS

KINDS = ("ingest", "train", "deploy", "score", "monitor")
TOP_COLUMNS = 6
"""Per-column drift scores plotted: the columns with the highest latest scores."""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def safe_url(url: str | None) -> str | None:
    """The URL if it is http(s) or a path on this origin; None for anything else (javascript:, data:, //host)."""
    if not url:
        return None
    if url.startswith(("http://", "https://")) or (url.startswith("/") and not url.startswith("//")):
        return url
    return None


def link(text: object, url: str | None) -> str:
    """An escaped anchor, or the escaped text alone when the URL is missing or not allowed."""
    checked = safe_url(url)
    return f'<a href="{_e(checked)}">{_e(text)}</a>' if checked else _e(text)


@dataclass(frozen=True)
class Urls:
    """Where the links go: Airflow's UI, the plugin's routes, the MLflow UI."""

    airflow: str = ""
    """Base of the Airflow UI ('' when served at the root)."""
    plugin: str = "/mlops"
    mlflow: str | None = None

    def dag(self, dag_id: str) -> str:
        return f"{self.airflow}/dags/{quote(dag_id, safe='')}"

    def dag_run(self, dag_id: str | None, run_id: str | None) -> str | None:
        if not dag_id or not run_id:
            return None
        return f"{self.dag(dag_id)}/runs/{quote(run_id, safe='')}"

    def task(self, dag_id: str | None, run_id: str | None, task_id: str) -> str | None:
        run = self.dag_run(dag_id, run_id)
        return f"{run}/tasks/{quote(task_id, safe='')}" if run else None

    def lake(self, path: str | None) -> str | None:
        return f"{self.plugin}/lake/{quote(path, safe='/=')}" if path else None

    def pipeline(self, pipeline: str) -> str:
        return f"{self.plugin}/lifecycle/{quote(pipeline, safe='')}"

    def home(self) -> str:
        return f"{self.plugin}/lifecycle/"

    def mlflow_run(self, ref: RunRef | None) -> str | None:
        if not self.mlflow or ref is None or not ref.experiment_id:
            return None
        return f"{self.mlflow}/#/experiments/{quote(ref.experiment_id, safe='')}/runs/{quote(ref.run_id, safe='')}"

    def model_version(self, name: str, version: str) -> str | None:
        if not self.mlflow:
            return None
        return f"{self.mlflow}/#/models/{quote(name, safe='')}/versions/{quote(version, safe='')}"


@dataclass(frozen=True)
class DagRunState:
    dag_id: str
    run_id: str
    state: str
    when: str | None


@dataclass(frozen=True)
class PendingApproval:
    """A Required Actions entry waiting for a person."""

    dag_id: str
    run_id: str
    task_id: str
    subject: str
    since: str | None


@dataclass(frozen=True)
class AirflowState:
    """What Airflow's metadata database says about a pipeline's DAGs."""

    last_runs: Mapping[str, DagRunState] = field(default_factory=dict)
    """Per DAG kind (ingest, train, ...), its latest run."""
    failed: Sequence[DagRunState] = ()
    """Failed runs not followed by a success of the same DAG."""
    pending: Sequence[PendingApproval] = ()


CSS = (
    REPORT_CSS
    + "\n"
    + svg.CSS
    + """
.state{display:inline-block;padding:1px 8px;border-radius:10px;font-size:.8rem;background:#eceef2}
.state.success,.state.passed,.state.ok{background:#e3f6e8;color:#1b5e20}
.state.failed,.state.fail,.state.drift,.state.quality_drop,.state.estimated_drop{background:#fde8e8;color:#b71c1c}
.state.running,.state.queued,.state.deferred,.state.forced,.state.stale{background:#fff4e0;color:#8a5300}
.attention{border-left:5px solid #c62828}
nav.crumbs{margin-bottom:12px;font-size:.9rem}
td.num{font-variant-numeric:tabular-nums;white-space:nowrap}
ul.tight{margin:0;padding-left:18px}
"""
)


def _state(value: str | None) -> str:
    text = value or "none"
    return f'<span class="state {_e(text.lower())}">{_e(text)}</span>'


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _page(title: str, body: Sequence[str], urls: Urls) -> str:
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body><main>",
            f'<nav class="crumbs">{link("ML lifecycle", urls.home())}</nav>',
            f"<h1>{_e(title)}</h1>",
            *body,
            "<footer>Generated by airflow-mlops.</footer></main></body></html>",
        ]
    )


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A table of cells that are already HTML (each built from escaped parts)."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _section(title: str, inner: str, cls: str = "info", anchor: str = "") -> str:
    ident = f' id="{_e(anchor)}"' if anchor else ""
    return f'<section class="{_e(cls)}"{ident}><h2>{_e(title)}</h2>{inner}</section>'


# The list of pipelines ------------------------------------------------------------------------------------


def needs_person(data: PipelineData, state: AirflowState) -> list[str]:
    """Why a person should look at the pipeline now (empty: nothing)."""
    why = [f"approval pending: {p.subject}" for p in state.pending]
    why += [f"quarantined batch {source} {q.ds}" for source, q in data.open_quarantines()]
    why += [f"failed run {r.dag_id} {r.run_id}" for r in state.failed]
    why += [f"cannot read {e}" for e in data.errors]
    return why


def _serving(data: PipelineData, urls: Urls) -> str:
    champion = data.version(data.champion)
    if data.champion is None:
        return "no champion yet"
    since = data.champion_since() or (champion.created if champion else None)
    metric = f"{data.primary_metric} {_num(champion.metric)}" if champion else ""
    return (
        f"{link(f'v{data.champion}', urls.model_version(data.model_name, data.champion))} "
        f"since {_e(since or '?')}<br>{_e(metric)} on its holdout"
    )


def render_index(rows: Sequence[tuple[PipelineData, AirflowState]], urls: Urls, hidden: int = 0) -> str:
    """The list of pipelines the user may read: serving model, last runs, what needs a person."""
    table_rows = []
    for data, state in rows:
        last = []
        for kind in ("ingest", "score", "monitor"):
            run = state.last_runs.get(kind)
            cell = link(run.when or run.run_id, urls.dag_run(run.dag_id, run.run_id)) if run else "never"
            last.append(f"{_state(run.state if run else None)} {cell}")
        attention = needs_person(data, state)
        table_rows.append(
            [
                link(data.pipeline, urls.pipeline(data.pipeline)),
                _serving(data, urls),
                *last,
                "<ul class='tight'>" + "".join(f"<li>{_e(a)}</li>" for a in attention) + "</ul>" if attention else "no",
            ]
        )
    body = [
        _section(
            "Pipelines",
            _table(
                ("Pipeline", "Serving now", "Last ingest", "Last score", "Last monitor", "Needs a person"), table_rows
            )
            if table_rows
            else "<p>No pipeline you may read.</p>",
        )
    ]
    if hidden:
        body.append(f"<p>{hidden} pipeline(s) you may not read are not shown.</p>")
    return _page("ML lifecycle", body, urls)


# The page of one pipeline ---------------------------------------------------------------------------------


def _why(v: Version, urls: Urls) -> str:
    if v.trigger == "monitor":
        text = f"monitor alarm: {_e(v.reason)}"
        return text + (f" ({link('report', urls.lake(v.monitor_report))})" if v.monitor_report else "")
    if v.trigger == "forced":
        return f"forced by {_e(v.forced_by)}: {_e(v.force_reason or '')}<br>reason: {_e(v.reason)}"
    return f"{_e(v.trigger)}: {_e(v.reason)}"


def _gates(v: Version) -> str:
    if not v.gates:
        return _state(v.gate_outcome)
    failed = [g for g in v.gates if not g.passed]
    detail = (
        "all passed"
        if not failed
        else "failed: " + ", ".join(f"{g.name} ({_num(g.observed)} vs {_num(g.threshold)})" for g in failed)
    )
    return f"{_state(v.gate_outcome)} {_e(detail)}"


def _versions(data: PipelineData, pipeline: str, urls: Urls) -> str:
    rows = []
    for v in data.versions:
        run = v.run
        dag_id, dag_run_id = (run.dag_id, run.dag_run_id) if run else (None, None)
        links = [
            link("DAG run", urls.dag_run(dag_id, dag_run_id)),
            link("task log", urls.task(dag_id, dag_run_id, "train")),
            link("MLflow run", urls.mlflow_run(run)),
            link("model version", urls.model_version(data.model_name, v.version)),
        ]
        if v.monitor_report:
            links.append(link("drift report", urls.lake(v.monitor_report)))
        status = " ".join(_state(a) for a in v.aliases)
        if v.rolled_back:
            status += f" rolled back: {_e(v.rolled_back)}"
        if v.approved_by:
            status += f" approved by {_e(v.approved_by)}"
        rows.append(
            [
                f"<b>v{_e(v.version)}</b> {status}",
                _e(v.created or "?"),
                f"{_e(v.window or '?')} ({_e(v.partition_count or '?')} partitions)"
                f"<br><code>{_e(v.content_hash or '?')}</code>",
                _why(v, urls),
                _gates(v),
                f'<span class="num">{_num(v.metric)}</span>',
                " · ".join(links),
            ]
        )
    headers = ("Version", "Trained", "Window and data hash", "Why", "Gates", data.primary_metric, "Links")
    inner = _table(headers, rows) if rows else "<p>No version registered yet.</p>"
    return _section(f"Versions of {data.model_name}", inner, anchor="versions")


def _timeline(data: PipelineData, pipeline: str, urls: Urls) -> str:
    rows = []
    deploy = f"{pipeline}__deploy"
    for record in reversed(data.audit):
        task = {"promote": "promote", "rollback": "rollback"}.get(record.action, "approve")
        what = {
            "promote": f"v{record.champion} became champion"
            + (f" (replaced v{record.replaced})" if record.replaced else ""),
            "rollback": f"v{record.replaced} rolled back; champion back on "
            + (f"v{record.champion}" if record.champion else "none"),
            "approve": f"v{record.champion} approved",
            "reject": f"v{record.champion} not approved",
        }.get(record.action, record.action)
        rows.append(
            [
                _e(record.when),
                _state(record.action),
                _e(what),
                _e(record.who),
                _e(record.why),
                link("DAG run", urls.dag_run(deploy, record.dag_run_id))
                + " · "
                + link("task log", urls.task(deploy, record.dag_run_id, task)),
            ]
        )
    inner = _table(("When", "Action", "What", "Who", "Why", "Links"), rows) if rows else "<p>No promotion yet.</p>"
    return _section("Champion timeline", inner, anchor="timeline")


def _charts(points: Sequence[MonitorPoint], primary: str) -> str:
    if not points:
        return "<p>No monitor run yet.</p>"
    marks = svg.Marks(alarms=[p.ds for p in points if p.alarms], retrains=[p.ds for p in points if p.retrain])
    shares = [svg.Series("drift share", [(p.ds, p.drift_share) for p in points])]
    if any(p.weighted_share is not None for p in points):
        shares.append(svg.Series("weighted by importance", [(p.ds, p.weighted_share) for p in points]))
    share = svg.line_chart("Share of drifted columns", shares, marks, (0.0, 1.0))
    latest = next((p.column_scores for p in reversed(points) if p.column_scores), {})
    top = sorted(latest, key=lambda c: -latest[c])[:TOP_COLUMNS]
    columns = svg.line_chart(
        f"Drift score per column (top {len(top)} by latest score)",
        [svg.Series(c, [(p.ds, p.column_scores.get(c)) for p in points]) for c in top],
        svg.Marks(retrains=marks.retrains),
    )
    better = "lower" if primary in LOWER_IS_BETTER else "higher"
    quality = svg.line_chart(
        f"{primary} on matured labels vs the champion's holdout figure ({better} is better)",
        [
            svg.Series(f"{primary} (production)", [(p.ds, p.quality) for p in points]),
            svg.Series("champion holdout", [(p.ds, p.baseline) for p in points], dashed=True, color="#7f7f7f"),
        ]
        + (
            [
                svg.Series(f"{primary} estimated (no labels)", [(p.ds, p.estimated) for p in points]),
                svg.Series("holdout estimate", [(p.ds, p.estimated_baseline) for p in points], dashed=True),
            ]
            if any(p.estimated is not None for p in points)
            else []
        ),
        marks,
    )
    return _alarm_record(points) + share + _prediction_chart(points, marks) + columns + quality


def _alarm_record(points: Sequence[MonitorPoint]) -> str:
    """How the monitor's retrains turned out, as of its latest run: a retrain that did not pass the gates counts
    against the alarm that asked for it."""
    latest = next((p for p in reversed(points) if p.alarm_retrains is not None), None)
    if latest is None or not latest.alarm_retrains:
        return ""
    retrains, promoted = int(latest.alarm_retrains), int(latest.alarm_promoted or 0)
    return (
        f"<p>Alarms followed by a promoted model: <b>{promoted} of {retrains}</b> retrain(s) the monitor triggered "
        f"passed the gates ({promoted / retrains:.0%}), as of {_e(latest.ds)}.</p>"
    )


def _prediction_chart(points: Sequence[MonitorPoint], marks: svg.Marks) -> str:
    """The champion's output drift score per day, drifted days as dots; a note when no run measured it."""
    if all(p.prediction_drift is None for p in points):
        return (
            "<p>No prediction drift recorded: the monitor runs predate it, or monitor.prediction_drift.enabled "
            "is false.</p>"
        )
    return svg.line_chart(
        "Prediction drift score of the champion's output (dots: drifted)",
        [svg.Series("prediction drift", [(p.ds, p.prediction_drift) for p in points])],
        svg.Marks(
            alarms=[p.ds for p in points if p.prediction_drifted],
            retrains=marks.retrains,
            alarm_label="prediction drifted",
        ),
    )


def _monitoring(data: PipelineData, urls: Urls) -> str:
    points = data.monitoring
    rows = []
    for p in reversed(points[-30:]):
        rows.append(
            [
                _e(p.ds),
                _state(p.outcome) + (" retrain triggered" if p.retrain else ""),
                _e(f"v{p.champion_version}" if p.champion_version else "none"),
                f'<span class="num">{_num(p.drift_share)}</span>',
                f'<span class="num">{_num(p.prediction_drift)}</span>' + (" drifted" if p.prediction_drifted else ""),
                f'<span class="num">{_num(p.quality)} / {_num(p.baseline)}</span>',
                link("report", urls.lake(p.report))
                + " · "
                + link("DAG run", urls.dag_run(p.run.dag_id, p.run.dag_run_id))
                + " · "
                + link("task log", urls.task(p.run.dag_id, p.run.dag_run_id, "monitor"))
                + " · "
                + link("MLflow run", urls.mlflow_run(p.run)),
            ]
        )
    table = (
        _table(
            (
                "Date",
                "Outcome",
                "Champion",
                "Drift share",
                "Prediction drift",
                f"{data.primary_metric} / holdout",
                "Links",
            ),
            rows,
        )
        if rows
        else ""
    )
    note = f"<p>{len(points)} monitor runs; the table shows the latest 30.</p>" if len(points) > 30 else ""
    return _section("Monitoring", _charts(points, data.primary_metric) + note + table, anchor="monitoring")


def _validation(data: PipelineData, urls: Urls) -> str:
    rows = []
    for v in data.validation:
        latest = (
            f"{_state('passed' if v.latest_passed else 'failed')} {link(v.latest_ds, urls.lake(v.report))}"
            if v.latest_ds
            else "never validated"
        )
        quarantined = [
            f"<li>{_e(q.ds)}{' (open)' if q.open else ' (re-ingested since)'}: "
            + ", ".join(link(f.rsplit("/", 1)[-1], urls.lake(f)) for f in q.files)
            + "</li>"
            for q in v.quarantined[:20]
        ]
        rows.append([_e(v.source), latest, f"<ul class='tight'>{''.join(quarantined)}</ul>" if quarantined else "none"])
    inner = (
        _table(("Source", "Latest validation", "Quarantined batches"), rows) if rows else "<p>Lake not readable.</p>"
    )
    return _section("Data validation", inner, anchor="validation")


def _attention(data: PipelineData, state: AirflowState, urls: Urls) -> str:
    items = [
        f"<li>Approval pending since {_e(p.since or '?')}: {_e(p.subject)} "
        f"({link('Required action', (urls.task(p.dag_id, p.run_id, p.task_id) or '') + '/required_actions')})</li>"
        for p in state.pending
    ]
    items += [
        f"<li>Quarantined batch of {_e(source)} for {_e(q.ds)} "
        f"({link('report', urls.lake(f'reports/{data.pipeline}/validation/{source}/date={q.ds}/report.html'))})</li>"
        for source, q in data.open_quarantines()
    ]
    items += [
        f"<li>Failed run {link(f'{r.dag_id} {r.run_id}', urls.dag_run(r.dag_id, r.run_id))}</li>" for r in state.failed
    ]
    items += [f"<li>Could not read {_e(e)}</li>" for e in data.errors]
    if not items:
        return _section("Needs a person", "<p>Nothing.</p>", "pass", "attention")
    return _section("Needs a person", f"<ul>{''.join(items)}</ul>", "fail", "attention")


def render_pipeline(data: PipelineData, state: AirflowState, urls: Urls) -> str:
    """The lifecycle page of one pipeline."""
    dags = " · ".join(link(kind, urls.dag(f"{data.pipeline}__{kind}")) for kind in KINDS)
    last = " · ".join(
        f"{_e(kind)} {_state(run.state)} {link(run.when or run.run_id, urls.dag_run(run.dag_id, run.run_id))}"
        for kind, run in state.last_runs.items()
    )
    head = _section(
        "Serving now",
        f"<p>{_serving(data, urls)}</p><p>DAGs: {dags}</p><p>Last runs: {last or 'none'}</p>"
        f"<p>Read {_e(data.read_at)}.</p>",
        anchor="serving",
    )
    body = [
        head,
        _attention(data, state, urls),
        _versions(data, data.pipeline, urls),
        _timeline(data, data.pipeline, urls),
        _monitoring(data, urls),
        _validation(data, urls),
    ]
    return _page(f"ML lifecycle of {data.pipeline}", body, urls)
