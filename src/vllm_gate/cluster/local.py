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
from urllib.parse import urlsplit

import urllib3
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.utils import parse_quantity

from vllm_gate.base.errors import ClusterError, GateError
from vllm_gate.base.kube import api_client, server_version
from vllm_gate.base.tools import STATE_ROOT, require_tool
from vllm_gate.cluster.base import Capabilities
from vllm_gate.cluster.children import kill_recorded_children
from vllm_gate.cluster.creation_lock import one_creation_at_a_time
from vllm_gate.cluster.dataplane import metrics_adapter, vllm_cpu
from vllm_gate.cluster.dataplane.cluster_prometheus import (
    DCGM_TARGET_LABELS,
    DEFAULT_PROMETHEUS_PODS,
    ClusterPrometheus,
    PrometheusPods,
)
from vllm_gate.cluster.dataplane.metrics_adapter import MetricsAdapter
from vllm_gate.cluster.dataplane.prometheus import DCGM_JOB, LocalPrometheus
from vllm_gate.cluster.dataplane.recorded_dcgm import RecordedDcgmExporter
from vllm_gate.cluster.dataplane.served_pods import DataPlane
from vllm_gate.cluster.dataplane.sim import sim_name
from vllm_gate.cluster.gpu_nodes import advertise_gpus
from vllm_gate.cluster.node.config import NodeNetwork
from vllm_gate.cluster.node.real_node import (
    NODE_KIND_LABEL,
    NODE_NAME,
    RealNode,
    node_dir,
    reap_orphan_nodes,
    why_not_here,
)
from vllm_gate.cluster.node.real_node import teardown as teardown_node
from vllm_gate.verdict.serving import KWOK_NODE_ANNOTATION

KWOK_WORKDIR = STATE_ROOT / "kwok"
OWNER_FILE = "vllm-gate-owner.json"
CREATE_TIMEOUT_S = 180
# Seconds on an idle machine; past 60 s once in about forty starts while two test workers share 2 cores.
NODE_READY_TIMEOUT_S = 120
PROGRESS_EVERY_S = 5
STOP_GRACE_S = 15
# On the KWOK GPU nodes when a real node runs: the scheduler prefers the real one, KWOK takes the overflow.
KWOK_PREFER_NOT = {"key": "vllm-gate/kwok-node", "value": "true", "effect": "PreferNoSchedule"}
COMPONENTS = {"etcd": "etcd", "kube-apiserver": "kube-apiserver",
              "kube-controller-manager": "kube-controller-manager", "kube-scheduler": "kube-scheduler",
              "kwok-controller": "kwok"}

Progress = Callable[[str], None]
# --local-node / VLLM_GATE_LOCAL_NODE: run the real node where the machine can, require it, or KWOK nodes only.
LOCAL_NODES: dict[str, bool | None] = {"auto": None, "real": True, "kwok": False}
LOCAL_NODE_ENV = "VLLM_GATE_LOCAL_NODE"
# Which engine the real node runs for a spec of engine: vllm: auto (the real engine where it is installed, else the
# simulator), vllm (required: vLLM's CPU build with a tiny model, cluster/dataplane/vllm_cpu.py) or sim.
LOCAL_ENGINES: dict[str, bool | None] = {"auto": None, "vllm": True, "sim": False}
LOCAL_ENGINE_ENV = "VLLM_GATE_LOCAL_ENGINE"


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
    # No KWOK_* from the caller: they override the configuration (KWOK_KUBE_AUTHORIZATION could turn RBAC off
    # on an API server that listens beyond loopback).
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("KWOK_")}, "KWOK_WORKDIR": str(KWOK_WORKDIR)}
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


def destroy(name: str) -> list[str]:
    """Stop every process of cluster ``name`` and remove its files; safe to call twice. Returns one line per
    trace of its real node that could not be removed (the node's own directory is then kept, for the next try)."""
    problems = teardown_node(node_dir(STATE_ROOT, name))
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
    return problems


def owner_pid(name: str) -> int | None:
    """Return the PID recorded as owner of cluster ``name``, or None when there is no readable record."""
    try:
        return int(json.loads((cluster_dir(name) / OWNER_FILE).read_text())["pid"])
    except (ValueError, KeyError, OSError):
        return None


