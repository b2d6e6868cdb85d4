"""`python -m airflow_mlops feed` and `validate` run as real subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3

from airflow_mlops.core import demo
from airflow_mlops.core.lake.storage import S3Lake
from tests.conftest import run_cli


def feed(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "airflow_mlops", "feed", "--pipeline", "flight_delays", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False, env=env or dict(os.environ))


def test_feed_with_lake_root(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    proc = run_cli(sys.executable, "-m", "airflow_mlops", "feed", "--pipeline", "flight_delays",
                   "--start", "2013-01-30", "--end", "2013-02-02", "--lake-root", str(root))  # fmt: skip
    landing = root / "landing" / "flight_delays"
    days = ["2013-01-30", "2013-01-31", "2013-02-01", "2013-02-02"]
    assert sorted(p.name for p in (landing / "flights").iterdir()) == [f"{d}.csv" for d in days]
    assert sorted(p.name for p in (landing / "weather").iterdir()) == [f"{d}.csv" for d in days]
    assert (landing / "planes" / "planes.csv").read_bytes() == demo.table_csv("planes")
    flights_rows = sum(demo.csv_rows((landing / "flights" / f"{d}.csv").read_bytes()) for d in days)
    weather_rows = sum(demo.csv_rows((landing / "weather" / f"{d}.csv").read_bytes()) for d in days)
    outcome_rows = sum(demo.csv_rows((landing / "outcomes" / f"{d}.csv").read_bytes()) for d in days)
    assert f"flights: 4 files, {flights_rows} rows" in proc.stdout
    assert f"weather: 4 files, {weather_rows} rows" in proc.stdout
    assert f"outcomes: 4 files, {outcome_rows} rows" in proc.stdout  # 01-29..02-01's arrivals, a day late
    assert "planes: reference table written" in proc.stdout
    assert f"13 files written, {flights_rows + weather_rows + outcome_rows} rows" in proc.stdout

    before = {p: p.read_bytes() for p in landing.rglob("*.csv")}
    again = feed("--start", "2013-01-30", "--end", "2013-02-02", "--lake-root", str(root))
    assert again.returncode == 0, again.stderr
    assert "planes: reference table unchanged" in again.stdout
    assert {p: p.read_bytes() for p in landing.rglob("*.csv")} == before


def test_feed_uses_env_lake_root(lake_root: Path) -> None:
    # lake_root sets MLOPS_LAKE_ROOT in this process's environment, which the subprocess inherits.
    proc = feed("--start", "2013-06-01", "--end", "2013-06-01")
    assert proc.returncode == 0, proc.stderr
    assert (lake_root / "landing" / "flight_delays" / "flights" / "2013-06-01.csv").is_file()


def test_feed_to_s3(s3_lake_root: tuple[str, dict[str, Any]]) -> None:
    # The endpoint and fake credentials come from the environment set by the s3 fixtures.
    root, kwargs = s3_lake_root
    proc = feed("--start", "2013-03-10", "--end", "2013-03-10", "--lake-root", root)
    assert proc.returncode == 0, proc.stderr
    bucket, prefix = S3Lake.split(root)
    client = boto3.session.Session().client("s3", **kwargs)
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"])
    assert keys == [
        f"{prefix}/landing/flight_delays/{p}"
        for p in ["flights/2013-03-10.csv", "outcomes/2013-03-10.csv", "planes/planes.csv", "weather/2013-03-10.csv"]
    ]
    body = client.get_object(Bucket=bucket, Key=f"{prefix}/landing/flight_delays/flights/2013-03-10.csv")["Body"].read()
    assert body == demo.day_csv("flights", "2013-03-10")


def test_feed_errors(tmp_path: Path) -> None:
    root = str(tmp_path / "lake")
    outside = feed("--start", "2013-12-31", "--end", "2014-01-01", "--lake-root", root)
    assert outside.returncode == 1
    assert "error: no demo data for 2014-01-01" in outside.stderr
    assert not (tmp_path / "lake").exists()

    unknown = subprocess.run(
        [sys.executable, "-m", "airflow_mlops", "feed", "--pipeline", "no_such", "--start", "2013-01-01",
         "--end", "2013-01-01", "--lake-root", root],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert unknown.returncode == 1
    assert "no_such.yaml" in unknown.stderr

    env = {k: v for k, v in os.environ.items() if k != "MLOPS_LAKE_ROOT"}
    no_root = feed("--start", "2013-01-01", "--end", "2013-01-01", env=env)
    assert no_root.returncode == 1
    assert "no lake root: pass --lake-root or set [mlops] lake_root in airflow.cfg" in no_root.stderr

    missing = feed("--start", "2013-01-01")
    assert missing.returncode == 2
    assert "--end" in missing.stderr


def test_ingest_builds_the_features_the_dag_would_and_stops_on_a_bad_batch(tmp_path: Path) -> None:
    from airflow_mlops.config import pipeline_by_name
    from airflow_mlops.core.ingest.steps import build_feature_partition
    from airflow_mlops.core.lake import paths
    from airflow_mlops.core.lake.storage import open_lake

    root = tmp_path / "lake"
    run_cli(sys.executable, "-m", "airflow_mlops", "feed", "--pipeline", "flight_delays",
            "--start", "2013-01-01", "--end", "2013-01-02", "--lake-root", str(root))  # fmt: skip
    proc = run_cli(sys.executable, "-m", "airflow_mlops", "ingest", "--pipeline", "flight_delays",
                   "--start", "2013-01-01", "--end", "2013-01-02", "--lake-root", str(root))  # fmt: skip
    lake, cfg = open_lake(str(root)), pipeline_by_name("flight_delays")
    rows = sum(
        len(lake.read_parquet(lake.uri(paths.features("flight_delays", d)))) for d in ("2013-01-01", "2013-01-02")
    )
    assert f"(2 days): {rows} feature rows" in proc.stdout
    assert build_feature_partition(lake, cfg, "2013-01-02").content_hash == lake_hash(lake, "2013-01-02")

    landing = root / "landing" / "flight_delays" / "weather" / "2013-01-02.csv"
    landing.write_text(landing.read_text().replace("EWR", "XXX"))  # an unknown airport fails the suite
    bad = subprocess.run(
        [sys.executable, "-m", "airflow_mlops", "ingest", "--pipeline", "flight_delays", "--start", "2013-01-02",
         "--end", "2013-01-02", "--lake-root", str(root)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert bad.returncode == 1 and "weather" in bad.stderr and "quarantine" in bad.stderr


def lake_hash(lake: Any, ds: str) -> str:
    from airflow_mlops.core.lake import paths
    from airflow_mlops.core.lake.hashing import frame_hash

    return frame_hash(lake.read_parquet(lake.uri(paths.features("flight_delays", ds))))


def validate_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "airflow_mlops", "validate", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False, cwd=cwd)


def test_validate_passes_the_shipped_pipelines() -> None:
    """What the pre-commit hook of docs/configuration.md runs, with the Great Expectations check of the suites."""
    root = Path(__file__).resolve().parents[2]
    proc = validate_cli("include/pipelines", cwd=root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == "OK: 2 pipeline file(s) valid (include/pipelines)\n"


def test_validate_prints_each_problem_and_fails(tmp_path: Path) -> None:
    shipped = Path(__file__).resolve().parents[2] / "include" / "pipelines" / "flight_delays.yaml"
    text = shipped.read_text()
    bad = tmp_path / "flight_delays.yaml"
    bad.write_text(text.replace("plane_age: year - plane_year", "plane_age: year - @plane_year"))
    other = tmp_path / "other.yaml"
    other.write_text(
        text.replace("name: flight_delays", "name: other").replace('schedule: "@weekly"', "schedule: weekly")
    )
    proc = validate_cli(str(tmp_path), "--no-gx")
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    age = text.splitlines().index("    plane_age: year - plane_year") + 1
    weekly = text.splitlines().index('  schedule: "@weekly"') + 1
    assert lines[0].startswith(f"{bad}:{age}: features.derived.plane_age: `@` (a Python variable")
    assert lines[1].startswith(f"{other}:{weekly}: train.schedule: Value error, 'weekly' is not a cron expression")
    assert len(lines) == 2 and proc.stderr == "2 problem(s) in 2 file(s)\n"
