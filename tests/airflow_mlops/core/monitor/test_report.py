"""The monitor's page: the prediction drift section beside the decision."""

from __future__ import annotations

from airflow_mlops.core.monitor.decision import decide
from airflow_mlops.core.monitor.report import render_monitor_html
from tests.fixtures.monitoring import check_outputs, monitored_config, multiclass_outputs


def test_multiclass_prediction_drift_section_marks_the_verdict_apart_from_the_probabilities() -> None:
    classes = ["early", "on_time", "late"]
    reference, current = multiclass_outputs(0, [2, 5, 2], classes), multiclass_outputs(2, [2, 2, 5], classes)
    outputs = check_outputs(reference, current, "multiclass")
    cfg = monitored_config("report")
    decision = decide(cfg, None, None, {}, blocker=None, train_active=False, prediction=outputs)
    page = render_monitor_html(cfg, "2013-03-27", decision, {"Pipeline": cfg.name}, None, None, None, [], outputs)
    assert '<section class="warn"><h2>Prediction drift (3 of 4 outputs drifted)</h2>' in page
    assert "class probabilities are shown, not judged. Reported only: monitor.prediction_drift.alarm is false." in page
    assert '<tr class="warn"><td>DRIFT</td><td>prediction</td><td>jensenshannon</td>' in page
    assert '<tr class="info"><td>DRIFT</td><td>proba.late</td>' in page
    assert "Evidently data drift report" not in page  # the outputs' own Evidently page is not rendered