def reap_orphans(progress: Progress = _stderr) -> list[str]:
    """Destroy local clusters (and real nodes) whose owning process is gone (after a crash or kill -9);
    returns the names of the clusters reaped, and says what could not be undone through ``progress``."""
    reaped = []
    for owner in (KWOK_WORKDIR / "clusters").glob(f"*/{OWNER_FILE}"):
        name = owner.parent.name
        pid = owner_pid(name)
        if pid is not None and not pid_alive(pid):
            for problem in destroy(name):
                progress(f"local cluster {name}: {problem}")
            reaped.append(name)
    for line in reap_orphan_nodes(STATE_ROOT):  # a node whose cluster directory is already gone
        progress(line)
    return reaped


class LocalCluster:
    """etcd, kube-apiserver, controller-manager, scheduler and kwok-controller as local processes."""

    kind = "local"

    def __init__(self, name: str | None = None, pool: GpuPool | None = None, *, data_plane: bool = True,
                 real_node: bool | None = None, real_engine: bool | None = False,
                 prometheus_pods: PrometheusPods = DEFAULT_PROMETHEUS_PODS, custom_metrics: bool = True,
                 progress: Progress = _stderr) -> None:
        """``real_node``: True requires one, False never, None (the default) runs one where this machine can.
        ``real_engine`` likewise for the real engine on that node (LOCAL_ENGINES; the gate's --local-engine decides,
        by default where it is installed): by default none, the simulator answers. ``prometheus_pods``: where its
        Prometheus pod runs on the real node, and its labels (the spec's monitoring section says the platform's);
        ``custom_metrics``: whether the real node's cluster serves the custom metrics API (a prometheus-adapter)."""
        self.name = name or f"vllm-gate-{os.getpid()}"
        self.pool = pool or GpuPool()
        self.kubeconfig: Path | None = STATE_ROOT / f"{self.name}.kubeconfig"
        self.context: str | None = f"kwok-{self.name}"
        self.network = NodeNetwork()
        self._required_node = bool(real_node)
        self.no_real_node_because: str | None = "not wanted (--local-node kwok)"
        if real_node is not False:
            for orphan in reap_orphans(progress):  # a crashed cluster's node would hold the lock and the routes
                progress(f"local cluster: removed {orphan}, left behind by a process that is gone")
            self.no_real_node_because = why_not_here(node_dir(STATE_ROOT, self.name), self.network)
        if real_node and self.no_real_node_because:
            raise ClusterError(f"local cluster {self.name}: no real node: {self.no_real_node_because}")
        self.no_real_engine_because = self._why_no_real_engine(real_engine)
        if real_engine and self.no_real_engine_because:
            raise ClusterError(f"local cluster {self.name}: no real engine: {self.no_real_engine_because}")
        self._want_custom_metrics = custom_metrics
        self.capabilities = self._capabilities(data_plane)
        self.prometheus_url: str | None = None
        self.version = ""
        self._progress = progress
        self._data_plane: DataPlane | None = None
        self._prometheus: LocalPrometheus | None = None  # KWOK-only: on this machine
        self._cluster_prometheus: ClusterPrometheus | None = None  # with the real node: a pod there
        self._metrics_adapter: MetricsAdapter | None = None  # with the real node: the custom metrics API
        self._dcgm: RecordedDcgmExporter | None = None
        self._dcgm_unread: list[str] = []
        self._want_data_plane = data_plane
        self._prometheus_pods = prometheus_pods
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._node: RealNode | None = None

    @property
    def dir(self) -> Path:
        return cluster_dir(self.name)

    @property
    def has_real_node(self) -> bool:
        return self.no_real_node_because is None

    @property
    def has_real_engine(self) -> bool:
        return self.has_real_node and self.no_real_engine_because is None

    def _why_no_real_engine(self, wanted: bool | None) -> str | None:
        if wanted is False:
            return "not wanted (--local-engine sim, or a cluster started without it)"
        if not self.has_real_node:
            return f"it runs on the real node, and there is none ({self.no_real_node_because})"
        return vllm_cpu.unavailable()

    def _capabilities(self, data_plane: bool) -> Capabilities:
        gpus = "no GPUs (GPU series are recorded H100 telemetry)"
        if self.has_real_node:
            answers = ("vLLM's CPU build with a tiny random-weights model in place of the spec's model on GPUs: its "
                       "latency, memory and answers are not the model's; locally built images" if self.has_real_engine
                       else f"{sim_name()} in place of vLLM, in locally built images")
            return Capabilities(
                real_gpus=False, enforces_network_policy=None, pulls_images=False,
                engine="vllm-cpu" if self.has_real_engine else "sim", runs_containers=True,
                recorded_gpu_telemetry=data_plane, scrape_discovery="annotations",
                custom_metrics=data_plane and self._want_custom_metrics,
                limits=f"local cluster: one real node ({answers}; kubelet probes, kube-proxy, kube-router "
                       f"NetworkPolicy), {self.pool.nodes} KWOK GPU nodes for scheduling at pool scale, {gpus}, "
                       "no image pulls")
        return Capabilities(
            real_gpus=False, enforces_network_policy=False, pulls_images=False, engine="sim", runs_containers=False,
            recorded_gpu_telemetry=data_plane, scrape_discovery="gate-targets",
            custom_metrics=False,
            limits=f"KWOK local cluster: no containers ({sim_name()} answers for each model pod; no real node: "
                   f"{self.no_real_node_because}), no CNI (NetworkPolicy not enforced), {gpus}, no image pulls")

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
        # KWOK must leave the real node (and its pods) to the kubelet.
        patches = [{"name": "kwok-controller", "extraArgs": [
            {"key": "manage-all-nodes", "value": "false", "override": True},
            {"key": "manage-nodes-with-annotation-selector", "value": f"{KWOK_NODE_ANNOTATION}=fake"}]}]
        if self.has_real_node:
            # kwokctl signs one certificate for every component: it also serves the custom metrics API.
            options["kubeApiserverCertSANs"] = [self.network.host_address, metrics_adapter.SERVICE_DNS_NAME]
            # Reachable beyond loopback now: RBAC (kwokctl's default, stated so that it stays) and no anonymous
            # requests, as on a real cluster.
            options["kubeAuthorization"] = True
            pki = self.dir / "pki"
            patches.append({"name": "kube-apiserver", "extraArgs": [
                # The node reaches the API server on the host end of its veth (one --bind-address, and the
                # kubeconfig kwokctl writes and waits with names 127.0.0.1: so every address).
                {"key": "bind-address", "value": "0.0.0.0", "override": True},  # noqa: S104 - TLS, certificates only
                {"key": "anonymous-auth", "value": "false"},
                # The real node by its address; KWOK's by name (kwok-controller answers for them on localhost).
                {"key": "kubelet-preferred-address-types", "value": "InternalIP,Hostname"},
                {"key": "kubelet-client-certificate", "value": str(pki / "admin.crt")},
                {"key": "kubelet-client-key", "value": str(pki / "admin.key")},
                {"key": "service-cluster-ip-range", "value": self.network.service_cidr},
                *metrics_adapter.apiserver_args(pki)]})
        path = STATE_ROOT / f"{self.name}.kwokctl.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump({"kind": "KwokctlConfiguration",
                                        "apiVersion": "config.kwok.x-k8s.io/v1alpha1", "options": options,
                                        "componentsPatches": patches}))
        return path

    def start(self) -> None:
        for orphan in reap_orphans(self._progress):
            self._progress(f"local cluster: removed {orphan}, left behind by a process that is gone")
        if self.dir.exists():
            destroy(self.name)
        started = time.monotonic()
        self._progress(f"local cluster {self.name}: starting etcd, kube-apiserver, controller-manager, "
                       "scheduler, kwok-controller")
        config_path = self._config()
        try:
            with one_creation_at_a_time(self.name, self._progress):
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
        if self.has_real_node:
            self._start_real_node(api)
        if self._want_data_plane:
            self._start_data_plane(api)
        real = f" + real node {NODE_NAME}" if self.has_real_node else ""
        self._progress(f"local cluster {self.name}: Kubernetes {self.version}, {self.pool.nodes} KWOK GPU nodes "
                       f"({self.pool.gpu_type}){real}, ready in {time.monotonic() - started:.1f} s")

    def _start_real_node(self, api: client.ApiClient) -> None:
        """Start the real node; where it was not required and will not start, go on KWOK-only and say why."""
        self._node = RealNode(node_dir(STATE_ROOT, self.name), self.name, self.kubeconfig,
                              self._api_port(), self.dir / "pki" / "ca.crt",
                              gpu_type=self.pool.gpu_type, gpus=self.pool.gpus_per_node,
                              cpus=int(parse_quantity(self.pool.cpu)),
                              memory_bytes=int(parse_quantity(self.pool.memory)), progress=self._progress,
                              engine_image=self.has_real_engine)
        try:
            self._node.start(api)  # removes what it started when it fails
        except (GateError, OSError, subprocess.SubprocessError, ApiException, urllib3.exceptions.HTTPError) as exc:
            self._node = None
            reason = exc.summary if isinstance(exc, GateError) else f"{type(exc).__name__}: {exc}"
            if self._required_node:
                self.stop()
                detail = exc.detail if isinstance(exc, GateError) else ""
                raise ClusterError(f"local cluster {self.name}: the real node would not start: {reason}",
                                   detail) from None
            self._progress(f"local cluster {self.name}: the real node would not start ({reason}); "
                           "going on with KWOK nodes only")
            self.no_real_node_because = f"it would not start: {reason}"
            self.no_real_engine_because = self._why_no_real_engine(None)
            self.capabilities = self._capabilities(self._want_data_plane)
            self._create_cpu_node(client.CoreV1Api(api))

    def _start_data_plane(self, api: client.ApiClient) -> None:
        """Simulators for model pods, a real Prometheus scraping them, and recorded GPU telemetry beside them.

        With the real node, Prometheus runs there as a pod, finds the model pods by Kubernetes service discovery and
        scrapes them through their NetworkPolicy (cluster_prometheus.py); KWOK-only, it runs on this machine and
        scrapes the simulators at targets the data plane writes (their pods have no network)."""
        real_nodes = frozenset([NODE_NAME]) if self.has_real_node else frozenset()
        if not self.has_real_node:
            self._prometheus = LocalPrometheus(self.dir)  # kept before start(): stop() must reach a failed start too
            self._prometheus.start()
            self.prometheus_url = self._prometheus.url
        self._data_plane = DataPlane(api, self.dir, progress=self._progress, prometheus=self._prometheus,
                                     real_nodes=real_nodes, kubeconfig=self.kubeconfig, context=self.context)
        listen = (self.network.host_address, self.network.dcgm_port) if self.has_real_node else ("127.0.0.1", 0)
        self._dcgm = RecordedDcgmExporter(self._data_plane.served, listen=listen)
        self._dcgm.start()
        if self._prometheus is not None:
            self._prometheus.set_targets(DCGM_JOB, [(self._dcgm.address, DCGM_TARGET_LABELS)])
        else:
            self._cluster_prometheus = ClusterPrometheus(api, node=NODE_NAME, api_server=self._api_server_for_pods(),
                                                         dcgm_address=self._dcgm.address, pods=self._prometheus_pods,
                                                         kubeconfig=self.kubeconfig, context=self.context,
                                                         progress=self._progress)
            self._cluster_prometheus.start()
            self.prometheus_url = self._cluster_prometheus.url
            if self.capabilities.custom_metrics:
                self._metrics_adapter = MetricsAdapter(api, self.dir, kubeconfig=self.kubeconfig,
                                                       address=self.network.host_address,
                                                       prometheus_url=self.prometheus_url, progress=self._progress)
                self._metrics_adapter.start()
        self._data_plane.start()
        pods = self._prometheus_pods
        where = (f"a pod labelled {pods.selector} in {pods.namespace} on {NODE_NAME} (Kubernetes service discovery), "
                 "through port-forward" if self.has_real_node else "on this machine, scraping the simulators")
        self._progress(f"local cluster {self.name}: Prometheus {self.prometheus_url}: {where}; a dcgm-exporter "
                       "stand-in serves recorded H100 telemetry (test data, not a live GPU)")

    def _api_port(self) -> int:
        server = yaml.safe_load(self.kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
        return urlsplit(server).port or 443

    def _api_server_for_pods(self) -> str:
        """The API server as the real node's pods reach it: the host end of the node's link."""
        return f"https://{self.network.host_address}:{self._api_port()}"

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
        # With a real node, pods go there first; these take what it cannot hold.
        taints = [KWOK_PREFER_NOT] if self.has_real_node else []
        for name in names:
            core.create_node(self._kwok_node(name, resources, taints))
        self._wait_nodes_ready(core, names)
        if not self.has_real_node:
            self._create_cpu_node(core)
        # After Ready: KWOK has initialised the node status by then, and keeps the patched GPUs.
        advertise_gpus(api, names, gpu_type=pool.gpu_type, gpus_per_node=pool.gpus_per_node)

    def _create_cpu_node(self, core: client.CoreV1Api) -> None:
        """One untainted CPU node for helm test hooks and probe pods (the real node is that node when it runs)."""
        cpu = {"cpu": "16", "memory": "64Gi", "ephemeral-storage": "100Gi", "pods": "110"}
        core.create_node(self._kwok_node("cpu-0", cpu, []))
        self._wait_nodes_ready(core, ["cpu-0"])

    @staticmethod
    def _kwok_node(name: str, resources: dict[str, str], taints: list[dict[str, str]]) -> dict[str, object]:
        return {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "annotations": {KWOK_NODE_ANNOTATION: "fake"},
                             "labels": {"kubernetes.io/hostname": name, "type": "kwok", NODE_KIND_LABEL: "kwok"}},
                "spec": {"taints": taints},
                "status": {"capacity": resources, "allocatable": resources}}

    def _wait_nodes_ready(self, core: client.CoreV1Api, names: list[str]) -> None:
        started = time.monotonic()
        said = started
        waiting = "no node listed yet"
        while time.monotonic() - started < NODE_READY_TIMEOUT_S:
            nodes = {n.metadata.name: n for n in core.list_node(_request_timeout=15).items}
            # Ready, and the node controller has lifted its not-ready taint (until then nothing schedules there).
            not_ready = [name for name in names if name not in nodes or not any(
                c.type == "Ready" and c.status == "True" for c in nodes[name].status.conditions or [])]
            tainted = [name for name in names if name in nodes and name not in not_ready and any(
                t.key == "node.kubernetes.io/not-ready" for t in nodes[name].spec.taints or [])]
            if not not_ready and not tainted:
                return
            waiting = "; ".join(part for part in (
                f"not Ready: {', '.join(not_ready)}" if not_ready else "",
                f"still tainted not-ready by the node controller: {', '.join(tainted)}" if tainted else "") if part)
            if time.monotonic() - said >= PROGRESS_EVERY_S:
                said = time.monotonic()
                self._progress(f"local cluster {self.name}: waiting for its nodes ({waiting}), "
                               f"{said - started:.0f}/{NODE_READY_TIMEOUT_S} s")
            time.sleep(0.3)
        raise ClusterError(f"local cluster {self.name}: nodes not Ready within {NODE_READY_TIMEOUT_S} s ({waiting})")

    def stop(self) -> None:
        if self._data_plane is not None:
            self._data_plane.stop()  # kept: its failures() stay readable for the report
        if self._metrics_adapter is not None:  # before Prometheus: it reads it through its port-forward
            self._metrics_adapter.stop()
            self._metrics_adapter = None
        if self._cluster_prometheus is not None:  # before the node: its port-forward leads into the node's pod
            self._cluster_prometheus.stop()
            self._cluster_prometheus = None
        if self._node is not None:  # after the data plane: its port-forwards lead into the node's pods
            for problem in self._node.stop():
                self._progress(f"local cluster {self.name}: {problem}")
            self._node = None
        if self._dcgm is not None:
            self._dcgm.stop()
            self._dcgm_unread = self._dcgm.unread()  # kept for the report, like the data plane's failures
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
        unread = self._dcgm.unread() if self._dcgm is not None else self._dcgm_unread
        return (self._data_plane.failures() if self._data_plane is not None else []) + unread

    def describe(self) -> str:
        version = f"Kubernetes {self.version}, " if self.version else ""
        real = f"real node {NODE_NAME} (containerd, fake GPUs) + " if self.has_real_node else ""
        return (f"local ({self.name}, {version}{real}{self.pool.nodes} KWOK "
                f"{self.pool.gpu_type} nodes x {self.pool.gpus_per_node} nvidia.com/gpu)")
