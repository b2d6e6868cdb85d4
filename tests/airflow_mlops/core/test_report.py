"""Tests of the HTML reports: standalone, well-formed, every value escaped, failures shown."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from airflow_mlops import config, settings
from airflow_mlops.core.ingest.landing import read_landing_csv
from airflow_mlops.core.ingest.validation import ValidationOutcome, date_parameters, validate_frame
from airflow_mlops.core.report import (
    Link,
    Section,
    Table,
    Verdict,
    render_error_html,
    render_report,
    render_validation_html,
)
from tests.fixtures.bad_corpus import BAD_CASES, real_day_csv

DS = "2013-01-01"
EVIL = "<script>alert('x')</script>"
VOID = {"meta", "br", "hr", "img", "link", "input"}


class _Tags(HTMLParser):
    """Collects start tags and checks every non-void tag is closed in order."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.seen: list[str] = []
        self.errors: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.seen.append(tag)
        self.attrs.extend(attrs)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(f"unexpected </{tag}>")


def parse(page: str) -> _Tags:
    tags = _Tags()
    tags.feed(page)
    tags.close()
    assert tags.errors == [] and tags.stack == [], (tags.errors, tags.stack)
    return tags


def assert_standalone(page: str) -> None:
    tags = parse(page)
    assert page.startswith("<!DOCTYPE html>")
    assert "script" not in tags.seen and "link" not in tags.seen and "img" not in tags.seen
    assert not any(name in ("src", "href") for name, _ in tags.attrs)
    assert "http://" not in page and "https://" not in page


@pytest.fixture(scope="module")
def failed_outcome() -> ValidationOutcome:
    cfg = config.load_pipeline(settings.include_dir() / "pipelines" / "flight_delays.yaml")
    good = real_day_csv("flights", DS)
    # A wrong type whose bad value is markup: it reaches the report through GX's observed values.
    bad = BAD_CASES["out_of_range"](BAD_CASES["wrong_type"](good).replace(b",late,", f",{EVIL},".encode(), 1))
    df = read_landing_csv(bad, dict(cfg.sources["flights"].columns), "flights.csv")
    return validate_frame(df, settings.expectations_dir() / "flights.json", date_parameters(DS))


@pytest.fixture(scope="module")
def passed_outcome() -> ValidationOutcome:
    cfg = config.load_pipeline(settings.include_dir() / "pipelines" / "flight_delays.yaml")
    df = read_landing_csv(real_day_csv("flights", DS), dict(cfg.sources["flights"].columns), "flights.csv")
    return validate_frame(df, settings.expectations_dir() / "flights.json", date_parameters(DS))


CONTEXT = {
    "pipeline": "flight_delays",
    "source": "flights",
    "logical date": DS,
    "file": "raw/flight_delays/flights/date=2013-01-01/flights.parquet",
    "run id": f"manual__{EVIL}",
}


@pytest.mark.slow
def test_failed_validation_report_lists_failures_escaped(failed_outcome: ValidationOutcome) -> None:
    assert not failed_outcome.success
    assert any(EVIL in f.observed for f in failed_outcome.failures)  # the markup really reaches the report
    page = render_validation_html(failed_outcome, f"Validation of flights <{DS}>", CONTEXT)
    assert_standalone(page)
    assert EVIL not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "<title>Validation of flights &lt;2013-01-01&gt;</title>" in page
    assert "FAILED" in page and "PASSED" not in page
    assert f"Failed expectations ({len(failed_outcome.failures)})" in page
    for f in failed_outcome.failures:
        assert f"<td>{f.expectation_type}</td>" in page
    assert "<td>dep_delay</td>" in page and "<td>arr_delay</td>" in page
    assert "min_value=-120, max_value=1500" in page
    assert page.count('<tr class="fail">') == 2 * len(failed_outcome.failures)  # failures table + all table
    assert page.count('<tr class="pass">') == len(failed_outcome.checks) - len(failed_outcome.failures)
    for key in CONTEXT:
        assert f"<dt>{key}</dt>" in page


@pytest.mark.slow
def test_passed_validation_report(passed_outcome: ValidationOutcome) -> None:
    page = render_validation_html(passed_outcome, "Validation", CONTEXT)
    assert_standalone(page)
    assert "PASSED" in page and "Failed expectations" not in page
    assert f"all {len(passed_outcome.checks)} expectations of suite &#x27;flights&#x27; passed" in page
    assert page.count('<tr class="pass">') == len(passed_outcome.checks)
    assert "Suite parameters: year=2013, month=1, day=1." in page
    assert "Observed values are computed only when an expectation fails" in page


def test_error_report_shows_the_error_escaped() -> None:
    error = "landing/x.csv: rule 'csv': line 3 has 3 fields, the header has 2\n<b>second line</b>"
    page = render_error_html("Landing file rejected", {"file": "landing/x.csv"}, error)
    assert_standalone(page)
    assert "FAILED" in page
    assert "<pre>landing/x.csv: rule &#x27;csv&#x27;: line 3 has 3 fields, the header has 2\n&lt;b&gt;second" in page
    assert "<b>" not in page


def test_generic_report_renders_sections_tables_and_statuses() -> None:
    sections = [
        Section(
            title="Drift <by column>",
            text="first paragraph\n\nsecond & last",
            status="warn",
            table=Table(headers=("column", "score"), rows=[("a<", "0.1"), ("b", "0.9")], statuses=["pass", "fail"]),
        ),
        Section(title="Raw", preformatted="x < y"),
    ]
    page = render_report("Drift", {"k": "v"}, sections, Verdict(ok=True, summary="no drift", labels=("OK", "DRIFT")))
    assert_standalone(page)
    assert '<div class="verdict pass"><strong>OK</strong>no drift</div>' in page
    assert "<h2>Drift &lt;by column&gt;</h2>" in page
    assert "<p>first paragraph</p><p>second &amp; last</p>" in page
    assert '<tr class="pass"><td>a&lt;</td><td>0.1</td></tr><tr class="fail"><td>b</td><td>0.9</td></tr>' in page
    assert "<pre>x &lt; y</pre>" in page
    assert 'class="verdict' not in render_report("No verdict", {}, [])


def test_context_links_are_anchors_only_for_http_and_same_origin_paths() -> None:
    page = render_report(
        "t",
        {
            "MLflow run": Link("run <1>", "http://mlflow:5000/#/experiments/1/runs/a"),
            "DAG run": Link("d / r", "/dags/d/runs/r"),
            "bad": Link("click", "javascript:alert(1)"),
            "other host": Link("x", "//evil.example/"),
        },
        [],
    )
    assert '<a href="http://mlflow:5000/#/experiments/1/runs/a">run &lt;1&gt;</a>' in page
    assert '<a href="/dags/d/runs/r">d / r</a>' in page
    assert "javascript:" not in page and "evil.example" not in page
