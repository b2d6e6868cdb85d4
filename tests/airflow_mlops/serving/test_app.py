"""The model server survives any request: hostile bodies, limits while reading, tokens, and a fuzzed API."""

from __future__ import annotations

import json
import re
import select
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

from airflow_mlops.core.registry.tracking import client_columns
from airflow_mlops.serving.rows import INT64_MAX
from tests.fixtures.model_server import ADMIN_AUTH, ADMIN_TOKEN, AUTH, TOKEN
from tests.fixtures.served_models import MAX_ROWS, PIPELINE, ServerProcess, Setup, json_rows, one_row, serve

INTERNALS = re.compile(r'Traceback|File "|\b[A-Z]\w*(Error|Exception)\b')  # a traceback or an exception's name


def post(server: ServerProcess, body: bytes, path: str = f"/predict/{PIPELINE}", **headers: str) -> requests.Response:
    return requests.post(f"{server.url}{path}", data=body, headers={**AUTH, **headers}, timeout=60)


def rows_body(rows: Any) -> bytes:
    return json.dumps({"rows": rows}).encode()


def metric(server: ServerProcess, name: str) -> float:
    """The sum of a metric's samples (0 when it has none yet)."""
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if re.match(rf"{name}(\{{| )", line))


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


HOSTILE: dict[str, tuple[Callable[[Setup], bytes], int, str]] = {
    # Values that passed validation, got 200, and then could not be written to the Parquet inference log.
    "integer of 2**63": (lambda s: rows_body([one_row(s, distance=INT64_MAX + 1)]), 400, "rows[0].distance: integer"),
    "integer below -2**63": (lambda s: rows_body([one_row(s, temp=-(2**70))]), 400, "rows[0].temp: integer out of"),
    "integer of 2**63 among many rows": (
        lambda s: rows_body([one_row(s)] * 9 + [one_row(s, distance=2**64)]),
        400,
        "rows[9].distance: integer out of range",
    ),
    "lone surrogate": (lambda s: rows_body([one_row(s, carrier="\ud800")]), 400, "rows[0].carrier: not valid Unicode"),
    "lone surrogate among many rows": (
        lambda s: rows_body([one_row(s)] * 7 + [one_row(s, origin="x\udfffy")]),
        400,
        "rows[7].origin: not valid Unicode",
    ),
    # Gave 500 with the exception's text.
    "310-digit number": (
        lambda s: rows_body([one_row(s, distance=0)]).replace(b'"distance": 0', b'"distance": ' + b"9" * 310),
        400,
        "rows[0].distance: integer out of range",
    ),
    "deeply nested body": (lambda s: b'{"rows": ' + nested(100_000) + b"}", 400, "nested too deeply"),
    "deeply nested value": (
        lambda s: rows_body([one_row(s)]).replace(b'"carrier": ', b'"carrier": ' + nested(200_000) + b', "x": '),
        400,
        "nested too deeply",
    ),
    "nested value within the limit": (
        lambda s: rows_body([one_row(s, carrier=json.loads(nested(500)))]),
        422,
        "rows[0].carrier: expected a string or null, got list [[[...]]]",
    ),
    "number over Python's digit limit": (
        lambda s: rows_body([one_row(s, distance=0)]).replace(b'"distance": 0', b'"distance": ' + b"1" * 5000),
        400,
        "not valid JSON",
    ),
    "not UTF-8": (lambda s: rows_body([one_row(s, carrier="AA")]).replace(b'"AA"', b'"\xff"'), 400, "not UTF-8"),
    "encoded surrogate": (
        lambda s: rows_body([one_row(s, carrier="AA")]).replace(b'"AA"', b'"\xed\xa0\x80"'),
        400,
        "not UTF-8",
    ),
    "huge exponent": (
        lambda s: rows_body([one_row(s, distance=0)]).replace(b'"distance": 0', b'"distance": 1e999'),
        422,
        "rows[0].distance: expected a finite number",
    ),
    "long unknown field": (lambda s: rows_body([one_row(s, **{"x" * 10_000: 1})]), 422, "unknown field(s) 'xxx"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_bodies_get_a_4xx_with_a_reason_and_never_block_the_log(
    setup: Setup, server: ServerProcess, case: str
) -> None:
    make, status, message = HOSTILE[case]
    errors_before = metric(server, "mlops_inference_log_errors_total")
    resp = post(server, make(setup))
    assert resp.status_code == status, resp.text[:500]
    error = resp.json()["error"]
    assert message in error and len(error) < 1000 and not INTERNALS.search(error), error
    good = server.predict([one_row(setup)], headers={**AUTH, "X-Request-ID": f"after-{len(case)}"})
    assert good.status_code == 200, good.text
    # What was accepted is written: the log flushes every second and has no row it cannot write.
    deadline = time.monotonic() + 60
    while metric(server, "mlops_inference_log_buffered_rows") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert metric(server, "mlops_inference_log_buffered_rows") == 0
    assert metric(server, "mlops_inference_log_errors_total") == errors_before
    assert metric(server, "mlops_inference_log_dropped_rows_total") == 0


def test_the_row_limit_holds_before_the_body_is_parsed(setup: Setup, server: ServerProcess) -> None:
    # The rows over the limit are followed by garbage: a server parsing the whole body first says "not JSON".
    row = json.dumps(one_row(setup)).encode()
    body = b'{"rows": [' + b", ".join([row] * (MAX_ROWS + 1)) + b", garbage" * 1000
    resp = post(server, body)
    assert resp.status_code == 413, resp.text
    assert f"more than {MAX_ROWS} rows; at most {MAX_ROWS} per request" in resp.json()["error"]
    # Within the limit, the same garbage is a JSON error, and a valid batch passes the counting parser.
    assert post(server, b'{"rows": [' + b", ".join([row] * MAX_ROWS) + b", garbage").status_code == 400
    many = json_rows(setup.holdout.head(MAX_ROWS), setup.spec)
    assert post(server, b" \n" + rows_body(many) + b"\n").status_code == 200
    assert post(server, rows_body([1] * (MAX_ROWS + 1))).status_code == 413
    assert post(server, rows_body([])).status_code == 422


@pytest.fixture(scope="module")
def small_body_server(setup: Setup, mlflow_server: str) -> Iterator[ServerProcess]:
    yield from serve(setup, mlflow_server, "--max-body-bytes", "4096")


def _answer(sock: socket.socket, wait: float) -> bytes:
    """The response the server has sent within `wait` seconds (whole once its headers are in)."""
    data = b""
    while select.select([sock], [], [], wait)[0]:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        length = re.search(rb"content-length: (\d+)", head, re.IGNORECASE)
        if sep and length and len(body) >= int(length.group(1)):
            break
        wait = 30  # a response has begun: wait for the rest
    return data


def test_the_body_limit_holds_on_the_declared_length_and_while_reading(small_body_server: ServerProcess) -> None:
    head = f"POST /predict/{PIPELINE} HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH['Authorization']}\r\n"
    # Declared too long: refused before a byte of the body is sent.
    with socket.create_connection(("127.0.0.1", small_body_server.port), timeout=30) as sock:
        sock.sendall(f"{head}Content-Type: application/json\r\nContent-Length: 10000000\r\n\r\n".encode())
        answer = _answer(sock, 30)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"request body of 10000000 bytes is over the limit of 4096 bytes" in answer
    # No length (chunked): refused once the bytes read pass the limit, long before the client is done.
    sent = 0
    with socket.create_connection(("127.0.0.1", small_body_server.port), timeout=30) as sock:
        sock.sendall(f"{head}Transfer-Encoding: chunked\r\n\r\n".encode())
        answer = b""
        while sent < 1_000_000 and not answer:
            sock.sendall(b"400\r\n" + b" " * 1024 + b"\r\n")
            sent += 1024
            answer = _answer(sock, 0.05)
        answer = answer or _answer(sock, 30)
    assert answer.startswith(b"HTTP/1.1 413") and b"over the limit of 4096 bytes" in answer, answer[:300]
    assert sent < 100_000
    assert requests.get(f"{small_body_server.url}/health", timeout=10).status_code == 200


def test_admin_reload_takes_the_admin_token_only(server: ServerProcess) -> None:
    api_on_admin = requests.post(f"{server.url}/admin/reload", headers=AUTH, timeout=60)
    assert api_on_admin.status_code == 403 and "invalid admin token" in api_on_admin.json()["error"]
    admin_on_api = requests.post(f"{server.url}/predict/{PIPELINE}", json={"rows": []}, headers=ADMIN_AUTH, timeout=60)
    assert admin_on_api.status_code == 403 and "invalid API token" in admin_on_api.json()["error"]
    assert requests.get(f"{server.url}/version", headers=ADMIN_AUTH, timeout=60).status_code == 403
    bare = requests.post(f"{server.url}/admin/reload", headers={"Authorization": "Bearer"}, timeout=60)
    assert bare.status_code == 403
    assert requests.post(f"{server.url}/admin/reload", headers=ADMIN_AUTH, timeout=120).status_code == 200


def test_the_hook_reloads_with_the_admin_token_extra(server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_mlops.hooks import ModelServerHook

    conn = {"conn_type": "mlops_model_server", "host": "127.0.0.1", "port": server.port, "password": TOKEN}
    reloads = 'mlops_requests_total{route="/admin/reload",pipeline="",status="200"}'
    before = metric(server, re.escape(reloads))
    monkeypatch.setenv("AIRFLOW_CONN_MLOPS_MODEL_SERVER", json.dumps({**conn, "extra": {"admin_token": ADMIN_TOKEN}}))
    assert ModelServerHook.served_version(ModelServerHook().reload(), PIPELINE) is not None
    assert metric(server, re.escape(reloads)) == before + 1
    # Without the extra: the version is read, no reload asked (the server's poll picks the alias up).
    monkeypatch.setenv("AIRFLOW_CONN_MLOPS_MODEL_SERVER", json.dumps(conn))
    assert ModelServerHook.served_version(ModelServerHook().reload(), PIPELINE) is not None
    assert metric(server, re.escape(reloads)) == before + 1


# Fuzzing ---------------------------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
PATHS = [f"/predict/{PIPELINE}", "/predict/nope", f"/invocations/{PIPELINE}", "/invocations", "/endpoints//invocations",
         f"/endpoints/{PIPELINE}/invocations", "/version", "/admin/reload", "/health", "/ping", "/metrics",
         "/openapi.json", "/"]  # fmt: skip
ROUTES = st.sampled_from(PATHS) | st.text(max_size=30).map(lambda t: "/" + t)


def _send(server: ServerProcess, method: str, path: str, body: bytes, headers: dict[str, str]) -> None:
    try:
        resp = requests.request(method, f"{server.url}{path}", data=body, headers=headers, timeout=30)
    except requests.exceptions.InvalidURL:
        return  # the client refuses to send it
    assert resp.status_code < 500, (method, path, body[:300], resp.status_code, resp.text[:300])
    if resp.status_code >= 400 and method != "HEAD":
        assert not INTERNALS.search(resp.json()["error"]), resp.text


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@FUZZ
@given(data=st.data())
def test_fuzzed_rows_never_get_a_5xx_nor_hang(setup: Setup, server: ServerProcess, data: st.DataObject) -> None:
    """Valid rows with fields changed to any JSON value, removed or added, in batches of any size."""
    base = json_rows(setup.holdout.head(8), setup.spec)
    rows: list[Any] = []
    for row in data.draw(st.lists(st.sampled_from(base), min_size=0, max_size=MAX_ROWS + 2)):
        row = dict(row)
        for key in data.draw(st.lists(st.sampled_from(sorted(row)), max_size=3)):
            action = data.draw(st.sampled_from(["change", "remove"]))
            if action == "remove":
                row.pop(key, None)
            else:
                row[key] = data.draw(JSON)
        if data.draw(st.booleans()):
            row[data.draw(st.text(max_size=8))] = data.draw(JSON)
        rows.append(row if data.draw(st.integers(0, 20)) else data.draw(JSON))
    # /predict's body, or one of MLflow's (/invocations): records, or the rows' values under their first keys.
    columns = list(base[0])
    split = {"columns": columns, "data": [[r.get(c) for c in columns] if isinstance(r, dict) else r for r in rows]}
    path, payload = data.draw(
        st.sampled_from(
            [
                (f"/predict/{PIPELINE}", {"rows": rows}),
                (f"/predict/{PIPELINE}", rows),
                (f"/predict/{PIPELINE}", {"rows": rows, "x": 1}),
                (f"/invocations/{PIPELINE}", {"dataframe_records": rows}),
                (f"/invocations/{PIPELINE}", {"instances": rows, "params": {}}),
                (f"/invocations/{PIPELINE}", {"dataframe_split": split}),
            ]
        )
    )
    body = json.dumps(payload).encode()
    _send(server, "POST", path, body, {**AUTH, "Content-Type": "application/json"})


@FUZZ
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]),
    path=ROUTES,
    body=st.binary(max_size=300) | JSON.map(lambda v: json.dumps(v).encode()),
    auth=st.sampled_from([AUTH, ADMIN_AUTH, {}, {"Authorization": "Bearer"}, {"Authorization": "Basic x"}]),
    request_id=st.text(max_size=200).filter(lambda t: t.isascii() and t.isprintable()),
)
def test_fuzzed_requests_never_get_a_5xx_nor_hang(
    server: ServerProcess, method: str, path: str, body: bytes, auth: dict[str, str], request_id: str
) -> None:
    _send(server, method, path, body, {**auth, "X-Request-ID": request_id})


