"""The model server's API as an OpenAPI 3.1 document (served at /openapi.json; the fuzz tests read it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

_ERROR = {"$ref": "#/components/responses/Error"}


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


def _mlflow_body(max_rows: int) -> dict[str, Any]:
    """MLflow's scoring inputs (JSON): one of dataframe_split, dataframe_records, instances, inputs."""
    value = {"type": ["string", "number", "null"]}
    record = {"type": "object", "additionalProperties": value}
    records = {"type": "array", "minItems": 1, "maxItems": max_rows, "items": record}
    split = {
        "type": "object",
        "required": ["columns", "data"],
        "additionalProperties": False,
        "properties": {
            "columns": {"type": "array", "items": {"type": "string"}},
            "data": {"type": "array", "minItems": 1, "maxItems": max_rows, "items": {"type": "array", "items": value}},
            "index": {"type": "array"},
        },
    }
    columns = {"type": "object", "additionalProperties": {"type": "array", "maxItems": max_rows, "items": value}}
    formats = {
        "dataframe_split": split,
        "dataframe_records": records,
        "instances": records,
        "inputs": {"anyOf": [columns, records]},
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


def _invocation(summary: str, parameters: list[dict[str, Any]], max_rows: int) -> dict[str, Any]:
    return _op(summary, _answer(), 400, 404, 405, 413, 415, 422, 503, secured="api_token", parameters=parameters,
               requestBody=_mlflow_body(max_rows))  # fmt: skip


def document(pipelines: Sequence[str], max_rows: int, max_body_bytes: int) -> dict[str, Any]:
    """The API of a server serving `pipelines`."""
    value = {"type": ["string", "number", "null"]}
    versions = {"type": "object", "properties": {"pipelines": {"type": "object"}}, "required": ["pipelines"]}
    names = sorted(pipelines) or ["none"]
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
                                        "rows": {
                                            "type": "array",
                                            "minItems": 1,
                                            "maxItems": max_rows,
                                            "items": {"type": "object", "additionalProperties": value},
                                        }
                                    },
                                }
                            }
                        },
                    },
                ),
            },
            "/invocations/{pipeline}": {"post": _invocation(invocation, [path_pipeline], max_rows)},
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
                    max_rows,
                )
            },
            "/endpoints/{pipeline}/invocations": {
                "post": _invocation(
                    invocation + " (the route of MLflow's deployments client)", [path_pipeline], max_rows
                )
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
