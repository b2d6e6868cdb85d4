"""Model server: the `champion` of each pipeline over HTTP/JSON, hot-swapped, with an inference log and metrics."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from airflow_mlops import settings
from airflow_mlops.serving.config import (
    ENV_ADMIN_TOKEN,
    ENV_ADMIN_TOKEN_FILE,
    ENV_TOKEN,
    ENV_TOKEN_FILE,
    ENV_TRACKING_URI,
    ServerSettings,
    SettingsError,
    read_token,
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m airflow_mlops.serving", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8088)
    parser.add_argument(
        "--tracking-uri", default=os.environ.get(ENV_TRACKING_URI), help=f"default: ${ENV_TRACKING_URI}"
    )
    parser.add_argument("--token", default=os.environ.get(ENV_TOKEN), help=f"API token; default: ${ENV_TOKEN}")
    for flag, env, what in (
        ("--token-file", ENV_TOKEN_FILE, "file holding the API token (instead of --token)"),
        ("--admin-token", ENV_ADMIN_TOKEN, "token of /admin/reload (none: that route is refused)"),
        ("--admin-token-file", ENV_ADMIN_TOKEN_FILE, "file holding the admin token"),
    ):
        parser.add_argument(flag, default=os.environ.get(env), help=f"{what}; default: ${env}")
    lake, pipelines = settings.LAKE_ROOT, settings.PIPELINES_DIR
    parser.add_argument("--lake-root", default=settings.lake_root(), help=f"default: ${lake.env}, ${lake.airflow_env}")
    parser.add_argument("--pipelines-dir", type=Path, help=f"default: ${pipelines.env}, ${pipelines.airflow_env}")
    parser.add_argument("--poll-seconds", type=float, default=5.0, help="champion alias check interval")
    parser.add_argument("--max-rows", type=int, default=1000, help="largest batch per request")
    parser.add_argument("--max-body-bytes", type=int, default=8 * 1024 * 1024, help="largest request body")
    parser.add_argument("--flush-seconds", type=float, default=30.0, help="inference log write interval")
    parser.add_argument("--flush-rows", type=int, default=5000, help="inference log write after this many rows")
    parser.add_argument("--max-buffer-rows", type=int, default=100_000,
                        help="most inference log rows kept in memory while writes fail; more are dropped")  # fmt: skip
    parser.add_argument("--log-level", default="info")
    return parser.parse_args(argv)


def server_settings(args: argparse.Namespace) -> ServerSettings:
    """The settings of the command line; SettingsError naming what is missing or wrong."""
    token = read_token(args.token, args.token_file, "the API token")
    admin_token = read_token(args.admin_token, args.admin_token_file, "the admin token")
    problems = [
        f"{what} is required ({how})"
        for what, value, how in (
            ("an API token", token, f"--token, --token-file, ${ENV_TOKEN} or ${ENV_TOKEN_FILE}"),
            ("the MLflow tracking URI", args.tracking_uri, f"--tracking-uri or ${ENV_TRACKING_URI}"),
            ("the lake root", args.lake_root, f"--lake-root or ${settings.LAKE_ROOT.env}"),
        )
        if not value
    ]
    if problems:
        raise SettingsError("; ".join(problems))
    assert token is not None  # checked above; for the type checker
    return ServerSettings(
        tracking_uri=args.tracking_uri,
        token=token,
        admin_token=admin_token,
        lake_root=args.lake_root,
        poll_seconds=args.poll_seconds,
        max_rows=args.max_rows,
        max_body_bytes=args.max_body_bytes,
        flush_seconds=args.flush_seconds,
        flush_rows=args.flush_rows,
        max_buffer_rows=args.max_buffer_rows,
        pipelines_dir=args.pipelines_dir,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until SIGINT/SIGTERM; the inference log is flushed on the way out.

    After a graceful shutdown uvicorn re-raises the signal, so the exit status is that of the signal.
    """
    import uvicorn

    from airflow_mlops.serving.app import ModelServer

    args = parse_args(argv)
    try:
        conf = server_settings(args)
    except SettingsError as exc:
        print(f"model server: {exc}")
        return 2
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no progress bars in a service log
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = ModelServer(conf)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        lifespan="on",
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=30,
    )
    return 0
