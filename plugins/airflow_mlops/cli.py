"""Command line of the package: `python -m airflow_mlops <command> ...`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from airflow_mlops import settings
from airflow_mlops.core.lake import paths


class CliError(Exception):
    """A command cannot run; printed as `error: <message>` with exit status 1."""


def _read_airflow_config() -> None:
    # The settings read Airflow's [mlops] section only in a process that loaded Airflow's configuration:
    # load it, so these commands see the deployment's airflow.cfg as its DAGs do.
    import airflow.configuration  # noqa: F401


def _lake_root(args: argparse.Namespace) -> str:
    root = args.lake_root or settings.lake_root()
    if not root:
        raise CliError(f"no lake root: pass --lake-root or {settings.LAKE_ROOT.hint}")
    return str(root)


def _feed(args: argparse.Namespace) -> None:
    from airflow_mlops.config import PipelineConfigError, pipeline_by_name
    from airflow_mlops.core import demo
    from airflow_mlops.core.lake.storage import StorageError, open_lake

    _read_airflow_config()
    root = _lake_root(args)
    try:
        cfg = pipeline_by_name(args.pipeline)
        days = demo.date_range(args.start, args.end)
        lake = open_lake(root)
        written = demo.feed_range(lake, cfg, days[0], days[-1])
    except (PipelineConfigError, demo.DemoDataError, StorageError) as exc:
        raise CliError(str(exc)) from exc
    rows = dict.fromkeys(cfg.partitioned_sources, 0)
    for ds in days:
        files = demo.landing_files(cfg, ds)
        for name, src in cfg.partitioned_sources.items():
            rows[name] += demo.csv_rows(files[src.landing_path(ds)])
    written_set = set(written)
    print(f"fed {cfg.name} {days[0]}..{days[-1]} ({len(days)} days) into {lake.uri('landing', cfg.name)}")
    for name, count in rows.items():
        print(f"  {name}: {len(days)} files, {count} rows")
    for name, src in cfg.sources.items():
        if not src.partitioned:
            state = "written" if lake.uri(paths.landing(cfg.name, src.path)) in written_set else "unchanged"
            print(f"  {name}: reference table {state}")
    print(f"{len(written)} files written, {sum(rows.values())} rows")


def _ingest(args: argparse.Namespace) -> None:
    from airflow_mlops.config import PipelineConfigError, pipeline_by_name
    from airflow_mlops.core import demo
    from airflow_mlops.core.ingest.steps import BatchRejected, ingest_day
    from airflow_mlops.core.lake.storage import StorageError, open_lake

    _read_airflow_config()
    root = _lake_root(args)
    try:
        cfg = pipeline_by_name(args.pipeline)
        lake = open_lake(root)
        days = demo.date_range(args.start, args.end)
        rows = 0
        for ds in days:
            result = ingest_day(lake, cfg, ds, {"dag_id": "cli ingest", "run_id": f"{args.start}..{args.end}"})
            rows += result.rows
    except (PipelineConfigError, demo.DemoDataError, StorageError, BatchRejected) as exc:
        raise CliError(str(exc)) from exc
    print(f"ingested {cfg.name} {days[0]}..{days[-1]} ({len(days)} days): {rows} feature rows")


def _validate(args: argparse.Namespace) -> int:
    from airflow_mlops.validate import validate

    paths = [Path(p) for p in args.paths] or None
    report = validate(paths, gx=not args.no_gx)
    for problem in report.problems:
        print(problem)
    if report.problems:
        files = {p.file for p in report.problems}
        print(f"{len(report.problems)} problem(s) in {len(files)} file(s)", file=sys.stderr)
        return 1
    where = ", ".join(args.paths) or str(settings.pipelines_dir())
    print(f"OK: {len(report.files)} pipeline file(s) valid ({where})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m airflow_mlops", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    feed = commands.add_parser(
        "feed",
        help="land demo data (real NYC 2013 flights) for a range of dates",
        description="Land one file per partitioned source and date into landing/<pipeline>/, as upstream "
        "would, plus the reference tables. Rerunning rewrites identical files. An S3 root uses boto3's "
        "default credentials and AWS_ENDPOINT_URL.",
    )
    feed.add_argument("--pipeline", required=True, help="pipeline name (include/pipelines/<name>.yaml)")
    feed.add_argument("--start", required=True, help="first date, YYYY-MM-DD")
    feed.add_argument("--end", required=True, help="last date (included), YYYY-MM-DD")
    feed.add_argument("--lake-root", help="local folder or s3://bucket/prefix; default: [mlops] lake_root")
    feed.set_defaults(func=_feed)
    ingest = commands.add_parser(
        "ingest",
        help="run the ingest DAG's steps for landed days in this process (bulk history loads)",
        description="Copy, validate (Great Expectations) and build features for each day, as <p>__ingest does, "
        "in one process: for loading history faster than one DAG run per day. A rejected batch stops it.",
    )
    ingest.add_argument("--pipeline", required=True, help="pipeline name (include/pipelines/<name>.yaml)")
    ingest.add_argument("--start", required=True, help="first date, YYYY-MM-DD")
    ingest.add_argument("--end", required=True, help="last date (included), YYYY-MM-DD")
    ingest.add_argument("--lake-root", help="local folder or s3://bucket/prefix; default: [mlops] lake_root")
    ingest.set_defaults(func=_ingest)
    check = commands.add_parser(
        "validate",
        help="check pipeline files without running them (schema, expressions, schedules, suites)",
        description="Check pipeline files as far as possible without data, lake or servers: the schema, the "
        "expressions, the schedules, the suites (inside the expectations folder, accepted by Great "
        "Expectations, naming declared columns of compatible types), and the columns that slices and drift "
        "name. Every problem is printed as file:line: key: message; the exit status is 1 when there is any.",
    )
    check.add_argument(
        "paths",
        nargs="*",
        metavar="FILE|FOLDER",
        help=f"pipeline files or folders; default ${settings.ENV_PIPELINES_DIR}",
    )
    check.add_argument("--no-gx", action="store_true", help="skip the Great Expectations check of the suites (faster)")
    check.set_defaults(func=_validate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the exit status."""
    args = build_parser().parse_args(argv)
    try:
        status = args.func(args)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return int(status or 0)
