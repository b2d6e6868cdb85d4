"""Model files: skops only, with an allow-list of trusted types; the logged model's signature and input rows."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import yaml

import airflow_mlops_model
from airflow_mlops.core.registry.retry import RetryPolicy, TrackingError, retrying
from airflow_mlops.core.train.training import FeatureSpec
from airflow_mlops.errors import PermanentError
from airflow_mlops_model.steps import base_columns, input_types

# skops looks up every object's module by walking sys.modules with getattr; inside Airflow that touches
# Airflow's deprecated-import shims, which warn once per name (over a thousand log lines per save or load).
warnings.filterwarnings("ignore", category=FutureWarning, module=r"skops\.io\._utils")

TRUSTED_TYPES: tuple[str, ...] = (
    # Beyond skops' defaults (builtins, numpy, public sklearn estimators): what our pipelines contain.
    "airflow_mlops_model.steps.DerivedFeatures",
    "airflow_mlops_model.steps.FeatureFrame",
    "airflow_mlops.core.train.training.FeatureFrame",  # where FeatureFrame lived in models logged before
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    # ColumnTransformer keeps passthrough columns as FunctionTransformer(partial(check_array, ...)).
    "functools.partial",
    "sklearn.utils.validation.check_array",
    # SimpleImputer (numeric_impute: median or mean) keeps the dtype it was fitted on.
    "numpy.dtype",
)
"""Types a model may hold to be saved or loaded by this project; anything else is refused."""


class UnsafeModelError(PermanentError, TrackingError):
    """A model is not in the skops format or holds types outside the allow-list: it is not loaded."""


def pip_requirements() -> list[str]:
    """Pinned requirements of a logged model: published packages only (the model's own code ships with it,
    `code_paths`), so `mlflow models serve` and `mlflow.pyfunc.load_model` work without this project."""
    import numpy
    import scipy
    import sklearn
    import skops

    return [
        f"mlflow=={mlflow.__version__}",
        f"scikit-learn=={sklearn.__version__}",
        f"skops=={skops.__version__}",
        f"pandas=={pd.__version__}",
        f"numpy=={numpy.__version__}",
        f"scipy=={scipy.__version__}",
    ]


def model_code(folder: Path) -> list[str]:
    """The `code_paths` of a logged model: a copy of the `airflow_mlops_model` package (its .py files only)
    in `folder`, which MLflow puts on sys.path before it loads the model."""
    source = Path(airflow_mlops_model.__file__).parent
    target = folder / source.name
    target.mkdir(parents=True)
    for path in sorted(source.glob("*.py")):
        shutil.copyfile(path, target / path.name)
    return [str(target)]


@contextlib.contextmanager
def mlflow_uris(tracking_uri: str, registry_uri: str) -> Iterator[None]:
    """Point MLflow's global URIs at this server for fluent calls (log_model, download), then restore."""
    old_tracking = mlflow.get_tracking_uri()
    old_registry = mlflow.get_registry_uri()
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(registry_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(old_tracking)
        mlflow.set_registry_uri(old_registry)


# Loading ---------------------------------------------------------------------------------------------------


def trusted_types(extra: Sequence[str] = ()) -> list[str]:
    """The allow-list of types beyond skops' defaults: the project's plus `extra` (train.model.trusted_types)."""
    return sorted({*TRUSTED_TYPES, *extra})


def check_trusted(skops_file: Path, extra: Sequence[str] = (), where: str = "") -> list[str]:
    """The non-default types a skops file holds; raises UnsafeModelError for any outside the allow-list."""
    import skops.io

    found = skops.io.get_untrusted_types(file=skops_file)
    refused = sorted(set(found) - set(trusted_types(extra)))
    if refused:
        raise UnsafeModelError(
            f"{where or skops_file}: model holds type(s) outside the allow-list: {', '.join(refused)} "
            "(add them to train.model.trusted_types only if you trust their code)"
        )
    return sorted(found)


def load_local_model(model_dir: Path, extra_trusted: Sequence[str] = (), where: str = "") -> Any:
    """Load a downloaded MLflow sklearn model: skops format only, with the project's allow-list.

    MLflow's own loader reads the allow-list from the model's MLmodel file, which the model's author
    controls; this one ignores it and refuses pickle and cloudpickle (they run code while loading).
    """
    import skops.io

    where = where or str(model_dir)
    mlmodel_path = model_dir / "MLmodel"
    if not mlmodel_path.is_file():
        raise UnsafeModelError(f"{where}: no MLmodel file: not an MLflow model")
    meta = yaml.safe_load(mlmodel_path.read_text(encoding="utf-8")) or {}
    flavor = (meta.get("flavors") or {}).get("sklearn")
    if not isinstance(flavor, dict):
        raise UnsafeModelError(
            f"{where}: not a scikit-learn model (flavors: {', '.join(meta.get('flavors') or {}) or 'none'})"
        )
    fmt = flavor.get("serialization_format", "pickle")
    if fmt != "skops":
        raise UnsafeModelError(
            f"{where}: model saved in {fmt!r} format; this project loads only skops models "
            "(pickle and cloudpickle can run arbitrary code when loaded). Re-log it with serialization_format='skops'."
        )
    data = (model_dir / str(flavor.get("pickled_model", "model.skops"))).resolve()
    if model_dir.resolve() not in data.parents or not data.is_file():
        raise UnsafeModelError(f"{where}: model file {flavor.get('pickled_model')!r} is not inside the model folder")
    check_trusted(data, extra_trusted, where)
    return skops.io.load(data, trusted=trusted_types(extra_trusted))


def load_model(
    model_uri: str,
    tracking_uri: str | None = None,
    registry_uri: str | None = None,
    extra_trusted: Sequence[str] = (),
    retry: RetryPolicy | None = None,
) -> Any:
    """The project's model loader: download `model_uri` (models:/..., runs:/...) and load it safely.

    Raises UnsafeModelError for a pickle/cloudpickle model or types outside the allow-list.
    """
    tracking = tracking_uri or mlflow.get_tracking_uri()
    registry = registry_uri or tracking
    policy = retry or RetryPolicy()
    with tempfile.TemporaryDirectory(prefix="mlops-model-") as tmp:

        def download() -> str:
            with mlflow_uris(tracking, registry):
                return str(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))

        local = retrying(download, policy, f"download {model_uri}", tracking)
        return load_local_model(Path(local), extra_trusted, where=model_uri)


