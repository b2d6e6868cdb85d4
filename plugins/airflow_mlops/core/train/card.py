"""The model card (markdown) and the evaluation plots (PNG) of a training run."""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from airflow_mlops.core.train.evaluation import Evaluation, GateDecision, fmt
from airflow_mlops.core.train.tasks import class_index
from airflow_mlops.core.train.window import DataSummary, partition_ranges

# Model card ------------------------------------------------------------------------------------------------


def model_card(
    *,
    model_name: str,
    version: str | None,
    data: DataSummary,
    split: Mapping[str, Any],
    estimator: str,
    params: Mapping[str, Any],
    challenger: Evaluation,
    champion: Evaluation | None,
    champion_version: str | None,
    decision: GateDecision,
    airflow_run_url: str | None,
    mlflow_run_url: str | None,
    max_chars: int | None = None,
) -> str:
    """Markdown model card: data window and partitions, content hash, metrics against the champion,
    slices, gates and outcome, and links. With `max_chars`, the slice table shrinks to fit."""
    title = f"# {model_name}" + (f" v{version}" if version else " (challenger)")
    head = [
        title,
        "",
        f"**Outcome: {decision.outcome}**"
        + (" (first run, no champion)" if decision.first_run else "")
        + f": {decision.reason}",
        "",
    ]
    links = ["## Links", ""]
    links.append(f"- Airflow run: {airflow_run_url}" if airflow_run_url else "- Airflow run: (not given)")
    links.append(f"- MLflow run: {mlflow_run_url}" if mlflow_run_url else "- MLflow run: (not given)")
    data_lines = [
        "## Data",
        "",
        f"- Pipeline `{data.pipeline}`, window {data.window_start} .. {data.window_end}",
        f"- {len(data.partitions)} partition(s): {partition_ranges(data.partitions)}",
        f"- Source: `{data.source_uri}`",
        f"- Content hash (sha256 over partition hashes): `{data.content_hash}`",
        f"- Rows: {data.rows_labelled} labelled of {data.rows_read} read",
    ]
    for part in ("train", "validation", "holdout"):
        info = split.get(part) or {}
        if info.get("days"):
            data_lines.append(f"- {part}: {info['start']} .. {info['end']} ({info['days']} days, {info['rows']} rows)")
    data_lines.append("")
    model_lines = ["## Model", "", f"- Task: {challenger.task}", f"- Estimator: `{estimator}`"]
    if challenger.classes:
        model_lines.append("- Classes: " + ", ".join(f"`{c}`" for c in challenger.classes))
    shown = {k: v for k, v in params.items() if v is not None}
    if shown:
        model_lines.append("- Params: " + ", ".join(f"`{k}={v}`" for k, v in sorted(shown.items())))
    model_lines.append("")
    champ_label = f"champion v{champion_version}" if champion_version else "champion"
    metric_lines = ["## Holdout metrics", "", f"| metric | challenger | {champ_label} | delta |", "|---|---|---|---|"]
    for key in sorted(challenger.metrics, key=lambda k: (k != challenger.primary_metric, k)):
        ch = challenger.metrics[key]
        cp = champion.metrics.get(key) if champion else None
        delta = fmt(ch - cp) if cp is not None and not math.isnan(ch) and not math.isnan(cp) else "n/a"
        name = f"**{key}**" if key == challenger.primary_metric else key
        metric_lines.append(f"| {name} | {fmt(ch)} | {fmt(cp)} | {delta} |")
    counted = f", {challenger.positives} positive" if challenger.task == "binary" else ""
    metric_lines += ["", f"{challenger.rows} holdout rows{counted}.", ""]
    gate_lines = ["## Gates", "", "| gate | threshold | observed | result | detail |", "|---|---|---|---|---|"]
    for g in decision.gates:
        gate_lines.append(
            f"| {g.name} | {fmt(g.threshold)} | {fmt(g.observed)} | {'pass' if g.passed else 'FAIL'} | {g.detail} |"
        )
    if decision.force:
        gate_lines += ["", f"Forced by **{decision.force.by}**: {decision.force.reason}"]
    gate_lines.append("")
    champ_slices = {(s.column, s.value): s.primary for s in champion.slices} if champion else {}

    def slice_lines(only_gated: bool) -> list[str]:
        out = [
            f"## Slices ({challenger.primary_metric})",
            "",
            "| column | value | rows | challenger | champion | gated |",
            "|---|---|---|---|---|---|",
        ]
        kept = [s for s in challenger.slices if s.gated or not only_gated]
        for s in kept:
            champ = fmt(champ_slices.get((s.column, s.value)))
            gated = "yes" if s.gated else "no"
            out.append(f"| {s.column} | {s.value} | {s.rows} | {fmt(s.primary)} | {champ} | {gated} |")
        for col, gap in challenger.disparity.items():
            out.append(f"\nDisparity of {col}: {fmt(gap)}")
        if only_gated and len(kept) < len(challenger.slices):
            out.append(
                f"\n{len(challenger.slices) - len(kept)} slice(s) under the row minimum left out; "
                "see the run's model_card.md."
            )
        out.append("")
        return out

    body_start = head + data_lines + model_lines + metric_lines + gate_lines
    for variant in (
        slice_lines(False),
        slice_lines(True),
        ["## Slices", "", "Left out for length; see the run's model_card.md.", ""],
    ):
        text = "\n".join(body_start + variant + links) + "\n"
        if max_chars is None or len(text) <= max_chars:
            return text
    return text[: max(0, (max_chars or 0) - 20)] + "\n\n(truncated)\n"


