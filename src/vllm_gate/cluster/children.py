"""Processes the local cluster starts beside its components (simulators, Prometheus), recorded for reaping."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

CHILD_PIDS_FILE = "vllm-gate-children.pids"


def process_start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    return stat.rpartition(")")[2].split()[19]


def record_child(cluster_dir: Path, pid: int) -> None:
    """Note a child, so a later start or the watchdog can kill it after a crash of its owner."""
    with (cluster_dir / CHILD_PIDS_FILE).open("a") as f:
        f.write(f"{pid}:{process_start_time(pid)}\n")


def kill_recorded_children(cluster_dir: Path) -> None:
    """Kill every child recorded for a cluster that still runs; a reused PID (another start time) is left alone."""
    pidfile = cluster_dir / CHILD_PIDS_FILE
    if not pidfile.exists():
        return
    for line in pidfile.read_text().split():
        pid, _, started = line.partition(":")
        with contextlib.suppress(ProcessLookupError, ValueError):
            if process_start_time(int(pid)) == started:
                os.kill(int(pid), signal.SIGKILL)
    pidfile.unlink(missing_ok=True)
