"""The real node's cgroup subtree: one directory per hierarchy, holding the node's daemons and its pods."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

MOUNTS = Path("/proc/self/mounts")
DAEMONS = "node"  # containerd, kubelet, ... (the pods go to kubepods/, which the kubelet creates)
KILL_TIMEOUT_S = 20


def hierarchies() -> list[Path]:
    """Mount points of every cgroup hierarchy (v1: one per controller set; v2: the unified one)."""
    found = []
    for line in MOUNTS.read_text().splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[2] in ("cgroup", "cgroup2"):
            found.append(Path(fields[1]))
    return found


def create(root: str) -> None:
    """Make ``/root`` and ``/root/node`` in every hierarchy (the kubelet refuses a cgroupRoot that does not exist)."""
    for hierarchy in hierarchies():
        for path in (hierarchy / root, hierarchy / root / DAEMONS):
            path.mkdir(exist_ok=True)
            # A v1 cpuset cgroup starts with no CPUs and memory nodes: no task could join it.
            for knob in ("cpuset.cpus", "cpuset.mems"):
                if (path / knob).exists() and not (path / knob).read_text().strip():
                    (path / knob).write_text((path.parent / knob).read_text())


def daemon_procs_files(root: str) -> list[Path]:
    """The cgroup.procs files of the node's daemon cgroup, one per hierarchy."""
    return [path for h in hierarchies() if (path := h / root / DAEMONS / "cgroup.procs").exists()]


def join(procs_files: list[Path]) -> None:
    """Move the calling process into the cgroups of ``procs_files`` (run in the child before exec)."""
    pid = str(os.getpid())
    for procs in procs_files:
        procs.write_text(pid)


def pids(root: str) -> set[int]:
    """Every process anywhere under ``/root``, in any hierarchy."""
    found: set[int] = set()
    for hierarchy in hierarchies():
        for procs in (hierarchy / root).rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                found.update(int(p) for p in procs.read_text().split())
    return found


def kill_all(root: str, timeout_s: float = KILL_TIMEOUT_S) -> set[int]:
    """SIGKILL every process under ``/root`` until none is left (a kubelet may start more while we kill);
    returns those still alive at the timeout."""
    deadline = time.monotonic() + timeout_s
    while (left := pids(root)) and time.monotonic() < deadline:
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    return pids(root)


def remove(root: str, timeout_s: float = KILL_TIMEOUT_S) -> list[str]:
    """Remove the subtree, deepest first, in every hierarchy, retrying while the kernel still releases the
    cgroups of just-killed processes (EBUSY); returns the directories that would not go."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = []
        for top in (h / root for h in hierarchies()):
            if not top.exists():
                continue
            for path in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts),
                               reverse=True):
                with contextlib.suppress(OSError):
                    path.rmdir()
            try:
                top.rmdir()
            except OSError:
                left.append(str(top))
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.2)
