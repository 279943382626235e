"""The embedded local cluster: a real control plane from local binaries, fake GPU nodes via KWOK."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml
from kubernetes import client

from vllm_gate.cluster.base import Capabilities
from vllm_gate.cluster.children import kill_recorded_children
from vllm_gate.cluster.dataplane import DataPlane
from vllm_gate.cluster.gpu_nodes import advertise_gpus
from vllm_gate.cluster.kube import api_client, server_version
from vllm_gate.cluster.prometheus import DCGM_JOB, LocalPrometheus
from vllm_gate.cluster.recorded_dcgm import RecordedDcgmExporter
from vllm_gate.errors import ClusterError
from vllm_gate.sim import sim_name
from vllm_gate.tools import require_tool

STATE_ROOT = Path(os.environ.get("VLLM_GATE_STATE", Path.home() / ".local" / "state" / "vllm-gate"))
KWOK_WORKDIR = STATE_ROOT / "kwok"
OWNER_FILE = "vllm-gate-owner.json"
CREATE_TIMEOUT_S = 180
NODE_READY_TIMEOUT_S = 60
STOP_GRACE_S = 15
COMPONENTS = {"etcd": "etcd", "kube-apiserver": "kube-apiserver",
              "kube-controller-manager": "kube-controller-manager", "kube-scheduler": "kube-scheduler",
              "kwok-controller": "kwok"}

Progress = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class GpuPool:
    """The fake GPU nodes, labelled like the real pool."""

    nodes: int = 2
    gpu_type: str = "rtx-6000-ada"
    gpus_per_node: int = 4
    cpu: str = "32"
    memory: str = "256Gi"
    disk: str = "1Ti"  # ephemeral storage per node


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kwokctl(*args: str, timeout_s: float = CREATE_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KWOK_WORKDIR": str(KWOK_WORKDIR)}
    return subprocess.run([str(require_tool("kwokctl")), *args], capture_output=True, text=True,
                          timeout=timeout_s, env=env, check=False)


def cluster_dir(name: str) -> Path:
    return KWOK_WORKDIR / "clusters" / name


def component_pids(name: str) -> list[int]:
    """Return the PIDs kwokctl recorded for the cluster's components."""
    pids = []
    for pidfile in (cluster_dir(name) / "pids").glob("*.pid"):
        text = pidfile.read_text().strip()
        if text.isdigit():
            pids.append(int(text))
    return pids


def destroy(name: str) -> None:
    """Stop every process of cluster ``name`` and remove its files; safe to call twice."""
    kill_recorded_children(cluster_dir(name))
    pids = component_pids(name)
    if cluster_dir(name).exists():
        kwokctl("delete", "cluster", "--name", name, timeout_s=60)
    # kwokctl delete signals the components without waiting for them; wait, then kill stragglers.
    deadline = time.monotonic() + STOP_GRACE_S
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    shutil.rmtree(cluster_dir(name), ignore_errors=True)
    (STATE_ROOT / f"{name}.kubeconfig").unlink(missing_ok=True)


def owner_pid(name: str) -> int | None:
    """Return the PID recorded as owner of cluster ``name``, or None when there is no readable record."""
    try:
        return int(json.loads((cluster_dir(name) / OWNER_FILE).read_text())["pid"])
    except (ValueError, KeyError, OSError):
        return None


def reap_orphans() -> list[str]:
    """Destroy local clusters whose owning process is gone (after a crash or kill -9)."""
    reaped = []
    for owner in (KWOK_WORKDIR / "clusters").glob(f"*/{OWNER_FILE}"):
        name = owner.parent.name
        pid = owner_pid(name)
        if pid is not None and not pid_alive(pid):
            destroy(name)
            reaped.append(name)
    return reaped


