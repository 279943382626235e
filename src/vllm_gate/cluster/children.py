"""Processes the local cluster starts beside its components (simulators, Prometheus), recorded for reaping."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

CHILD_PIDS_FILE = "vllm-gate-children.pids"


def record_child(cluster_dir: Path, pid: int) -> None:
    """Note a child's PID, so a later start or the watchdog can kill it after a crash of its owner."""
    with (cluster_dir / CHILD_PIDS_FILE).open("a") as f:
        f.write(f"{pid}\n")


def kill_recorded_children(cluster_dir: Path) -> None:
    """Kill every child recorded for a cluster (after a crash of the process that started them)."""
    pidfile = cluster_dir / CHILD_PIDS_FILE
    if not pidfile.exists():
        return
    for line in pidfile.read_text().split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(line), signal.SIGKILL)
    pidfile.unlink(missing_ok=True)
