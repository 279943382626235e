"""The real node's own network and mount namespaces, held by one sleeping process, joined to the host by a veth pair.

Everything the node's daemons create in the network (bridge, routes, iptables/nftables chains, ipsets, net
sysctls) lives and dies with the network namespace; /run and /var/log are private tmpfs mounts and the kubelet's
hard-coded /var/lib/kubelet and /var/lib/cni are bind mounts of the cluster's own directories, all gone with the
mount namespace once its last process exits.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import select
import subprocess
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

from vllm_gate.base.errors import ClusterError
from vllm_gate.cluster.node import cgroups as node_cgroups
from vllm_gate.cluster.node.config import NodeNetwork

READY_TIMEOUT_S = 15
COMMAND_TIMEOUT_S = 20
NODE_LINK = "eth0"
# Paths the kubelet and the CNI plugins use whatever they are told; bound onto the cluster's own directories.
HARD_CODED_DIRS = ("/var/lib/kubelet", "/var/lib/cni")

# Runs inside the new namespaces: private /run and /var/log, the hard-coded directories bound to ours, the
# machine the kubelet's cadvisor sees (a CPU list and a meminfo written for the node), lo up.
# $1, $2: what to bind on /var/lib/kubelet and /var/lib/cni; $3, $4, $5: on /sys/devices/system/cpu,
# /sys/devices/system/node and /proc/meminfo.
_SETUP = """set -e
mount -t tmpfs -o mode=0755 vllm-gate-node-run /run
mkdir -p /run/netns /run/lock
mount -t tmpfs -o mode=0755 vllm-gate-node-log /var/log
mount --bind "$1" /var/lib/kubelet
mount --bind "$2" /var/lib/cni
mount --bind "$3" /sys/devices/system/cpu
mount --bind "$4" /sys/devices/system/node
mount --bind "$5" /proc/meminfo
ip link set lo up
echo ready
exec sleep infinity >/dev/null
"""
MEMINFO = Path("/proc/meminfo")


def _run(args: Sequence[str], what: str) -> None:
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)
    if proc.returncode != 0:
        raise ClusterError(f"real node: {what} failed: {' '.join(args)}: {proc.stderr.strip()[:300]}")


def host_link_name(cluster_name: str) -> str:
    """The host end's interface name: short (15 bytes at most) and tied to the cluster."""
    return f"vgn{zlib.crc32(cluster_name.encode()) & 0xFFFFFF:06x}"