class LocalCluster:
    """etcd, kube-apiserver, controller-manager, scheduler and kwok-controller as local processes."""

    kind = "local"

    def __init__(self, name: str | None = None, pool: GpuPool | None = None, *, data_plane: bool = True,
                 progress: Progress = _stderr) -> None:
        self.name = name or f"vllm-gate-{os.getpid()}"
        self.pool = pool or GpuPool()
        self.kubeconfig: Path | None = STATE_ROOT / f"{self.name}.kubeconfig"
        self.context: str | None = f"kwok-{self.name}"
        self.capabilities = Capabilities(
            real_gpus=False, enforces_network_policy=False, pulls_images=False, engine="sim", runs_containers=False,
            recorded_gpu_telemetry=data_plane,
            limits=f"KWOK local cluster: no containers ({sim_name()} answers for each model pod), no CNI "
                   "(NetworkPolicy not enforced), no GPUs (GPU series are recorded H100 telemetry), no image pulls")
        self.prometheus_url: str | None = None
        self.version = ""
        self._progress = progress
        self._data_plane: DataPlane | None = None
        self._prometheus: LocalPrometheus | None = None
        self._dcgm: RecordedDcgmExporter | None = None
        self._want_data_plane = data_plane
        self._watchdog: subprocess.Popen[bytes] | None = None

    @property
    def dir(self) -> Path:
        return cluster_dir(self.name)

    def _config(self) -> Path:
        options = {
            "runtime": "binary",
            "bindAddress": "127.0.0.1",
            "kubeApiserverBinary": str(require_tool("kube-apiserver")),
            "kubeControllerManagerBinary": str(require_tool("kube-controller-manager")),
            "kubeSchedulerBinary": str(require_tool("kube-scheduler")),
            "kwokControllerBinary": str(require_tool("kwok")),
            "etcdBinary": str(require_tool("etcd")),
            "kubectlBinary": str(require_tool("kubectl")),
        }
        path = STATE_ROOT / f"{self.name}.kwokctl.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump({"kind": "KwokctlConfiguration",
                                        "apiVersion": "config.kwok.x-k8s.io/v1alpha1", "options": options}))
        return path

    def start(self) -> None:
        for orphan in reap_orphans():
            self._progress(f"local cluster: removed {orphan}, left behind by a process that is gone")
        if self.dir.exists():
            destroy(self.name)
        started = time.monotonic()
        self._progress(f"local cluster {self.name}: starting etcd, kube-apiserver, controller-manager, "
                       "scheduler, kwok-controller")
        config_path = self._config()
        try:
            proc = kwokctl("create", "cluster", "--name", self.name, "--config", str(config_path),
                           "--kubeconfig", str(self.kubeconfig), "--enable-crds=PortForward",
                           "--wait", f"{CREATE_TIMEOUT_S - 30}s")
        except subprocess.TimeoutExpired:
            destroy(self.name)
            raise ClusterError(f"local cluster {self.name}: not ready within {CREATE_TIMEOUT_S} s") from None
        finally:
            config_path.unlink(missing_ok=True)
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
            destroy(self.name)
            raise ClusterError(f"local cluster {self.name}: kwokctl create failed (exit {proc.returncode})", tail)
        (self.dir / OWNER_FILE).write_text(json.dumps({"pid": os.getpid()}))
        self._start_watchdog()
        api = api_client(self.kubeconfig, self.context)
        self.version = server_version(api)
        self._create_nodes(api)
        if self._want_data_plane:
            self._start_data_plane(api)
        self._progress(f"local cluster {self.name}: Kubernetes {self.version}, {self.pool.nodes} GPU nodes "
                       f"({self.pool.gpu_type}), ready in {time.monotonic() - started:.1f} s")

    def _start_data_plane(self, api: client.ApiClient) -> None:
        """Simulators for model pods, a real Prometheus scraping them, and recorded GPU telemetry beside them."""
        self._prometheus = LocalPrometheus(self.dir)  # kept before start(): stop() must reach a failed start too
        self._prometheus.start()
        self.prometheus_url = self._prometheus.url
        self._data_plane = DataPlane(api, self.dir, progress=self._progress, prometheus=self._prometheus)
        self._dcgm = RecordedDcgmExporter(self._data_plane.served)
        self._dcgm.start()
        # Labelled as the GPU Operator's exporter pod; Prometheus renames the pod labels it serves to exported_*.
        self._prometheus.set_targets(DCGM_JOB, [(self._dcgm.address, {
            "namespace": "gpu-operator", "pod": "nvidia-dcgm-exporter-recorded", "container": "nvidia-dcgm-exporter"})])
        self._data_plane.start()
        self._progress(f"local cluster {self.name}: Prometheus {self._prometheus.url} scraping the simulators and "
                       "a dcgm-exporter stand-in serving recorded H100 telemetry (test data, not a live GPU)")

    def _start_watchdog(self) -> None:
        # A separate session, so Ctrl-C in the terminal does not kill it before it cleans up.
        self._watchdog = subprocess.Popen(
            [sys.executable, "-m", "vllm_gate.cluster.watchdog", "--parent", str(os.getpid()),
             "--name", self.name],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)

    def _create_nodes(self, api: client.ApiClient) -> None:
        """Create KWOK nodes, then give the GPU ones their GPUs the way a kind cluster gets them."""
        core = client.CoreV1Api(api)
        pool = self.pool
        # Node-local disk as a GPU node has it: the model cache (an emptyDir) requests ephemeral storage.
        resources = {"cpu": pool.cpu, "memory": pool.memory, "ephemeral-storage": pool.disk, "pods": "110"}
        names = [f"gpu-{i}" for i in range(pool.nodes)]
        for name in names:
            core.create_node({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": "fake"},
                             "labels": {"kubernetes.io/hostname": name, "type": "kwok"}},
                "status": {"capacity": resources, "allocatable": resources},
            })
        # One untainted CPU node for helm test hooks and probe pods.
        cpu = {"cpu": "16", "memory": "64Gi", "ephemeral-storage": "100Gi", "pods": "110"}
        core.create_node({"apiVersion": "v1", "kind": "Node",
                          "metadata": {"name": "cpu-0", "annotations": {"kwok.x-k8s.io/node": "fake"},
                                       "labels": {"kubernetes.io/hostname": "cpu-0", "type": "kwok"}},
                          "status": {"capacity": cpu, "allocatable": cpu}})
        self._wait_nodes_ready(core, len(names) + 1)
        # After Ready: KWOK has initialised the node status by then, and keeps the patched GPUs.
        advertise_gpus(api, names, gpu_type=pool.gpu_type, gpus_per_node=pool.gpus_per_node)

    def _wait_nodes_ready(self, core: client.CoreV1Api, count: int) -> None:
        deadline = time.monotonic() + NODE_READY_TIMEOUT_S
        while time.monotonic() < deadline:
            nodes = core.list_node(_request_timeout=15).items
            # Ready, and the node controller has lifted its not-ready taint (until then nothing schedules there).
            ready = [n.metadata.name for n in nodes
                     if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
                     and not any(t.key == "node.kubernetes.io/not-ready" for t in n.spec.taints or [])]
            if len(ready) == count:
                return
            time.sleep(0.3)
        raise ClusterError(f"local cluster {self.name}: nodes not Ready within {NODE_READY_TIMEOUT_S} s")

    def stop(self) -> None:
        if self._data_plane is not None:
            self._data_plane.stop()  # kept: its failures() stay readable for the report
        if self._dcgm is not None:
            self._dcgm.stop()
            self._dcgm = None
        if self._prometheus is not None:
            self._prometheus.stop()
            self._prometheus = None
        destroy(self.name)
        if self._watchdog is not None:
            self._watchdog.terminate()
            self._watchdog.wait(10)
            self._watchdog = None
        self._progress(f"local cluster {self.name}: stopped")

    def data_plane_failures(self) -> list[str]:
        """Simulators that would not start or exited, and data-plane errors, for the report."""
        return self._data_plane.failures() if self._data_plane is not None else []

    def describe(self) -> str:
        version = f"Kubernetes {self.version}, " if self.version else ""
        return (f"local (KWOK {self.name}, {version}{self.pool.nodes} fake "
                f"{self.pool.gpu_type} nodes x {self.pool.gpus_per_node} nvidia.com/gpu)")
