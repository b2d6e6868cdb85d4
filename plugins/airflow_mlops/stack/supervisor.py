"""Processes of the stack: start a component in a session of its own, find, measure and stop sessions (psutil)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil

from airflow_mlops.stack.components import STACK_MARKER, component_argv, component_env
from airflow_mlops.stack.settings import HOST, StackConfig, StackError

_GONE = (psutil.NoSuchProcess, psutil.ZombieProcess, ProcessLookupError)
_DEAD = frozenset({psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD})


@dataclass(frozen=True)
class Proc:
    """One live process: its session (the component it belongs to) and resident memory."""

    pid: int
    ppid: int
    session: int
    state: str
    rss_kb: int


def _session(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:  # gone, or not ours to inspect
        return None


def processes() -> list[Proc]:
    """Every live (non-zombie) process on the machine."""
    out = []
    for proc in psutil.process_iter(["pid", "ppid", "status", "memory_info"]):
        info = proc.info
        session = _session(info["pid"])
        if info["status"] in _DEAD or session is None:
            continue
        rss = info["memory_info"].rss // 1024 if info["memory_info"] else 0
        out.append(Proc(info["pid"], info["ppid"] or 0, session, str(info["status"]), rss))
    return out


def session_members(leader: int, procs: Iterable[Proc] | None = None) -> list[Proc]:
    """Live processes of the session a component leads (its workers and tasks, even in their own groups)."""
    return [p for p in (processes() if procs is None else procs) if p.session == leader]


def _reap(pid: int) -> None:
    """Collect the exit status if the process is our own child, so it doesn't linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _is_live_leader(pid: int) -> bool:
    try:
        status = psutil.Process(pid).status()
    except _GONE:
        return False
    return status not in _DEAD and _session(pid) == pid


def pid_file(cfg: StackConfig, name: str) -> Path:
    return cfg.run_dir / f"{name}.pid"


def log_file(cfg: StackConfig, name: str) -> Path:
    return cfg.logs_dir / f"{name}.log"


def running_pid(cfg: StackConfig, name: str) -> int | None:
    """PID of the component if its pid file names a live session leader (stale files are ignored)."""
    path = pid_file(cfg, name)
    try:
        pid = int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    _reap(pid)
    return pid if _is_live_leader(pid) else None


def log_tail(path: Path, lines: int = 40) -> str:
    """Last lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log file {path})"
    tail = text.splitlines()[-lines:]
    return f"--- last {len(tail)} lines of {path} ---\n" + "\n".join(tail)


def port_in_use(port: int, host: str = HOST) -> bool:
    """Whether something accepts connections on the loopback port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def start(cfg: StackConfig, name: str, env: Mapping[str, str]) -> int:
    """Start one component with its log file and pid file; its pid."""
    log = log_file(cfg, name)
    with log.open("ab") as out:
        out.write(f"\n=== {datetime.now(UTC).isoformat()} starting {name} ===\n".encode())
        out.flush()
        # A session of its own: `down` can signal the component and everything it forks, and a Ctrl-C
        # in the terminal that ran `up` doesn't reach it.
        proc = subprocess.Popen(
            component_argv(cfg, name),
            env=component_env(cfg, name, env),
            cwd=cfg.state_dir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pid_file(cfg, name).write_text(f"{proc.pid}\n")
    return proc.pid


def stop(cfg: StackConfig, names: Sequence[str], grace: float = 30.0, quiet: bool = False) -> list[str]:
    """Stop components and everything they started (SIGTERM, then SIGKILL after `grace` seconds), in order.

    :returns: names of the components that were running.
    """
    leaders = {name: pid for name in names if (pid := running_pid(cfg, name)) is not None}
    for name, pid in leaders.items():
        if not quiet:
            print(f"stack: stopping {name} (pid {pid})")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    left = _leftovers(leaders.values())
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = _leftovers(leaders.values())
    for proc in left:
        # Task processes sit in groups of their own inside the session: signal each one.
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
    if left:
        time.sleep(1)
        left = _leftovers(leaders.values())
        if left:
            raise StackError(f"processes still alive after SIGKILL: {[p.pid for p in left]}")
    for name in names:
        pid_file(cfg, name).unlink(missing_ok=True)
    return list(leaders)


def _leftovers(leaders: Iterable[int]) -> list[Proc]:
    sessions = set(leaders)
    for pid in sessions:
        _reap(pid)
    return [p for p in processes() if p.session in sessions]


def stack_processes(cfg: StackConfig) -> list[Proc]:
    """Live processes that carry this stack's marker in their environment (used to prove a clean stop)."""
    marker = str(cfg.state_dir)
    out = []
    for proc in processes():
        try:
            environ = psutil.Process(proc.pid).environ()
        except (*_GONE, psutil.AccessDenied):
            continue
        if environ.get(STACK_MARKER) == marker:
            out.append(proc)
    return out


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    pid: int | None
    procs: int
    rss_kb: int
    pss_kb: int


def _pss_kb(pid: int) -> int:
    """Proportional set size (Linux); the unique set size where the platform has no PSS."""
    try:
        full = psutil.Process(pid).memory_full_info()
    except (*_GONE, psutil.AccessDenied):
        return 0
    return int(getattr(full, "pss", full.uss)) // 1024


def status(cfg: StackConfig, names: Sequence[str]) -> list[ComponentStatus]:
    """State of each component: pid, process count and memory (RSS and PSS of its whole session)."""
    procs = processes()
    out = []
    for name in names:
        pid = running_pid(cfg, name)
        members = session_members(pid, procs) if pid else []
        out.append(
            ComponentStatus(
                name=name,
                pid=pid,
                procs=len(members),
                rss_kb=sum(p.rss_kb for p in members),
                pss_kb=sum(_pss_kb(p.pid) for p in members),
            )
        )
    return out


def format_status(rows: Sequence[ComponentStatus]) -> str:
    """A table of component states with memory totals."""
    lines = [f"{'component':<14} {'state':<8} {'pid':>7} {'procs':>5} {'RSS MB':>7} {'PSS MB':>7}"]
    for row in rows:
        state = "running" if row.pid else "stopped"
        lines.append(
            f"{row.name:<14} {state:<8} {row.pid or '-':>7} {row.procs:>5} "
            f"{row.rss_kb / 1024:>7.0f} {row.pss_kb / 1024:>7.0f}"
        )
    rss = sum(r.rss_kb for r in rows) / 1024
    pss = sum(r.pss_kb for r in rows) / 1024
    lines.append(f"{'total':<14} {'':<8} {'':>7} {sum(r.procs for r in rows):>5} {rss:>7.0f} {pss:>7.0f}")
    return "\n".join(lines)
