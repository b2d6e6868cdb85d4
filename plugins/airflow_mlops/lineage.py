"""What each step read and wrote, as OpenLineage datasets (lake partitions by URI, MLflow models by model URI)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

LAKE_FILE_NAMESPACE = "file"
"""OpenLineage's namespace of local files (their name is the absolute path); S3 objects: `s3://<bucket>`."""


@dataclass(frozen=True)
class DatasetRef:
    """One OpenLineage dataset: namespace and name (OpenLineage's naming), and the version read or written.

    `version` is the content hash of a lake partition, or the version number behind a model URI or alias.
    """

    namespace: str
    name: str
    version: str | None = None


def lake_ref(uri: str, version: str | None = None) -> DatasetRef:
    """A lake file or partition folder: `s3://bucket/key` -> (`s3://bucket`, `key`); a local path -> (`file`, path)."""
    if uri.startswith("s3://"):
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        return DatasetRef(f"s3://{bucket}", key, version)
    return DatasetRef(LAKE_FILE_NAMESPACE, uri.removeprefix("file://"), version)


def mlflow_namespace(tracking_uri: str) -> str:
    """The MLflow server as a namespace, without any credentials a URI might carry."""
    parts = urlsplit(tracking_uri)
    if not parts.netloc:
        return tracking_uri.rstrip("/")
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


def model_ref(tracking_uri: str, model_uri: str, version: str | None = None) -> DatasetRef:
    """A model by its MLflow URI: `models:/<name>/<version>`, `models:/<name>@<alias>` or a logged `models:/m-...`."""
    return DatasetRef(mlflow_namespace(tracking_uri), model_uri, version)


def version_ref(tracking_uri: str, name: str, version: str | int) -> DatasetRef:
    """A registered model version: `models:/<name>/<version>`."""
    return model_ref(tracking_uri, f"models:/{name}/{version}", str(version))


def alias_ref(tracking_uri: str, name: str, alias: str, version: str | int | None) -> DatasetRef:
    """A registry alias (`champion`) and the version it points to (None: unset)."""
    return model_ref(tracking_uri, f"models:/{name}@{alias}", None if version is None else str(version))


@dataclass
class StepLineage:
    """What a step read and wrote, filled in by the operator while it runs; `failed_outputs` is what a failed
    run leaves behind instead (a quarantined batch, a champion put back)."""

    inputs: list[DatasetRef] = field(default_factory=list)
    outputs: list[DatasetRef] = field(default_factory=list)
    failed_outputs: list[DatasetRef] = field(default_factory=list)

    def operator_lineage(self, failed: bool = False) -> Any:
        """The provider's OperatorLineage (imported here: only the OpenLineage listener calls this)."""
        from airflow.providers.openlineage.extractors import OperatorLineage

        outputs = self.failed_outputs if failed else self.outputs
        return OperatorLineage(inputs=[ol_dataset(d) for d in self.inputs], outputs=[ol_dataset(d) for d in outputs])


def ol_dataset(ref: DatasetRef) -> Any:
    """An OpenLineage Dataset; the version as the standard `version` dataset facet."""
    from openlineage.client.event_v2 import Dataset
    from openlineage.client.facet_v2 import dataset_version_dataset

    facets: dict[str, Any] = {}
    if ref.version is not None:
        facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=ref.version)
    return Dataset(namespace=ref.namespace, name=ref.name, facets=facets)
