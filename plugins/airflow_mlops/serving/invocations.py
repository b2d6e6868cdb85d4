"""Request bodies of MLflow's scoring protocol (/invocations): dataframe_split, dataframe_records, instances, inputs."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from airflow_mlops.serving.rows import Inputs, RequestError, Rows, checked_rows, decode, field_name, load_payload

PIPELINE_HEADER = "x-mlops-pipeline"
"""The header naming the pipeline of a POST /invocations (optional when the server serves one pipeline)."""
FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
"""The JSON inputs of MLflow's scoring server; its CSV and Parquet bodies are not accepted."""
_SPLIT_KEYS = frozenset({"columns", "data", "index"})


def target(path: str, headers: Mapping[str, str], served: list[str]) -> str:
    """The pipeline of an invocation: /invocations/<p>, /endpoints/<p>/invocations (MLflow's deployments
    client), or /invocations with the pipeline header, which may be left out when one pipeline is served."""
    if path.startswith("/invocations/"):
        return path[len("/invocations/") :]
    if path.startswith("/endpoints/"):
        return path[len("/endpoints/") : -len("/invocations")]
    named = headers.get(PIPELINE_HEADER)
    if named is not None:
        return named
    if len(served) == 1:
        return served[0]
    raise RequestError(
        400,
        f"POST /invocations needs the header 'X-MLOps-Pipeline: <pipeline>' when several pipelines are served "
        f"({', '.join(sorted(served))}); or use /invocations/<pipeline>",
    )


def check_content_type(headers: Mapping[str, str]) -> None:
    """415 for a body MLflow would read as CSV or Parquet (or any type but JSON); no header means JSON."""
    declared = headers.get("content-type")
    if declared is not None and declared.split(";")[0].strip().lower() not in ("application/json", ""):
        raise RequestError(415, f"content type {declared[:100]!r} is not accepted: send application/json")


def parse_rows(body: bytes, served: Inputs, max_rows: int, key_columns: Sequence[str] = ()) -> Rows:
    """The rows of an MLflow scoring request, checked as /predict checks its rows (`rows.parse_rows`); MLflow's
    protocol has no place for row keys (`key_columns` is not used: send them to /predict).

    NaN means a missing value, as in the pandas frames MLflow's clients encode (a column of None becomes NaN).
    """
    text = decode(body)
    payload = load_payload(text, max_rows, len(served.columns))
    wanted = ", ".join(FORMATS)
    if not isinstance(payload, dict):
        raise RequestError(
            422, f"request body must be a JSON object with one of {wanted}, got {type(payload).__name__}"
        )
    found = [key for key in FORMATS if key in payload]
    if len(found) != 1:
        given = ", ".join(field_name(k) for k in sorted(payload)[:5]) or "none"
        raise RequestError(422, f"request body must hold exactly one of {wanted} (fields given: {given})")
    key = found[0]
    extra = sorted(set(payload) - {key, "params"})
    if extra:
        names = ", ".join(field_name(k) for k in extra[:5])
        raise RequestError(422, f"unknown top-level field(s): {names} (accepted: one of {wanted}, and params)")
    if payload.get("params") not in (None, {}):
        raise RequestError(422, "'params' are not accepted: the served models take no inference parameters")
    data = payload[key]
    if key == "dataframe_split":
        rows, field = _split(data, max_rows), "dataframe_split.data"
    elif key == "inputs" and isinstance(data, dict):
        rows, field = _columns(data, max_rows), "inputs"
    else:
        rows, field = data, key
    if isinstance(rows, list) and len(rows) <= max_rows:
        rows = [_missing_as_null(row) for row in rows]
    return checked_rows(rows, served, max_rows, field, "\\u" not in text)


def _split(data: Any, max_rows: int) -> list[Any]:
    """Rows of pandas' split orient: {"columns": [...], "data": [[...], ...]} ("index" is ignored)."""
    if not isinstance(data, dict) or "columns" not in data or "data" not in data:
        raise RequestError(422, '\'dataframe_split\' must be an object {"columns": [...], "data": [[...], ...]}')
    extra = sorted(set(data) - _SPLIT_KEYS)
    if extra:
        raise RequestError(422, f"'dataframe_split': unknown field(s) {', '.join(field_name(k) for k in extra[:5])}")
    columns, values = data["columns"], data["data"]
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise RequestError(422, "'dataframe_split.columns' must be a list of feature names")
    if len(set(columns)) != len(columns):
        raise RequestError(422, "'dataframe_split.columns' names a column twice")
    if not isinstance(values, list):
        raise RequestError(422, f"'dataframe_split.data' must be a list of rows, got {type(values).__name__}")
    if len(values) > max_rows:
        raise RequestError(413, f"'dataframe_split.data' has {len(values)} rows; at most {max_rows} per request")
    rows = []
    for i, row in enumerate(values):
        if not isinstance(row, list) or len(row) != len(columns):
            got = f"{len(row)} values" if isinstance(row, list) else type(row).__name__
            raise RequestError(422, f"dataframe_split.data[{i}]: expected a list of {len(columns)} values, got {got}")
        rows.append(dict(zip(columns, row, strict=True)))
    return rows


def _columns(data: dict[str, Any], max_rows: int) -> list[Any]:
    """Rows of TF serving's columnar format: {"column": [values, ...], ...}, lists of one length."""
    lengths = {len(v) if isinstance(v, list) else -1 for v in data.values()}
    if -1 in lengths or len(lengths) > 1:
        raise RequestError(422, "'inputs' as an object must map each feature to a list of values, all of one length")
    n = lengths.pop() if lengths else 0
    if n > max_rows:
        raise RequestError(413, f"'inputs' has {n} rows; at most {max_rows} per request")
    return [{column: values[i] for column, values in data.items()} for i in range(n)]


def _missing_as_null(row: Any) -> Any:
    if isinstance(row, dict) and any(isinstance(v, float) and math.isnan(v) for v in row.values()):
        return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
    return row
