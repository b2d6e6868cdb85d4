"""The model server's API as an OpenAPI 3.1 document (served at /openapi.json; the fuzz tests read it)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_mlops.serving.models import ServedModel
    from airflow_mlops.serving.rows import Inputs

_ERROR = {"$ref": "#/components/responses/Error"}
_VALUE = {"type": ["string", "number", "null"]}
_ANY_ROW = {"type": "object", "additionalProperties": _VALUE}  # a pipeline without a model: columns unknown
FEATURE_ROW, BASE_ROW = "feature_row", "base_row"  # the two forms of a row (docs/serving.md)
_KEYS = {
    "type": "array",
    "description": "Optional, one per row: the row's key (the pipeline's features.key columns and timestamp, a time "
    "as ISO 8601 text), kept in the inference log so the monitor can judge the answer once its outcome lands.",
    "items": {"type": "object", "additionalProperties": _VALUE},
}


def _op(summary: str, ok: dict[str, Any], *errors: int, secured: str | None = None, **extra: Any) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {"200": ok, **{str(status): _ERROR for status in errors}},
        **extra,
    }
    if secured:
        op["security"] = [{secured: []}]
        op["responses"].update({"401": _ERROR, "403": _ERROR})
    return op


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": "OK", "content": {"application/json": {"schema": schema}}}


def _answer() -> dict[str, Any]:
    """The answer of /predict and /invocations: one prediction per row, as the pipeline's train.task gives it."""
    number = {"type": ["number", "null"], "description": "binary: P(label true); regression: the value"}
    classes = {
        "type": "object",
        "description": "multiclass: the most probable class and the probability of each class",
        "required": ["prediction", "probabilities"],
        "properties": {
            "prediction": {"type": ["string", "integer"]},
            "probabilities": {"type": "object", "additionalProperties": {"type": "number"}},
        },
    }
    return _json(
        {
            "type": "object",
            "required": ["predictions", "model_version", "request_id"],
            "properties": {
                "pipeline": {"type": "string"},
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "request_id": {"type": "string"},
                "predictions": {"type": "array", "items": {"anyOf": [number, classes]}},
            },
        }
    )


def forms(served: Mapping[str, ServedModel | None]) -> dict[str, dict[str, Inputs]]:
    """Per pipeline with a model loaded, the forms its rows may take: feature rows, and base rows when the
    model computes derived features."""
    out: dict[str, dict[str, Inputs]] = {}
    for pipeline, model in sorted(served.items()):
        if model is not None:
            out[pipeline] = {FEATURE_ROW: model} if model.base is None else {FEATURE_ROW: model, BASE_ROW: model.base}
    return out


def _column_types(form: Inputs) -> dict[str, dict[str, Any]]:
    """The JSON type of each column of a row form, in the form's column order."""
    datetimes = set(getattr(form, "datetimes", ()))
    types: dict[str, dict[str, Any]] = {}
    for col in form.categorical:
        types[col] = {"type": ["string", "null"]}
        if col in datetimes:
            types[col].update(format="date-time", description="ISO 8601; without an offset taken as UTC")
    types.update({col: {"type": ["number", "null"]} for col in form.numeric})
    types.update({col: {"type": ["boolean", "null"]} for col in getattr(form, "flags", ())})
    return types


def row_schemas(by_pipeline: Mapping[str, Mapping[str, Inputs]]) -> dict[str, Any]:
    """components/schemas: `<pipeline>.feature_row` and `<pipeline>.base_row`, each exactly its columns."""
    schemas = {}
    for pipeline, by_form in by_pipeline.items():
        for form_name, form in by_form.items():
            what = (
                "every feature column" if form_name == FEATURE_ROW else "the base columns (the model derives the rest)"
            )
            schemas[f"{pipeline}.{form_name}"] = {
                "type": "object",
                "description": f"A row of {pipeline}: {what}",
                "additionalProperties": False,
                "required": list(form.columns),
                "properties": _column_types(form),
            }
    return schemas


def _per_form(
    by_pipeline: Mapping[str, Mapping[str, Inputs]],
    pipelines: list[str],
    make: Callable[[str, Inputs], dict[str, Any]],
    unknown: dict[str, Any],
) -> dict[str, Any]:
    """`make(ref, form)` per row form: oneOf the forms of a pipeline (a row is of one form: a base row lacks
    a derived column, which a feature row must hold), anyOf the pipelines (`unknown` for one without a model)."""
    per_pipeline = []
    for pipeline in pipelines:
        by_form = by_pipeline.get(pipeline)
        if not by_form:
            per_pipeline.append(unknown)
            continue
        options = [make(f"#/components/schemas/{pipeline}.{name}", form) for name, form in by_form.items()]
        per_pipeline.append(options[0] if len(options) == 1 else {"oneOf": options})
    unique = [s for i, s in enumerate(per_pipeline) if s not in per_pipeline[:i]]
    return unique[0] if len(unique) == 1 else {"anyOf": unique} if unique else unknown


def _rows(by_pipeline: Mapping[str, Mapping[str, Inputs]], pipelines: list[str], max_rows: int) -> dict[str, Any]:
    """A list of rows, all of one form of one pipeline's model."""

    def rows(items: dict[str, Any]) -> dict[str, Any]:
        return {"type": "array", "minItems": 1, "maxItems": max_rows, "items": items}

    return _per_form(by_pipeline, pipelines, lambda ref, form: rows({"$ref": ref}), rows(_ANY_ROW))


