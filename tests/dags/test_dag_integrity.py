"""DagBag integrity over dags/: no import errors, tags, retries and timeouts on every task."""

from __future__ import annotations

from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_no_import_errors(dagbag) -> None:
    assert dagbag.import_errors == {}


def test_every_pipeline_has_its_dags(dagbag) -> None:
    from airflow_mlops.config import load_pipelines

    for cfg in load_pipelines():
        assert cfg.dag_id("ingest") in dagbag.dag_ids


def test_tags_retries_and_timeouts(dagbag) -> None:
    from airflow.providers.standard.operators.hitl import HITLOperator

    assert dagbag.dags
    for dag_id, dag in dagbag.dags.items():
        assert "mlops" in dag.tags, dag_id
        assert dag.doc_md, dag_id
        for task in dag.tasks:
            # A human-approval task is never retried: a retry would ask again after an unanswered request.
            if not isinstance(task, HITLOperator):
                assert task.retries >= 2, f"{dag_id}.{task.task_id} retries={task.retries}"
            assert task.execution_timeout is not None, f"{dag_id}.{task.task_id} has no execution_timeout"


def test_ingest_shape(dagbag) -> None:
    dag = dagbag.dags["flight_delays__ingest"]
    assert dag.get_task("step_cache").upstream_task_ids == set()  # first: a rerun with nothing to do ends there
    for source in ("flights", "weather", "outcomes", "planes"):
        assert dag.get_task(f"wait_for_{source}").upstream_task_ids == {"step_cache"}
        assert dag.get_task(f"ingest_{source}").upstream_task_ids == {f"wait_for_{source}"}
        assert dag.get_task(f"validate_{source}").upstream_task_ids == {f"ingest_{source}"}
    features = dag.get_task("build_features")
    assert features.upstream_task_ids == {
        "validate_flights",
        "validate_weather",
        "validate_outcomes",
        "validate_planes",
    }
    assert [o.name for o in features.outlets] == ["flight_delays.features"]


def test_every_trigger_form_submits_with_its_defaults(dagbag) -> None:
    """What the trigger form sends when a person changes nothing: each field's default (an empty field is null).
    It must pass the field's JSON schema (the form refuses it otherwise: a non-null field without a value is
    required) and the DAG's own params validation (the API refuses the run otherwise)."""
    import jsonschema

    checked = 0
    for dag_id, dag in sorted(dagbag.dags.items()):
        for name, param in dag.params.items():
            param = dag.params.get_param(name)
            submitted = None if param.value in ("", None) else param.value
            try:
                jsonschema.validate(submitted, param.schema)
            except jsonschema.ValidationError as exc:
                raise AssertionError(
                    f"{dag_id}: field {name!r} refuses its default {submitted!r}: {exc.message}"
                ) from exc
            assert param.resolve(submitted) == submitted, f"{dag_id}.{name}"
            if submitted is None:
                types = param.schema.get("type", [])
                assert "null" in (types if isinstance(types, list) else [types]), f"{dag_id}: {name} would be required"
            checked += 1
        dag.params.validate()
    assert checked >= 9  # the demo pipeline alone: train 5 fields, deploy 2, score 1, monitor 1


def test_second_pipeline_beside_the_first(dagbag) -> None:
    """nyc_weather (a regression on replayed weather) has its five DAGs, its own source and its own Asset."""
    for kind in ("ingest", "train", "deploy", "score", "monitor"):
        assert f"nyc_weather__{kind}" in dagbag.dag_ids and f"flight_delays__{kind}" in dagbag.dag_ids
    dag = dagbag.dags["nyc_weather__ingest"]
    assert dag.get_task("validate_readings").upstream_task_ids == {"ingest_readings"}
    features = dag.get_task("build_features")
    assert features.upstream_task_ids == {"validate_readings"}
    assert [o.name for o in features.outlets] == ["nyc_weather.features"]
