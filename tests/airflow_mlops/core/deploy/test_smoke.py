"""Smoke-test decisions: each kind of failure is named; a good answer passes."""

from __future__ import annotations

import time

import pytest

from airflow_mlops.core.deploy.smoke import percentile, smoke_test

ROWS = [{"x": 1.0}, {"x": 2.0}, {"x": 3.0}]
EXPECTED = [0.1, 0.2, 0.3]


def server(version="2", scores=None, delay=0.0):
    def predict(rows):
        time.sleep(delay)
        return (scores if scores is not None else [r["x"] / 10 for r in rows]), version

    return predict


def test_good_answer_passes() -> None:
    result = smoke_test(server(), ROWS, EXPECTED, "2", latency_budget_ms=50)
    assert result.passed and result.max_abs_diff < 1e-9 and "equal offline" in result.summary()


@pytest.mark.parametrize(
    ("predict", "budget", "problem"),
    [
        (server(version="1"), 50, "server answered with version 1, expected 2"),
        (server(scores=[0.1, 0.2]), 50, "2 predictions for 3 rows"),
        (server(scores=[0.1, 0.2, 0.9]), 50, "predictions differ from offline ones by up to 0.6"),
        (server(delay=0.01), 5, "p99 latency"),
    ],
)
def test_failures_are_named(predict, budget, problem) -> None:
    result = smoke_test(predict, ROWS, EXPECTED, "2", latency_budget_ms=budget, latency_requests=5)
    assert not result.passed
    assert problem in result.summary()


def test_needs_rows() -> None:
    with pytest.raises(ValueError, match="one expected prediction per row"):
        smoke_test(server(), ROWS, [0.1], "2", latency_budget_ms=50)


def test_percentile() -> None:
    assert percentile(list(range(1, 101)), 99) == 99 and percentile([5.0], 99) == 5.0


def test_multiclass_answers_must_name_the_same_class_and_probabilities() -> None:
    expected = [{"prediction": "a", "probabilities": {"a": 0.6, "b": 0.4}}]

    def answering(prediction):
        return lambda rows: ([prediction for _ in rows], "2")

    assert smoke_test(answering(expected[0]), ROWS[:1], expected, "2", latency_budget_ms=50).passed
    close = {"prediction": "a", "probabilities": {"a": 0.6 + 1e-9, "b": 0.4}}
    assert smoke_test(answering(close), ROWS[:1], expected, "2", latency_budget_ms=50).passed
    for wrong in ({"prediction": "b", "probabilities": {"a": 0.6, "b": 0.4}}, 0.6):
        result = smoke_test(answering(wrong), ROWS[:1], expected, "2", latency_budget_ms=50)
        assert not result.passed and "predictions differ from offline ones by up to inf" in result.summary()