def _mlflow_body(
    by_pipeline: Mapping[str, Mapping[str, Inputs]], pipelines: list[str], max_rows: int
) -> dict[str, Any]:
    """MLflow's scoring inputs (JSON): one of dataframe_split, dataframe_records, instances, inputs."""
    records = _rows(by_pipeline, pipelines, max_rows)

    def split(columns: dict[str, Any], width: dict[str, Any]) -> dict[str, Any]:
        """pandas' split orient: `columns` names, each row a list of `width` values."""
        return {
            "type": "object",
            "required": ["columns", "data"],
            "additionalProperties": False,
            "properties": {
                "columns": {"type": "array", "items": columns, "uniqueItems": True, **width},
                "data": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": max_rows,
                    "items": {"type": "array", "items": _VALUE, **width},
                },
                "index": {"type": "array"},
            },
        }

    def split_of(ref: str, form: Inputs) -> dict[str, Any]:
        n = len(form.columns)
        return split({"enum": list(form.columns)}, {"minItems": n, "maxItems": n})

    def columns_of(ref: str, form: Inputs) -> dict[str, Any]:
        return {
            "type": "object",
            "additionalProperties": False,
            "required": list(form.columns),
            "properties": {
                col: {"type": "array", "minItems": 1, "maxItems": max_rows, "items": kind}
                for col, kind in _column_types(form).items()
            },
        }

    any_columns = {"type": "object", "additionalProperties": {"type": "array", "maxItems": max_rows, "items": _VALUE}}
    formats = {
        "dataframe_split": _per_form(by_pipeline, pipelines, split_of, split({"type": "string"}, {})),
        "dataframe_records": records,
        "instances": records,
        "inputs": {"anyOf": [_per_form(by_pipeline, pipelines, columns_of, any_columns), records]},
    }
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {
                            "type": "object",
                            "additionalProperties": False,
                            "required": [key],
                            "properties": {key: schema, "params": {"type": ["object", "null"], "maxProperties": 0}},
                        }
                        for key, schema in formats.items()
                    ]
                }
            }
        },
    }


def document(served: Mapping[str, ServedModel | None], max_rows: int, max_body_bytes: int) -> dict[str, Any]:
    """The API of a server serving the pipelines of `served`, with the row columns of the models loaded."""
    by_pipeline = forms(served)
    body = _mlflow_body(by_pipeline, sorted(served), max_rows)

    def _invocation(summary: str, parameters: list[dict[str, Any]]) -> dict[str, Any]:
        return _op(summary, _answer(), 400, 404, 405, 413, 415, 422, 503, secured="api_token",
                   parameters=parameters, requestBody=body)  # fmt: skip

    versions = {"type": "object", "properties": {"pipelines": {"type": "object"}}, "required": ["pipelines"]}
    names = sorted(served) or ["none"]
    path_pipeline = {"name": "pipeline", "in": "path", "required": True, "schema": {"type": "string", "enum": names}}
    limits = f"(at most {max_rows} rows, body at most {max_body_bytes} bytes)"
    invocation = (
        f"MLflow's scoring protocol: predict the rows {limits} with the pipeline's champion; the answer is "
        "/predict's ({'predictions': [...], ...})"
    )
    return {
        "openapi": "3.1.0",
        "info": {"title": "airflow-mlops model server", "version": "1"},
        "paths": {
            "/predict/{pipeline}": {
                "post": _op(
                    f"Predict the rows {limits} with the pipeline's champion: per row P(label true) (binary), "
                    "the value (regression), or the class and class probabilities (multiclass)",
                    _answer(),
                    400,
                    404,
                    405,
                    413,
                    422,
                    503,
                    secured="api_token",
                    parameters=[path_pipeline],
                    requestBody={
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["rows"],
                                    "properties": {
                                        "rows": _rows(by_pipeline, sorted(served), max_rows),
                                        "keys": _KEYS,
                                    },
                                }
                            }
                        },
                    },
                ),
            },
            "/invocations/{pipeline}": {"post": _invocation(invocation, [path_pipeline])},
            "/invocations": {
                "post": _invocation(
                    invocation + "; the pipeline is named by the X-MLOps-Pipeline header (optional when the "
                    "server serves one pipeline)",
                    [
                        {
                            "name": "X-MLOps-Pipeline",
                            "in": "header",
                            "required": len(names) > 1,
                            "schema": {"type": "string", "enum": names},
                        }
                    ],
                )
            },
            "/endpoints/{pipeline}/invocations": {
                "post": _invocation(invocation + " (the route of MLflow's deployments client)", [path_pipeline])
            },
            "/health": {
                "get": _op(
                    "Liveness, the versions loaded and each pipeline's last load error", _json({"type": "object"}), 405
                )
            },
            "/ping": {
                "get": _op("As /health (the route MLflow's scoring clients probe)", _json({"type": "object"}), 405)
            },
            "/version": {"get": _op("Versions served per pipeline", _json(versions), 405, secured="api_token")},
            "/metrics": {
                "get": _op(
                    "Prometheus metrics",
                    {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}},
                    405,
                )
            },
            "/admin/reload": {
                "post": _op("Check the champion aliases now", _json(versions), 405, secured="admin_token")
            },
            "/openapi.json": {"get": _op("This document", _json({"type": "object"}), 405)},
        },
        "components": {
            "schemas": row_schemas(by_pipeline),
            "securitySchemes": {
                "api_token": {"type": "http", "scheme": "bearer"},
                "admin_token": {"type": "http", "scheme": "bearer"},
            },
            "responses": {
                "Error": {
                    "description": "Refused, with the reason",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["error", "request_id"],
                                "properties": {"error": {"type": "string"}, "request_id": {"type": "string"}},
                            }
                        }
                    },
                }
            },
        },
    }