# Plots -----------------------------------------------------------------------------------------------------


def _png(draw: Any, size: tuple[float, float] = (5.0, 4.0)) -> bytes:
    # Figure without pyplot: no global backend state, renders with Agg.
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=100)
    ax = fig.subplots()
    draw(ax)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def roc_png(evaluations: Iterable[Evaluation]) -> bytes:
    """ROC curves of the given evaluations on one chart."""
    from sklearn.metrics import roc_curve

    def draw(ax: Any) -> None:
        for ev in evaluations:
            if ev.y_true is None or ev.y_score is None or len(np.unique(ev.y_true)) < 2:
                continue
            fpr, tpr, _ = roc_curve(ev.y_true, ev.y_score)
            ax.plot(fpr, tpr, label=f"{ev.name} (AUC {ev.metrics['roc_auc']:.3f})")
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
        ax.set(xlabel="False positive rate", ylabel="True positive rate", title="ROC (holdout)")
        ax.legend(loc="lower right")

    return _png(draw)


def precision_recall_png(evaluations: Iterable[Evaluation]) -> bytes:
    """Precision-recall curves of the given evaluations on one chart."""
    from sklearn.metrics import precision_recall_curve

    def draw(ax: Any) -> None:
        for ev in evaluations:
            if ev.y_true is None or ev.y_score is None or len(np.unique(ev.y_true)) < 2:
                continue
            precision, recall, _ = precision_recall_curve(ev.y_true, ev.y_score)
            ax.plot(recall, precision, label=f"{ev.name} (AP {ev.metrics['average_precision']:.3f})")
        ax.set(xlabel="Recall", ylabel="Precision", title="Precision-recall (holdout)", ylim=(0, 1.02))
        ax.legend(loc="upper right")

    return _png(draw)


def calibration_png(evaluations: Iterable[Evaluation], n_bins: int = 10) -> bytes:
    """Reliability diagram: mean predicted probability against the observed rate, per bin."""
    from sklearn.calibration import calibration_curve

    def draw(ax: Any) -> None:
        for ev in evaluations:
            if ev.y_true is None or ev.y_score is None or len(np.unique(ev.y_true)) < 2:
                continue
            observed, predicted = calibration_curve(ev.y_true, ev.y_score, n_bins=n_bins, strategy="quantile")
            ax.plot(predicted, observed, marker="o", label=f"{ev.name} (Brier {ev.metrics['brier']:.3f})")
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
        ax.set(xlabel="Mean predicted probability", ylabel="Observed positive rate", title="Calibration (holdout)")
        ax.legend(loc="upper left")

    return _png(draw)


def confusion_png(evaluation: Evaluation, threshold: float) -> bytes:
    """Confusion matrix of one evaluation: at the decision threshold (binary), of the most probable class
    (multiclass)."""
    from sklearn.metrics import confusion_matrix

    assert evaluation.y_true is not None and evaluation.y_score is not None
    if evaluation.task == "multiclass":
        labels = list(range(len(evaluation.classes)))
        actual = class_index(evaluation.y_true, evaluation.classes)
        predicted = np.argmax(evaluation.y_score, axis=1)
        names = [str(c) for c in evaluation.classes]
        title = f"{evaluation.name}, most probable class"
    else:
        labels, names = [0, 1], ["0", "1"]
        actual, predicted = evaluation.y_true, (evaluation.y_score >= threshold).astype("int8")
        title = f"{evaluation.name} at threshold {threshold}"
    matrix = confusion_matrix(actual, predicted, labels=labels)  # a label the model never saw is left out
    side = max(4.0, 0.5 * len(labels) + 2)

    def draw(ax: Any) -> None:
        ax.imshow(matrix, cmap="Blues")
        for (i, j), count in np.ndenumerate(matrix):
            ax.text(j, i, str(count), ha="center", va="center", color="black")
        ax.set_xticks(labels, labels=names)
        ax.set_yticks(labels, labels=names)
        ax.set(xlabel="Predicted", ylabel="Actual", title=title)

    return _png(draw, (side, side))


