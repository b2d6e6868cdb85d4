"""OpenLineage datasets of the steps: lake URIs and MLflow model URIs named as OpenLineage names them."""

from __future__ import annotations

from airflow_mlops.lineage import StepLineage, alias_ref, lake_ref, mlflow_namespace, version_ref


def test_lake_uris_follow_openlineage_naming() -> None:
    s3 = lake_ref("s3://mlops/lake/features/p/date=2013-01-01/features.parquet", "abc")
    assert (s3.namespace, s3.name, s3.version) == (
        "s3://mlops",
        "lake/features/p/date=2013-01-01/features.parquet",
        "abc",
    )
    local = lake_ref("/srv/lake/raw/p/flights/date=2013-01-01/flights.parquet")
    assert (local.namespace, local.name, local.version) == (
        "file",
        "/srv/lake/raw/p/flights/date=2013-01-01/flights.parquet",
        None,
    )
    assert lake_ref("file:///srv/lake/x").name == "/srv/lake/x"


def test_model_namespaces_carry_no_credentials() -> None:
    assert mlflow_namespace("https://alice:secret@mlflow.example.com:5000/") == "https://mlflow.example.com:5000"
    assert mlflow_namespace("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    v = version_ref("http://u:p@h:5000", "flight_delays", 3)
    assert (v.namespace, v.name, v.version) == ("http://h:5000", "models:/flight_delays/3", "3")
    assert alias_ref("http://h:5000", "flight_delays", "champion", None).name == "models:/flight_delays@champion"


def test_operator_lineage_puts_versions_in_the_standard_facet() -> None:
    from openlineage.client.serde import Serde

    step = StepLineage(
        inputs=[lake_ref("/lake/features/p/date=2013-01-01/features.parquet", "h1")],
        outputs=[version_ref("http://h:5000", "p", "2")],
        failed_outputs=[lake_ref("/lake/quarantine/p/flights/date=2013-01-01")],
    )
    done = step.operator_lineage()
    (inp,), (out,) = done.inputs, done.outputs
    assert Serde.to_dict(inp)["facets"]["version"]["datasetVersion"] == "h1"
    assert (out.namespace, out.name, out.facets["version"].datasetVersion) == ("http://h:5000", "models:/p/2", "2")
    failed = step.operator_lineage(failed=True)
    assert [d.name for d in failed.outputs] == ["/lake/quarantine/p/flights/date=2013-01-01"]
    assert failed.outputs[0].facets == {}
