"""Helpers shared by the stack's tests."""

from __future__ import annotations

from pathlib import Path

from airflow_mlops.stack.settings import StackConfig, merge_settings


def make_cfg(tmp_path: Path, environ: dict[str, str] | None = None, **settings: str) -> StackConfig:
    """A stack config in a temp folder, from settings given as keywords (over the defaults)."""
    merged = merge_settings({"MLOPS_STATE_DIR": str(tmp_path / "state"), **settings}, environ or {})
    return StackConfig(settings=merged, environ=environ or {"PATH": "/usr/bin"}, repo_root=tmp_path / "repo")
