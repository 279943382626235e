"""What a real node may change on its host: kernel-wide sysctls (saved and restored) and the host's network state
(read, so tests can show the node's own rules, links and sysctls stayed inside its namespace)."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from pathlib import Path

# Kernel-wide (not per network namespace) settings the kubelet writes at start (its "kernel tunables",
# pkg/kubelet/cm/container_manager_linux.go setupKernelTunables); restored at teardown.
KUBELET_KERNEL_SYSCTLS = ("vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
                          "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes")
PROC_SYS = Path("/proc/sys")
READ_TIMEOUT_S = 20
# Counters the kernel moves on its own, whatever the node does.
VOLATILE_NET_SYSCTLS = frozenset({"nf_conntrack_count"})


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


def _run(args: list[str]) -> str:
    if shutil.which(args[0]) is None:
        return f"({args[0]} not installed)"
    proc = subprocess.run(args, capture_output=True, text=True, timeout=READ_TIMEOUT_S, check=False)
    return proc.stdout if proc.returncode == 0 else f"({' '.join(args)}: exit {proc.returncode})"


def _net_sysctls(ignore_links: frozenset[str]) -> dict[str, str]:
    values = {}
    for path in sorted((PROC_SYS / "net").rglob("*")):
        if ignore_links.intersection(path.parts):  # net/ipv4/conf/LINK/..., net/ipv4/neigh/LINK/...
            continue
        with contextlib.suppress(OSError):
            if path.is_file() and path.name not in VOLATILE_NET_SYSCTLS:
                values[str(path.relative_to(PROC_SYS))] = path.read_text().strip()
    return values


def _links(ignore: frozenset[str]) -> list[str]:
    out = json.loads(_run(["ip", "-j", "link", "show"]) or "[]")
    return sorted(f"{link['ifname']} {link.get('operstate', '')} {link.get('address', '')}"
                  for link in out if link["ifname"] not in ignore)


def network_state(ignore_links: frozenset[str] = frozenset()) -> dict[str, object]:
    """The host network namespace's rulesets, ipsets, links (but ``ignore_links``) and net sysctls."""
    return {
        "iptables": _strip_counters(_run(["iptables-save"])),
        "ip6tables": _strip_counters(_run(["ip6tables-save"])),
        "nftables": _run(["nft", "list", "ruleset"]),
        "ipsets": _run(["ipset", "list"]),
        "links": _links(ignore_links),
        "net_sysctls": _net_sysctls(ignore_links),
    }


def _strip_counters(saved: str) -> str:
    """iptables-save output without comments and packet counters (they move with any traffic)."""
    lines = []
    for line in saved.splitlines():
        if line.startswith("#"):
            continue
        if line.startswith(":"):
            line = line.rsplit(" ", 1)[0]  # ":CHAIN POLICY [pkts:bytes]"
        lines.append(line)
    return "\n".join(lines)