# Model inputs ----------------------------------------------------------------------------------------------


def client_columns(spec: FeatureSpec) -> list[tuple[str, str]]:
    """The columns of a row a client sends, each with its kind (string, number, datetime or bool): the
    feature columns but the derived ones (the model computes those), then the other inputs of the derived."""
    kinds = {**dict.fromkeys(spec.categorical, "string"), **dict.fromkeys(spec.numeric, "number")}
    declared = {"int64": "number", "float64": "number", "string": "string", "bool": "bool", "datetime": "datetime"}
    kinds.update({c: declared[t] for c, t in input_types(spec.derive_step()).items() if c not in kinds})
    return [(c, kinds[c]) for c in base_columns(spec.derive_step(), spec.columns)]


def model_signature(spec: FeatureSpec, task: str = "binary", classes: int = 2) -> Any:
    """Signature of the rows a client sends (`client_columns`: text as optional strings, date-times as ISO
    8601 strings, numbers as optional doubles, flags as optional booleans) and of the pyfunc output: class
    probabilities (binary, multiclass: one column per class) or the values (regression)."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema, TensorSpec

    types = {"string": DataType.string, "datetime": DataType.string, "number": DataType.double}
    cols: list[ColSpec | TensorSpec] = [
        ColSpec(types.get(kind, DataType.boolean), c, required=False) for c, kind in client_columns(spec)
    ]
    inputs = Schema(cols)
    shape = (-1,) if task == "regression" else (-1, classes)
    outputs = Schema([TensorSpec(np.dtype("float64"), shape)])
    return ModelSignature(inputs=inputs, outputs=outputs)


def pyfunc_method(task: str) -> str:
    """The model method MLflow's pyfunc calls: class probabilities for classifiers, predict for regression."""
    return "predict" if task == "regression" else "predict_proba"


def raw_rows(frame: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """Feature rows as a client would send them: strings or None, floats or NaN."""
    return _client_frame(frame, [*((c, "string") for c in spec.categorical), *((c, "number") for c in spec.numeric)])


def client_rows(frame: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """Rows as a client sends them (`client_columns`: strings or None, ISO 8601 date-times, floats or NaN,
    booleans or None); a column the frame lacks is missing (None or NaN) in every row."""
    return _client_frame(frame, client_columns(spec))


def _client_frame(frame: pd.DataFrame, columns: Sequence[tuple[str, str]]) -> pd.DataFrame:
    import numpy as np

    out = pd.DataFrame(index=frame.index)
    for col, kind in columns:
        if col not in frame.columns:
            out[col] = np.nan if kind == "number" else None
        elif kind == "number":
            out[col] = pd.to_numeric(frame[col]).astype("Float64").to_numpy(dtype="float64", na_value=np.nan)
        elif kind == "datetime":
            stamps = pd.to_datetime(frame[col], utc=True)
            out[col] = [None if pd.isna(v) else v.isoformat() for v in stamps]
        elif kind == "bool":
            out[col] = [None if pd.isna(v) else bool(v) for v in frame[col]]
        else:
            out[col] = [None if pd.isna(v) else str(v) for v in frame[col]]
    return out.reset_index(drop=True)
