"""A real node leaves no trace: after `vllm-gate cluster down`, and after a crash followed by the next start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.cli.test_cluster import cli
from tests.cluster.test_real_node import skip_unless_node_can_run
from vllm_gate.cluster import node_cgroups
from vllm_gate.cluster.host_state import network_state, read_sysctls
from vllm_gate.cluster.local import cluster_dir, owner_pid, reap_orphans
from vllm_gate.cluster.node_namespace import HARD_CODED_DIRS, host_link_name
from vllm_gate.tools import PROJECT_ROOT


def _host_traces(name: str) -> dict[str, object]:
    """What a real node could leave on the host: processes, cgroups, mounts, its veth, paths, kernel sysctls."""
    root = f"vllm-gate-{name}"
    mounts = Path("/proc/self/mountinfo").read_text()
    return {
        "processes": sorted(node_cgroups.pids(root)),
        "cgroups": [str(h / root) for h in node_cgroups.hierarchies() if (h / root).exists()],
        "mounts": [line for line in mounts.splitlines() if name in line or "vllm-gate-node" in line],
        "link": subprocess.run(["ip", "link", "show", host_link_name(name)], capture_output=True,
                               check=False).returncode == 0,
        "cluster_dir": cluster_dir(name).exists(),
        "hard_coded_dirs": {d: Path(d).exists() and any(Path(d).iterdir()) for d in HARD_CODED_DIRS},
        "kernel_sysctls": read_sysctls(),
    }


def _assert_no_trace(name: str, found: dict[str, object]) -> None:
    left = _host_traces(name)
    assert left["processes"] == []
    assert left["cgroups"] == []
    assert left["mounts"] == []
    assert not left["link"]
    assert not left["cluster_dir"]
    assert left["hard_coded_dirs"] == found["hard_coded_dirs"]
    assert left["kernel_sysctls"] == found["kernel_sysctls"]


def test_cluster_down_leaves_the_host_as_found():
    skip_unless_node_can_run()
    name = f"realdown-{os.getpid()}"
    found, network = _host_traces(name), network_state()
    up = cli("up", "--name", name, "--gpu-nodes", "1", "--node", "real")
    try:
        assert up.returncode == 0, up.stderr
        running = _host_traces(name)
        assert running["processes"]
        assert running["cgroups"]
        assert running["link"]
        # The kubelet set its kernel tunables while it ran (restored below).
        assert running["kernel_sysctls"]["kernel/panic_on_oops"] == "1"
    finally:
        down = cli("down", "--name", name)
    assert down.returncode == 0, down.stderr
    _assert_no_trace(name, found)
    assert network_state() == network


def test_a_crashed_owner_and_watchdog_are_cleaned_up_by_the_next_start():
    skip_unless_node_can_run()
    name = f"realcrash-{os.getpid()}"
    found, network = _host_traces(name), network_state()
    script = ("import time; from vllm_gate.cluster.local import LocalCluster, GpuPool; "
              f"c = LocalCluster(name={name!r}, pool=GpuPool(nodes=1), real_node=True, progress=lambda m: None); "
              "c.start(); print(c._watchdog.pid, flush=True); time.sleep(300)")
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=PROJECT_ROOT)
    try:
        watchdog = int(owner.stdout.readline())
        assert owner_pid(name) == owner.pid
        os.kill(watchdog, signal.SIGKILL)  # everything of ours crashes: only the next start can clean up
        owner.kill()
        owner.wait(30)
        assert _host_traces(name)["processes"]  # the node outlived its owner ...
        assert name in reap_orphans()  # ... until the next start reaps it
    finally:
        if owner.poll() is None:
            owner.kill()
    _assert_no_trace(name, found)
    assert network_state() == network
