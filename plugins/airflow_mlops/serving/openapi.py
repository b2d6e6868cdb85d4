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


def document(pipelines: Sequence[str], max_rows: int, max_body_bytes: int) -> dict[str, Any]:
    """The API of a server serving `pipelines`."""
    value = {"type": ["string", "number", "null"]}
    versions = {"type": "object", "properties": {"pipelines": {"type": "object"}}, "required": ["pipelines"]}
    return {
        "openapi": "3.1.0",
        "info": {"title": "airflow-mlops model server", "version": "1"},
        "paths": {
            "/predict/{pipeline}": {
                "post": _op(
                    f"Predict the rows (at most {max_rows}, body at most {max_body_bytes} bytes) with the "
                    "pipeline's champion",
                    _json({"type": "object", "required": ["predictions", "model_version", "request_id"]}),
                    400,
                    404,
                    405,
                    413,
                    422,
                    503,
                    secured="api_token",
                    parameters=[
                        {
                            "name": "pipeline",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "enum": sorted(pipelines) or ["none"]},
                        }
                    ],
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
            "/health": {"get": _op("Liveness and the versions loaded", _json({"type": "object"}), 405)},
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
