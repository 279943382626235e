"""What a real node changes on its host: the kernel-wide sysctls the kubelet writes, saved before and restored."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

# Kernel-wide (not per network namespace) settings the kubelet writes at start (its "kernel tunables",
# pkg/kubelet/cm/container_manager_linux.go setupKernelTunables); restored at teardown.
KUBELET_KERNEL_SYSCTLS = ("vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
                          "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes")
PROC_SYS = Path("/proc/sys")


def read_sysctls(keys: tuple[str, ...] = KUBELET_KERNEL_SYSCTLS) -> dict[str, str]:
    """The current values of ``keys`` (paths under /proc/sys); an unreadable key is left out."""
    values = {}
    for key in keys:
        with contextlib.suppress(OSError):
            values[key] = (PROC_SYS / key).read_text().strip()
    return values


def restore_sysctls(values: dict[str, str]) -> list[str]:
    """Write back saved values; returns one line per key that could not be restored."""
    problems = []
    for key, value in values.items():
        path = PROC_SYS / key
        try:
            if path.read_text().strip() != value:
                path.write_text(value)
        except OSError as exc:
            problems.append(f"sysctl {key.replace('/', '.')}: not restored to {value}: {exc.strerror}")
    return problems


def save_sysctls(path: Path) -> None:
    """Record the kernel-wide values before the node touches them, once (a later start keeps the first record)."""
    if not path.exists():
        path.write_text(json.dumps(read_sysctls()))


def restore_saved_sysctls(path: Path) -> list[str]:
    """Restore what save_sysctls recorded, then forget the record."""
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    problems = restore_sysctls(values)
    if not problems:
        path.unlink(missing_ok=True)
    return problems
