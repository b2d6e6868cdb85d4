"""The plugin's report route on a real Airflow API app: served to signed-in readers only."""

from __future__ import annotations

import pytest

from airflow_mlops.core.lake import paths

REPORT = paths.validation_report("flight_delays", "flights", "2013-01-01")


@pytest.fixture(scope="module")
def api(airflow_api):
    return airflow_api


@pytest.fixture()
def lake(lake_root):
    from airflow_mlops.core.lake.storage import open_lake

    lake = open_lake(str(lake_root))
    lake.write_text(lake.uri(REPORT), "<html><body>report <b>ok</b></body></html>")
    lake.write_bytes(lake.uri("raw/flight_delays/flights/date=2013-01-01/flights.parquet"), b"PAR1")
    lake.write_bytes(lake.uri("quarantine/flight_delays/flights/date=2013-01-01/flights.parquet"), b"PAR1")
    return lake


def get(api, path: str, token: str | None = None, cookie: bool = False):
    client, _ = api
    client.cookies.clear()
    headers = {}
    if token and cookie:
        from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN

        client.cookies.set(COOKIE_NAME_JWT_TOKEN, token)
    elif token:
        headers["Authorization"] = f"Bearer {token}"
    return client.get(f"/mlops/lake/{path}", headers=headers)


def test_signed_in_reader_gets_the_report(api, lake) -> None:
    _, tokens = api
    for role in ("admin", "viewer"):
        resp = get(api, REPORT, tokens[role])
        assert resp.status_code == 200, resp.text
        assert "report <b>ok</b>" in resp.text and resp.headers["content-type"].startswith("text/html")
    # the UI's session cookie works too, so a click on the task's extra link opens the report
    assert get(api, REPORT, tokens["admin"], cookie=True).status_code == 200


def test_anonymous_and_unauthorised_are_refused(api, lake) -> None:
    _, tokens = api
    assert get(api, REPORT).status_code == 401
    assert get(api, REPORT, "not-a-token").status_code in (401, 403)
    assert get(api, REPORT, tokens["none"]).status_code == 403


@pytest.mark.parametrize(
    "path",
    [
        "raw/flight_delays/flights/date=2013-01-01/flights.parquet",  # data zones are never served
        "reports/../raw/flight_delays/flights/date=2013-01-01/flights.parquet",
        "reports/flight_delays/../../raw/x",
        "reports/flight_delays/validation/flights/date=2013-01-09/report.html",  # absent
        "reports",
    ],
)
def test_only_existing_files_of_browsable_zones(api, lake, path: str) -> None:
    _, tokens = api
    assert get(api, path, tokens["admin"]).status_code == 404


def test_quarantined_data_downloads(api, lake) -> None:
    _, tokens = api
    resp = get(api, "quarantine/flight_delays/flights/date=2013-01-01/flights.parquet", tokens["admin"])
    assert resp.status_code == 200 and resp.content == b"PAR1"
    assert "attachment" in resp.headers["content-disposition"]


@pytest.mark.parametrize(
    "path",
    [
        # A landing file named *.html, copied into quarantine as delivered: it may hold anything upstream sent.
        "quarantine/flight_delays/flights/date=2013-01-01/2013-01-01.html",
        "quarantine/flight_delays/flights/date=2013-01-01/report.html",  # a report, but next to delivered files
        "quarantine/flight_delays/flights/date=2013-01-01/error.json",
        "reports/flight_delays/validation/flights/date=2013-01-01/evil.html",  # not a name the package writes
        "reports/flight_delays/elsewhere/report.html",
    ],
)
def test_only_the_packages_reports_render_everything_else_downloads(api, lake, path: str) -> None:
    _, tokens = api
    page = b"<html><script>fetch('/api/v2/connections')</script></html>"
    lake.write_bytes(lake.uri(path), page)
    resp = get(api, path, tokens["admin"])
    assert resp.status_code == 200 and resp.content == page
    assert resp.headers["content-type"] == "application/octet-stream"
    assert resp.headers["content-disposition"].startswith("attachment; filename=")
    assert resp.headers["x-content-type-options"] == "nosniff"


def test_reports_the_package_writes_render_inline(api, lake) -> None:
    _, tokens = api
    monitor = paths.monitor_report("flight_delays", "2013-01-02")
    lake.write_text(lake.uri(monitor), "<html>drift</html>")
    for path in (REPORT, monitor):
        resp = get(api, path, tokens["admin"])
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
        assert "attachment" not in resp.headers.get("content-disposition", "")


def test_download_names_cannot_break_the_header(api, lake) -> None:
    _, tokens = api
    path = 'quarantine/flight_delays/flights/date=2013-01-01/a"b;c.csv'
    lake.write_bytes(lake.uri(path), b"x")
    resp = get(api, path, tokens["admin"])
    assert resp.headers["content-disposition"] == 'attachment; filename="a_b_c.csv"'