class NodeNamespace:
    """A process in fresh network + mount namespaces; ``enter`` prefixes a command to run inside them."""

    def __init__(self, cluster_name: str, cgroup_root: str, network: NodeNetwork) -> None:
        self.cluster_name = cluster_name
        self.cgroup_root = cgroup_root
        self.network = network
        self.host_link = host_link_name(cluster_name)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise ClusterError("real node: its namespaces are not started")
        return self.proc.pid

    def enter(self, *command: str) -> list[str]:
        return ["nsenter", f"--target={self.pid}", "--net", "--mount", "--", *command]

    def preexec(self) -> Callable[[], None]:
        """For Popen: put the child in the node's daemon cgroup, so teardown finds it (the paths are found here,
        in the parent: the child only writes)."""
        procs = node_cgroups.daemon_procs_files(self.cgroup_root)
        return lambda: node_cgroups.join(procs)

    def start(self, kubelet_root: Path, cni_state: Path, machine: Path, *, cpus: int, memory_bytes: int,
              api_port: int, keep_fds: Sequence[int] = ()) -> None:
        """``machine``: a directory for the CPU list and meminfo the node's kubelet reads (``cpus``,
        ``memory_bytes``); ``api_port``: the one host port pods may reach; ``keep_fds``: held by the namespace
        holder for the node's life (its lock)."""
        kubelet_root.mkdir(parents=True, exist_ok=True)
        cni_state.mkdir(parents=True, exist_ok=True)
        cpu_dir, numa_dir, meminfo = write_machine(machine, cpus, memory_bytes)
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--net", "--propagation", "slave", "--", "sh", "-c", _SETUP, "sh",
             str(kubelet_root), str(cni_state), str(cpu_dir), str(numa_dir), str(meminfo)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=tuple(keep_fds),
            start_new_session=True, preexec_fn=self.preexec())  # it only writes cgroup.procs before exec
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], READY_TIMEOUT_S)
        line = self.proc.stdout.readline().decode().strip() if ready else ""
        if line != "ready":
            self.proc.kill()
            err = self.proc.stderr.read().decode(errors="replace").strip() if self.proc.stderr else ""
            self.proc.wait(5)
            raise ClusterError(f"real node: its namespaces would not start: {err[:300] or 'no answer'}")
        self._link(api_port)

    def _link(self, api_port: int) -> None:
        net = self.network
        _run(["ip", "link", "add", self.host_link, "type", "veth", "peer", "name", NODE_LINK, "netns", str(self.pid)],
             "veth pair")
        _run(["ip", "addr", "add", f"{net.host_address}/{net.link_prefix}", "dev", self.host_link], "host address")
        _run(["ip", "link", "set", self.host_link, "up"], "host link up")
        inside = self.enter
        _run(inside("ip", "addr", "add", f"{net.node_address}/{net.link_prefix}", "dev", NODE_LINK), "node address")
        _run(inside("ip", "link", "set", NODE_LINK, "up"), "node link up")
        _run(inside("ip", "route", "add", "default", "via", net.host_address), "node default route")
        _run(inside("sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"), "forwarding in the node")
        # Pod traffic stays in the cluster's namespaces: out of the node it may only reach the API server, the
        # rehearsal registry and the recorded dcgm-exporter (mangle runs before the filter chains kube-proxy and
        # kube-router manage, and they never touch it).
        for rule in (*(["-d", net.host_address, "-p", "tcp", "--dport", str(port), "-j", "ACCEPT"]
                       for port in (api_port, net.registry_port, net.dcgm_port)),
                     ["-j", "DROP"]):
            _run(inside("iptables", "-t", "mangle", "-A", "FORWARD", "-s", net.pod_cidr, "-o", NODE_LINK, *rule),
                 "confining pod traffic")


def write_machine(directory: Path, cpus: int, memory_bytes: int) -> tuple[Path, Path, Path]:
    """The machine a GPU node of the pool is, as the kubelet's cadvisor reads it: ``cpus`` CPU directories
    without topology (so it counts them; sysinfo.getCPUTopology), no NUMA nodes, and this host's meminfo with
    MemTotal set to ``memory_bytes``. Only the node's own mount namespace sees them."""
    cpu_dir, numa_dir = directory / "cpu", directory / "node"
    for n in range(cpus):
        (cpu_dir / f"cpu{n}").mkdir(parents=True, exist_ok=True)
    (cpu_dir / "online").write_text(f"0-{cpus - 1}\n")
    numa_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"MemTotal:       {memory_bytes // 1024} kB" if line.startswith("MemTotal:") else line
             for line in MEMINFO.read_text().splitlines()]
    meminfo = directory / "meminfo"
    meminfo.write_text("\n".join(lines) + "\n")
    return cpu_dir, numa_dir, meminfo


def remove_host_link(name: str) -> None:
    """The veth goes with the node's namespace; delete it in case something still holds that namespace."""
    subprocess.run(["ip", "link", "delete", name], capture_output=True, timeout=COMMAND_TIMEOUT_S, check=False)


def host_routes_overlap(network: NodeNetwork) -> str | None:
    """A host route (any table, any type) inside the node's address range, if any: the node would shadow it or be
    shadowed by it."""
    proc = subprocess.run(["ip", "-j", "-4", "route", "show", "table", "all"], capture_output=True, text=True,
                          timeout=COMMAND_TIMEOUT_S, check=False)
    supernet = ipaddress.ip_network(network.supernet)
    for route in json.loads(proc.stdout or "[]"):
        dst = route.get("dst", "")
        if dst == "default":
            continue
        with contextlib.suppress(ValueError):
            if ipaddress.ip_network(dst, strict=False).overlaps(supernet):
                return f"{route.get('type', 'unicast')} {dst} dev {route.get('dev', '?')}"
    return None
