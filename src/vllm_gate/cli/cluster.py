"""``vllm-gate cluster up|down|status|kubeconfig``: the local cluster, to poke at with kubectl."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import click
from kubernetes import client

from vllm_gate.base.kube import api_client
from vllm_gate.base.tools import STATE_ROOT
from vllm_gate.cli.errors import ActionFailed
from vllm_gate.cluster.local import LOCAL_NODE_ENV, LOCAL_NODES, destroy, owner_pid, pid_alive
from vllm_gate.cluster.supervisor import state_file

__all__ = ["cluster"]

UP_TIMEOUT_S = 180
DOWN_TIMEOUT_S = 60


def _owner(name: str) -> int | None:
    """Return the PID of the process keeping cluster ``name`` up, if it is alive."""
    pid = owner_pid(name)
    return pid if pid is not None and pid_alive(pid) else None


@click.group()
def cluster() -> None:
    """The embedded local cluster: a real control plane, KWOK GPU nodes and one real node."""


@cluster.command()
@click.option("--name", default="vllm-gate", show_default=True)
@click.option("--gpu-nodes", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--node", type=click.Choice(list(LOCAL_NODES)), default="auto", show_default=True,
              envvar=LOCAL_NODE_ENV, help="Its real node: auto (where this machine can), real (required), kwok (none).")
def up(name: str, gpu_nodes: int, node: str) -> None:
    """Start the cluster in the background and print its kubeconfig (and its Prometheus, for --prometheus-url)."""
    if _owner(name):
        raise ActionFailed(f"local cluster {name} is already running; see: vllm-gate cluster status --name {name}")
    STATE_ROOT.mkdir(parents=True, exist_ok=True)
    state = state_file(name)
    state.unlink(missing_ok=True)
    with (STATE_ROOT / f"{name}.log").open("ab") as log:
        subprocess.Popen([sys.executable, "-m", "vllm_gate.cluster.supervisor", "--name", name,
                          "--gpu-nodes", str(gpu_nodes), "--node", node], stdout=log, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + UP_TIMEOUT_S
    click.echo(f"starting local cluster {name} ...", err=True)
    while time.monotonic() < deadline:
        if state.exists():
            info = json.loads(state.read_text())
            if "error" in info:
                raise ActionFailed(f"local cluster {name}: {info['error']}; log: {STATE_ROOT / f'{name}.log'}")
            click.echo(info["describe"], err=True)
            click.echo(f"export KUBECONFIG={info['kubeconfig']}")
            if info.get("prometheus_url"):  # what --cluster existing reads the model's series from
                click.echo(f"export VLLM_GATE_PROMETHEUS_URL={info['prometheus_url']}")
            return
        time.sleep(0.5)
    raise ActionFailed(f"local cluster {name}: not ready within {UP_TIMEOUT_S} s; log: {STATE_ROOT / f'{name}.log'}")


@cluster.command()
@click.option("--name", default="vllm-gate", show_default=True)
def down(name: str) -> None:
    """Stop the cluster: every process and port it used is released."""
    pid = _owner(name)
    if pid:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + DOWN_TIMEOUT_S
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
    destroy(name)  # whatever the supervisor could not stop
    state_file(name).unlink(missing_ok=True)
    click.echo(f"local cluster {name}: stopped")


@cluster.command()
@click.option("--name", default="vllm-gate", show_default=True)
def status(name: str) -> None:
    """Say whether the cluster runs, and list its nodes and model pods."""
    state = state_file(name)
    if not _owner(name) or not state.exists():
        raise ActionFailed(f"local cluster {name}: not running (start it with: vllm-gate cluster up)")
    info = json.loads(state.read_text())
    click.echo(f"{info['describe']}\nkubeconfig: {info['kubeconfig']}")
    api = api_client(info["kubeconfig"], info["context"])
    for node in client.CoreV1Api(api).list_node(_request_timeout=10).items:
        gpus = (node.status.allocatable or {}).get("nvidia.com/gpu", "0")
        click.echo(f"node {node.metadata.name}: gpu-type={node.metadata.labels.get('gpu-type', '-')} gpus={gpus}")


@cluster.command()
@click.option("--name", default="vllm-gate", show_default=True)
def kubeconfig(name: str) -> None:
    """Print the kubeconfig path of a running cluster."""
    state = state_file(name)
    if not state.exists():
        raise ActionFailed(f"local cluster {name}: not running")
    click.echo(json.loads(state.read_text())["kubeconfig"])
