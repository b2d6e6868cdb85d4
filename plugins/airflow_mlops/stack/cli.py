"""Command line of the stack: `python -m airflow_mlops.stack up|down|status|backends|env|demo|ingest-demo`."""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from airflow_mlops.stack import backends, control, demo
from airflow_mlops.stack.components import stack_env
from airflow_mlops.stack.keys import ensure_secrets
from airflow_mlops.stack.settings import SETTINGS_FILE, StackConfig, StackError
from airflow_mlops.stack.supervisor import format_status


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_mlops.stack",
        description="The local stack on 127.0.0.1, set up by mlops.env. Profile embedded: Airflow on SQLite with "
        "the LocalExecutor, MLflow on SQLite, a local lake. Profile distributed (MLOPS_STACK_PROFILE=distributed "
        "or --distributed): Airflow and MLflow on PostgreSQL, the CeleryExecutor on Redis with Celery workers, "
        "the lake and MLflow's artifacts in S3.",
    )
    parser.add_argument("--settings", type=Path, help=f"settings file (default {SETTINGS_FILE})")
    parser.add_argument("--state-dir", help="state folder (overrides MLOPS_STATE_DIR)")
    profile = argparse.ArgumentParser(add_help=False)
    profile.add_argument(
        "--distributed",
        action="store_true",
        help="the distributed profile, whatever mlops.env says (same as MLOPS_STACK_PROFILE=distributed)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("up", parents=[profile], help="start the stack (does nothing for components already running)")
    commands.add_parser("down", parents=[profile], help="stop the stack")
    commands.add_parser("status", parents=[profile], help="state and memory of each component")
    commands.add_parser(
        "backends",
        parents=[profile],
        help="distributed profile: check Redis, create the PostgreSQL databases and the S3 bucket if missing "
        "(what `up` does first; the compose stack runs it before `airflow db migrate`)",
    )
    commands.add_parser(
        "env", parents=[profile], help="print the stack's environment as export lines, for `airflow` commands"
    )
    demo_cmd = commands.add_parser(
        "demo",
        parents=[profile],
        help="the main job: start the stack and run the whole lifecycle over demo days, then print a summary",
        description="Lands the days start..end; ingests start..history-end in one process; trains and deploys the "
        "first model; then Airflow runs the live days (ingest, score, monitor, retrains the monitor triggers).",
    )
    ingest_cmd = commands.add_parser(
        "ingest-demo", parents=[profile], help="start the stack, land demo days and backfill the ingest DAG"
    )
    for cmd in (demo_cmd, ingest_cmd):
        cmd.add_argument("--pipeline", help="pipeline name (default MLOPS_DEMO_PIPELINE)")
        cmd.add_argument("--start", type=_date, help="first logical date (default MLOPS_DEMO_START)")
        cmd.add_argument("--end", type=_date, help="last logical date, included (default MLOPS_DEMO_END)")
        cmd.add_argument(
            "--reprocess",
            choices=("none", "failed", "completed"),
            default="failed",
            help="days that already have a run: keep them, rerun the failed ones (default), or rerun all",
        )
    demo_cmd.add_argument(
        "--history-end", type=_date, help="last day ingested in one process before the live days (default "
        "MLOPS_DEMO_HISTORY_END)"
    )  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if isinstance(sys.stdout, io.TextIOWrapper):
        # Progress lines must show up in order with the output of the commands run in between.
        sys.stdout.reconfigure(line_buffering=True)
    try:
        overrides = {"MLOPS_STATE_DIR": args.state_dir} if args.state_dir else {}
        if args.distributed:
            overrides["MLOPS_STACK_PROFILE"] = "distributed"
        cfg = StackConfig.load(args.settings, overrides=overrides)
        if args.command == "up":
            control.up(cfg)
        elif args.command == "down":
            control.down(cfg)
        elif args.command == "status":
            print(format_status(control.status(cfg)))
        elif args.command == "backends":
            created = backends.prepare(cfg)
            print(f"backends: created {', '.join(created)}" if created else "backends: all present")
        elif args.command == "env":
            env = stack_env(cfg, ensure_secrets(cfg))
            keys = sorted(k for k in env if k.startswith(("AIRFLOW", "MLOPS_", "MLFLOW_")))
            print("\n".join(f"export {k}={_shell_quote(env[k])}" for k in keys))
        else:
            start = args.start or _date(cfg.settings["MLOPS_DEMO_START"])
            end = args.end or _date(cfg.settings["MLOPS_DEMO_END"])
            pipeline = args.pipeline or cfg.settings["MLOPS_DEMO_PIPELINE"]
            if args.command == "ingest-demo":
                return demo.ingest_demo(cfg, pipeline, start, end, args.reprocess)
            history_end = args.history_end or _date(cfg.settings["MLOPS_DEMO_HISTORY_END"])
            return demo.main_loop(cfg, pipeline, start, history_end, end, args.reprocess)
    except (StackError, argparse.ArgumentTypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def _shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"
