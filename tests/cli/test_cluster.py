"""vllm-gate cluster up|status|down as a user runs them, from separate processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import require
from vllm_gate.base.tools import require_tool
from vllm_gate.cluster.local import component_pids, pid_alive

CLI = str(Path(sys.executable).with_name("vllm-gate"))


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, "cluster", *args], capture_output=True, text=True, timeout=240, check=False)


def test_up_status_down_leaves_nothing_running():
    for tool in ("kwokctl", "kube-apiserver", "kubectl"):
        require(tool)
    name = f"cli-{os.getpid()}"
    up = cli("up", "--name", name, "--gpu-nodes", "3")
    try:
        assert up.returncode == 0, up.stderr
        # Lines to eval: the kubeconfig, and the cluster's own Prometheus for --cluster existing runs.
        exports = [line.removeprefix("export ").split("=", 1) for line in up.stdout.splitlines()]
        assert [name for name, _ in exports] == ["KUBECONFIG", "VLLM_GATE_PROMETHEUS_URL"], up.stdout
        kubeconfig = exports[0][1]
        assert exports[1][1].startswith("http://127.0.0.1:")
        kubectl = [str(require_tool("kubectl")), "--kubeconfig", kubeconfig]
        nodes = subprocess.run([*kubectl, "get", "nodes", "-l", "gpu-type=rtx-6000-ada", "-o", "name"],
                               capture_output=True, text=True, timeout=30, check=False)
        assert sorted(nodes.stdout.split()) == ["node/gpu-0", "node/gpu-1", "node/gpu-2"]
        status = cli("status", "--name", name)
        assert status.returncode == 0
        assert "node gpu-2: gpu-type=rtx-6000-ada gpus=4" in status.stdout
        again = cli("up", "--name", name)
        assert again.returncode == 1
        assert f"local cluster {name} is already running" in again.stderr
        pids = component_pids(name)
        assert len(pids) == 5
    finally:
        down = cli("down", "--name", name)
    assert down.returncode == 0
    assert [p for p in pids if pid_alive(p)] == []
    gone = cli("status", "--name", name)
    assert gone.returncode == 1
    assert "not running" in gone.stderr
