"""The host's own network state, read before, during and after a real node runs: its iptables/nftables
rulesets, ipsets, links and net sysctls (the node's live in its own namespace)."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from pathlib import Path

PROC_SYS = Path("/proc/sys")
READ_TIMEOUT_S = 20
# Counters the kernel moves on its own, whatever the node does.
VOLATILE_NET_SYSCTLS = frozenset({"nf_conntrack_count"})


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


def host_network_state(ignore_links: frozenset[str] = frozenset()) -> dict[str, object]:
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