def _fuzz_operation(cases: st.SearchStrategy[Any], auth: dict[str, str], check: Any) -> None:
    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(case=cases)
    def fuzz(case: Any) -> None:
        case.call_and_validate(headers=auth, checks=[check], timeout=30)

    fuzz()


def test_the_openapi_rows_are_the_two_forms_of_the_served_model(setup: Setup, server: ServerProcess) -> None:
    """/predict's and /invocations' rows are described column by column, from the model served: feature rows
    or base rows, one form per request."""
    from jsonschema import Draft202012Validator

    doc = requests.get(f"{server.url}/openapi.json", timeout=10).json()
    schemas = doc["components"]["schemas"]
    feature, base = schemas[f"{PIPELINE}.feature_row"], schemas[f"{PIPELINE}.base_row"]
    assert set(feature["required"]) == set(feature["properties"]) == set(setup.spec.columns)
    assert set(base["required"]) == {c for c, _ in client_columns(setup.spec)}
    assert base["properties"]["time_hour"]["format"] == "date-time" and not feature["additionalProperties"]
    body = doc["paths"]["/predict/{pipeline}"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    rows = Draft202012Validator({**body, "components": doc["components"]})
    invocations = doc["paths"]["/invocations/{pipeline}"]["post"]["requestBody"]["content"]["application/json"]
    mlflow = Draft202012Validator({**invocations["schema"], "components": doc["components"]})
    sent = {
        "feature": json_rows(setup.holdout.head(3), setup.spec),
        "base": json_rows(setup.holdout.head(3).assign(year=2013), setup.spec, base=True),
    }
    for form, records in sent.items():
        assert rows.is_valid({"rows": records}) and mlflow.is_valid({"dataframe_records": records}), form
        columns = list(records[0])
        split = {"columns": columns, "data": [[r[c] for c in columns] for r in records]}
        assert mlflow.is_valid({"dataframe_split": split}) and mlflow.is_valid({"inputs": records}), form
        assert server.predict(records).status_code == 200, form
    mixed = [sent["feature"][0], sent["base"][0]]
    assert not rows.is_valid({"rows": mixed}) and server.predict(mixed).status_code == 422
    assert not rows.is_valid({"rows": [{**sent["base"][0], "distance": "far"}]})


def test_the_openapi_description_fuzzed_by_schemathesis(server: ServerProcess) -> None:
    """Every operation of /openapi.json, with schemathesis's positive and negative cases."""
    import schemathesis
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error

    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    paths = []
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]
        paths.append(operation.path)
        auth = ADMIN_AUTH if operation.path == "/admin/reload" else AUTH

        for mode in GenerationMode:
            try:
                _fuzz_operation(operation.as_strategy(mode), auth, not_a_server_error)
            except Unsatisfiable:
                assert mode == GenerationMode.NEGATIVE, operation.path  # nothing to negate: no body, no parameter
    # schemathesis leaves out the description's own URL.
    assert sorted(paths) == [
        "/admin/reload",
        "/endpoints/{pipeline}/invocations",
        "/health",
        "/invocations",
        "/invocations/{pipeline}",
        "/metrics",
        "/ping",
        "/predict/{pipeline}",
        "/version",
    ]