def residuals_png(evaluations: Iterable[Evaluation]) -> bytes:
    """Residual (actual - predicted) against the prediction, per evaluation (regression)."""

    def draw(ax: Any) -> None:
        for ev in evaluations:
            if ev.y_true is None or ev.y_score is None:
                continue
            y, p = _sampled(ev)
            ax.scatter(p, y - p, s=6, alpha=0.4, label=f"{ev.name} (RMSE {ev.metrics['rmse']:.3g})")
        ax.axhline(0.0, linestyle="--", color="grey", linewidth=1)
        ax.set(xlabel="Predicted", ylabel="Actual - predicted", title="Residuals (holdout)")
        ax.legend(loc="upper right")

    return _png(draw)


def predicted_actual_png(evaluations: Iterable[Evaluation]) -> bytes:
    """Predicted against actual values, per evaluation, with the diagonal (regression)."""

    def draw(ax: Any) -> None:
        low, high = math.inf, -math.inf
        for ev in evaluations:
            if ev.y_true is None or ev.y_score is None or not len(ev.y_true):
                continue
            y, p = _sampled(ev)
            ax.scatter(y, p, s=6, alpha=0.4, label=f"{ev.name} (R2 {fmt(ev.metrics['r2'], 3)})")
            low, high = min(low, float(np.min(y)), float(np.min(p))), max(high, float(np.max(y)), float(np.max(p)))
        if low < high:
            ax.plot([low, high], [low, high], linestyle="--", color="grey", linewidth=1)
        ax.set(xlabel="Actual", ylabel="Predicted", title="Predicted vs actual (holdout)")
        ax.legend(loc="upper left")

    return _png(draw)


def _sampled(ev: Evaluation, rows: int = 5000) -> tuple[np.ndarray, np.ndarray]:
    """At most `rows` points of a regression evaluation (a seeded draw: plots stay small and repeatable)."""
    assert ev.y_true is not None and ev.y_score is not None
    y, p = np.asarray(ev.y_true, dtype="float64"), np.asarray(ev.y_score, dtype="float64")
    if len(y) > rows:
        keep = np.sort(np.random.default_rng(0).choice(len(y), rows, replace=False))
        y, p = y[keep], p[keep]
    return y, p


def importance_png(importance: Mapping[str, float], metric: str) -> bytes:
    """Horizontal bars of permutation importance, largest at the top."""
    items = sorted(importance.items(), key=lambda kv: kv[1])

    def draw(ax: Any) -> None:
        ax.barh([k for k, _ in items], [v for _, v in items], color="tab:blue")
        ax.set(xlabel=f"Drop of {metric} when permuted", title="Permutation importance (holdout sample)")

    return _png(draw, (6.0, max(3.0, 0.3 * len(items) + 1)))


def evaluation_plots(
    challenger: Evaluation, champion: Evaluation | None, importance: Mapping[str, float], threshold: float
) -> dict[str, bytes]:
    """The run's PNG artifacts by file name. binary: ROC, precision-recall, calibration, confusion matrix;
    multiclass: confusion matrix; regression: residuals, predicted vs actual; all: feature importance."""
    both = [challenger, *([champion] if champion is not None and champion.y_score is not None else [])]
    importance_plot = importance_png(importance, challenger.primary_metric)
    if challenger.task == "regression":
        return {
            "residuals.png": residuals_png(both),
            "predicted_actual.png": predicted_actual_png(both),
            "feature_importance.png": importance_plot,
        }
    if challenger.task == "multiclass":
        return {"confusion_matrix.png": confusion_png(challenger, threshold), "feature_importance.png": importance_plot}
    return {
        "roc.png": roc_png(both),
        "precision_recall.png": precision_recall_png(both),
        "calibration.png": calibration_png(both),
        "confusion_matrix.png": confusion_png(challenger, threshold),
        "feature_importance.png": importance_plot,
    }
