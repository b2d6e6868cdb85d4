"""Parsing a DAG file loads no heavy library and does no lake or network I/O."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

DAG_FILES = sorted((Path(__file__).resolve().parents[2] / "dags").glob("*.py"))
HEAVY = ["pandas", "numpy", "sklearn", "mlflow", "great_expectations", "evidently", "boto3", "pyarrow", "scipy"]

PROBE = """
import json, runpy, socket, sys
import airflow.sdk  # what the DAG processor has loaded before it parses a file
def no_network(*args, **kwargs):
    raise RuntimeError("network access while parsing a DAG file")
socket.socket.connect = no_network
before = set(sys.modules)
runpy.run_path(sys.argv[1])
print(json.dumps(sorted(m for m in set(sys.modules) - before if m.split(".")[0] in HEAVY)))
"""


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_parse_loads_nothing_heavy(path: Path) -> None:
    code = f"HEAVY = {HEAVY!r}\n" + PROBE
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded == [], f"{path.name} loads {loaded} at parse time"


def test_there_are_dag_files() -> None:
    assert DAG_FILES
