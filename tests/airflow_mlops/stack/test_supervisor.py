"""Tests of process supervision: sessions found with psutil, stopped whole, stale pid files ignored."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from airflow_mlops.stack.supervisor import (
    format_status,
    pid_file,
    processes,
    running_pid,
    session_members,
    status,
    stop,
)
from tests.airflow_mlops.stack.helpers import make_cfg


def test_processes_see_this_one_with_its_session_and_memory() -> None:
    (me,) = [p for p in processes() if p.pid == os.getpid()]
    assert me.session == os.getsid(0) and me.ppid == os.getppid()
    assert me.rss_kb > 10_000


def test_stop_ends_a_component_and_the_process_groups_it_made(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path)
    cfg.run_dir.mkdir(parents=True)
    # Like a task process, the child moves to a process group of its own: killpg of the leader misses it.
    child = "import os, time; os.setpgid(0, 0); time.sleep(120)"
    script = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {child!r}]); time.sleep(120)"
    leader = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    pid_file(cfg, "triggerer").write_text(f"{leader.pid}\n")
    deadline = time.monotonic() + 20
    while len(session_members(leader.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    members = session_members(leader.pid)
    assert len(members) == 2 and len({os.getpgid(p.pid) for p in members}) == 2

    assert running_pid(cfg, "triggerer") == leader.pid
    (row,) = status(cfg, ["triggerer"])
    assert (row.pid, row.procs) == (leader.pid, 2) and row.rss_kb > 0 and row.pss_kb > 0
    assert stop(cfg, ["scheduler", "triggerer"], grace=5, quiet=True) == ["triggerer"]
    assert session_members(leader.pid) == []
    assert leader.poll() is not None
    assert not pid_file(cfg, "triggerer").exists()


def test_a_stale_pid_file_is_not_a_running_component(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path)
    cfg.run_dir.mkdir(parents=True)
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid_file(cfg, "scheduler").write_text(done.stdout)
    assert running_pid(cfg, "scheduler") is None
    # Alive, but not the leader of a session of its own as the stack starts them: a reused pid.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        pid_file(cfg, "scheduler").write_text(str(other.pid))
        assert running_pid(cfg, "scheduler") is None
    finally:
        other.kill()
        other.wait()


def test_status_table_of_stopped_components(tmp_path: Path) -> None:
    rows = status(make_cfg(tmp_path), ["mlflow", "scheduler"])
    lines = format_status(rows).splitlines()
    assert [line.split()[:2] for line in lines[1:3]] == [["mlflow", "stopped"], ["scheduler", "stopped"]]
    assert lines[-1].split()[:2] == ["total", "0"]
