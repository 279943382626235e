"""A real node leaves no trace: after `vllm-gate cluster down`, and after a crash followed by the next start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.test_cluster import cli
from tests.cluster.host_network import host_network_state
from tests.cluster.test_real_node import skip_unless_node_can_run
from vllm_gate.base.tools import PROJECT_ROOT, STATE_ROOT
from vllm_gate.cluster.local import cluster_dir, owner_pid, reap_orphans
from vllm_gate.cluster.node import cgroups as node_cgroups
from vllm_gate.cluster.node.host_state import read_sysctls
from vllm_gate.cluster.node.namespace import HARD_CODED_DIRS, host_link_name
from vllm_gate.cluster.node.real_node import cgroup_root, node_dir

pytestmark = pytest.mark.real_node

# Where a kubelet, containerd or the CNI plugins write on a host when not told otherwise: listed before and after.
WATCHED_DIRS = ("/opt", "/usr/libexec", "/var/lib", *HARD_CODED_DIRS)
WATCHED_PATHS = ("/run/containerd", "/run/netns", "/run/nri", "/run/flannel", "/etc/cni", "/etc/nri",
                 "/var/log/pods", "/var/log/containers", "/run/lock/vllm-gate-real-node.lock")


def _namespaces(pids: set[int]) -> set[str]:
    """The network and mount namespaces (as 'net:[inode]') these processes live in."""
    found = set()
    for pid in pids:
        for kind in ("net", "mnt"):
            try:
                found.add(os.readlink(f"/proc/{pid}/ns/{kind}"))
            except OSError:
                continue
    return found


def _anyone_in(namespaces: set[str]) -> list[int]:
    """Processes still in any of ``namespaces``."""
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _namespaces({int(p.name)}) &
            namespaces]


def _host_traces(name: str) -> dict[str, object]:
    """What a real node could leave on the host: processes, cgroups, its veth, directories, kernel sysctls."""
    root = cgroup_root(name)
    return {
        "processes": sorted(node_cgroups.pids(root)),
        "cgroups": [str(h / root) for h in node_cgroups.hierarchies() if (h / root).exists()],
        "link": subprocess.run(["ip", "link", "show", host_link_name(name)], capture_output=True,
                               check=False).returncode == 0,
        "dirs": {d: sorted(os.listdir(d)) if Path(d).is_dir() else None for d in WATCHED_DIRS},
        "paths": [p for p in WATCHED_PATHS if Path(p).exists()],
        "state": [str(p) for p in (cluster_dir(name), node_dir(STATE_ROOT, name)) if p.exists()],
        "kernel_sysctls": read_sysctls(),
    }


def _assert_no_trace(name: str, found: dict[str, object], namespaces: set[str]) -> None:
    left = _host_traces(name)
    assert left["processes"] == []
    assert left["cgroups"] == []
    assert not left["link"]
    assert left["state"] == []
    assert left["dirs"] == found["dirs"]
    assert left["paths"] == found["paths"]
    assert left["kernel_sysctls"] == found["kernel_sysctls"]
    assert _anyone_in(namespaces) == []  # its namespaces (and every mount made inside them) are gone


def _running(name: str) -> set[str]:
    """Check the node runs (processes, cgroups, veth, the kubelet's sysctls); return its namespaces."""
    running = _host_traces(name)
    assert running["processes"]
    assert running["cgroups"]
    assert running["link"]
    assert running["kernel_sysctls"]["kernel/panic_on_oops"] == "1"  # the kubelet's, restored below
    namespaces = _namespaces(set(running["processes"])) - _namespaces({os.getpid()})
    kubelet = {pid for pid in running["processes"] if _command(pid) == "kubelet"}
    assert len(_namespaces(kubelet) - _namespaces({os.getpid()})) == 2  # the node's own network and mount namespaces
    # The rest are its pods' (the cluster's Prometheus runs there from the start): all must go with it.
    return namespaces


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def test_cluster_down_leaves_the_host_as_found():
    skip_unless_node_can_run()
    name = f"realdown-{os.getpid()}"
    found, network = _host_traces(name), host_network_state()
    up = cli("up", "--name", name, "--gpu-nodes", "1", "--node", "real")
    try:
        assert up.returncode == 0, up.stderr
        namespaces = _running(name)
    finally:
        down = cli("down", "--name", name)
    assert down.returncode == 0, down.stderr
    _assert_no_trace(name, found, namespaces)
    assert host_network_state() == network


def test_a_crashed_owner_and_watchdog_are_cleaned_up_by_the_next_start():
    skip_unless_node_can_run()
    name = f"realcrash-{os.getpid()}"
    found, network = _host_traces(name), host_network_state()
    script = ("import time; from vllm_gate.cluster.local import LocalCluster, GpuPool; "
              f"c = LocalCluster(name={name!r}, pool=GpuPool(nodes=1), real_node=True, progress=lambda m: None); "
              "c.start(); print(c._watchdog.pid, flush=True); time.sleep(300)")
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=PROJECT_ROOT)
    try:
        watchdog = int(owner.stdout.readline())
        assert owner_pid(name) == owner.pid
        namespaces = _running(name)
        os.kill(watchdog, signal.SIGKILL)  # everything of ours crashes: only the next start can clean up
        owner.kill()
        owner.wait(30)
        assert _host_traces(name)["processes"]  # the node outlived its owner ...
        assert name in reap_orphans(lambda _m: None)  # ... until the next start reaps it
    finally:
        if owner.poll() is None:
            owner.kill()
    _assert_no_trace(name, found, namespaces)
    assert host_network_state() == network
