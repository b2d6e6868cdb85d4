"""One bad pipeline file breaks one pipeline: the others' DAGs build, and its problems are the import error of
dags/mlops_pipeline_errors.py (file:line, key, problem), also once Airflow has stored the parse in its database."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from airflow_mlops import settings

DAGS = Path(__file__).resolve().parents[2] / "dags"
SHIPPED = settings.include_dir() / "pipelines" / "flight_delays.yaml"
KINDS = ("ingest", "train", "deploy", "score", "monitor")


def write(folder: Path, name: str, **derived: str) -> Path:
    data = yaml.safe_load(SHIPPED.read_text())
    data["name"] = name
    data["features"]["derived"].update(derived)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def line_of(path: Path, start: str) -> int:
    return next(i for i, text in enumerate(path.read_text().splitlines(), 1) if text.strip().startswith(start))


@pytest.fixture()
def pipelines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A pipelines folder with one good file and one whose derived feature names an unknown column."""
    folder = tmp_path / "pipelines"
    folder.mkdir()
    monkeypatch.setenv(settings.ENV_PIPELINES_DIR, str(folder))
    write(folder, "good_flights")
    bad = write(folder, "broken", velocity="distance / air_tme")
    return folder, bad


def expected_problem(bad: Path) -> str:
    return f"{bad}:{line_of(bad, 'velocity:')}: features.derived.velocity: unknown column 'air_tme'"


def test_the_good_pipeline_builds_and_the_bad_one_is_an_import_error(pipelines: tuple[Path, Path]) -> None:
    from airflow.dag_processing.dagbag import DagBag

    _, bad = pipelines
    bag = DagBag(dag_folder=str(DAGS))
    assert set(bag.dag_ids) == {f"good_flights__{kind}" for kind in KINDS}
    assert set(bag.import_errors) == {str(DAGS / "mlops_pipeline_errors.py")}
    error = bag.import_errors[str(DAGS / "mlops_pipeline_errors.py")]
    assert expected_problem(bad) in error, error
    assert "`air_tme`" in error  # the offending part of the expression


def test_the_stored_parse_keeps_the_good_dags_active(airflow_db: None, pipelines: tuple[Path, Path]) -> None:
    """What the UI reads: the dag-processor's records of the parse (DAGs, their staleness, import errors)."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db
    from airflow.models.dag import DagModel
    from airflow.models.errors import ParseImportError
    from airflow.utils.session import create_session
    from sqlalchemy import select

    _, bad = pipelines
    DagBundlesManager().sync_bundles_to_db()
    bundle = next(iter(DagBundlesManager().get_all_dag_bundles()))

    def parse_and_store() -> tuple[dict[str, DagModel], dict[str, str]]:
        bag = BundleDagBag(dag_folder=str(DAGS), bundle_path=DAGS, bundle_name=bundle.name)
        sync_bag_to_db(bag, bundle.name, None)
        with create_session() as session:
            dags = {
                d.dag_id: d
                for d in session.scalars(select(DagModel).where(DagModel.dag_id.like("good_flights__%"))).all()
            }
            errors = {e.filename: e.stacktrace for e in session.scalars(select(ParseImportError)).all()}
            session.expunge_all()
        return dags, errors

    dags, errors = parse_and_store()
    assert set(dags) == {f"good_flights__{kind}" for kind in KINDS}
    assert not any(d.is_stale or d.has_import_errors for d in dags.values())
    assert expected_problem(bad) in errors["mlops_pipeline_errors.py"]
    assert "mlops_pipelines.py" not in errors

    bad.unlink()  # fixed (here: removed): the import error goes away with the next parse
    _, errors = parse_and_store()
    assert "mlops_pipeline_errors.py" not in errors


def test_a_pipeline_whose_dags_do_not_build_is_left_out_and_reported(
    pipelines: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_mlops import factory
    from airflow_mlops.config import PipelineConfigError

    folder, bad = pipelines
    bad.unlink()
    write(folder, "other_flights")
    original = factory.build_monitor_dag

    def failing(cfg):
        if cfg.name == "other_flights":
            raise ValueError("no monitor today")
        return original(cfg)

    monkeypatch.setattr(factory, "build_monitor_dag", failing)
    monkeypatch.setattr(factory, "BUILDERS", tuple(failing if b is original else b for b in factory.BUILDERS))
    dags = factory.build_all()
    assert {d for d in dags if d.startswith("good_flights__")} == {f"good_flights__{kind}" for kind in KINDS}
    assert not any(d.startswith("other_flights__") for d in dags)
    with pytest.raises(PipelineConfigError) as err:
        factory.raise_pipeline_problems()
    assert (
        str(err.value)
        == f"{folder / 'other_flights.yaml'}: (dags): its DAGs cannot be built: ValueError: no monitor today"
    )
