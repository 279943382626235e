"""A throwaway kind cluster (pytest-kind-ng) whose nodes advertise the spec's GPUs; needs Docker."""

from __future__ import annotations

import subprocess
from pathlib import Path

from kubernetes import client
from pytest_kind.cluster import KindCluster as _Kind

from vllm_gate.base.errors import ClusterError
from vllm_gate.base.kube import REQUEST_TIMEOUT_S, api_client
from vllm_gate.base.tools import STATE_ROOT, find_tool, tools_dir
from vllm_gate.cluster.base import Capabilities
from vllm_gate.cluster.gpu_nodes import GPU_RESOURCE, advertise_gpus
from vllm_gate.cluster.local import GpuPool

CONTROL_PLANE_TAINT = "node-role.kubernetes.io/control-plane"
DOCKER_CHECK_TIMEOUT_S = 30


def gpu_node_names(api: client.ApiClient) -> list[str]:
    """kind's workers; in a single-node cluster its control plane, which kind leaves untainted."""
    nodes = client.CoreV1Api(api).list_node(_request_timeout=REQUEST_TIMEOUT_S).items
    return [n.metadata.name for n in nodes if not any(t.key == CONTROL_PLANE_TAINT for t in n.spec.taints or [])]


class KindCluster:
    kind = "kind"

    prometheus_url: str | None = None  # the platform's Prometheus comes from --prometheus-url

    def __init__(self, name: str, kind_bin: Path | None, kubectl_bin: Path | None, keep: bool, *,
                 gpu_type: str, gpus_per_node: int = GpuPool.gpus_per_node) -> None:
        self.name = name
        self.context: str | None = f"kind-{name}"
        self._kubeconfig = STATE_ROOT / "kind" / f"{name}.kubeconfig"
        self.kubeconfig: Path | None = self._kubeconfig
        self.gpu_type = gpu_type
        self.gpus_per_node = gpus_per_node
        self._kind_bin = kind_bin
        self._kubectl_bin = kubectl_bin
        self._keep = keep
        self._cluster: _Kind | None = None
        # kind enforces NetworkPolicy since v0.24 (kindnetd). Its nodes only advertise nvidia.com/gpu, so the
        # chart's simulator image runs where vLLM would.
        self.capabilities = Capabilities(
            real_gpus=False, enforces_network_policy=True, pulls_images=True, engine="sim",
            limits=f"kind: no GPUs ({GPU_RESOURCE} is only advertised on the nodes; the simulator image serves)")

    def start(self) -> None:
        self._require_docker()
        # Given no binary, pytest-kind-ng downloads kind v0.17.0 from GitHub mid-run; that kind's network does
        # not enforce NetworkPolicy (kind does since v0.24, as the capabilities say), so use an installed kind.
        kind_bin = self._kind_bin or find_tool("kind")
        if kind_bin is None:
            raise ClusterError(f"kind cluster {self.name}: no kind binary in {tools_dir()} or PATH "
                               "(install kind >= v0.24 or pass --kind-bin)")
        self._kubeconfig.parent.mkdir(parents=True, exist_ok=True)
        self._cluster = _Kind(self.name, kubeconfig=self._kubeconfig, kind_path=kind_bin,
                              kubectl_path=self._kubectl_bin or find_tool("kubectl"))
        try:
            self._cluster.create()
        except subprocess.CalledProcessError as exc:
            raise ClusterError(f"kind cluster {self.name}: {' '.join(map(str, exc.cmd[:3]))} exited "
                               f"{exc.returncode} (kind wrote why to stderr)") from None
        api = api_client(self.kubeconfig, self.context)
        # As on the real pool the GPU nodes carry the GPU taint: in a single-node cluster, pods that do not
        # tolerate it (the chart's pod does) have no node.
        advertise_gpus(api, gpu_node_names(api), gpu_type=self.gpu_type, gpus_per_node=self.gpus_per_node)

    def _require_docker(self) -> None:
        """kind runs its nodes as Docker containers: say so in one line when no Docker daemon answers."""
        docker = find_tool("docker")
        if docker is None:
            raise ClusterError(f"kind cluster {self.name}: creating it needs Docker, and there is no docker "
                               "binary in PATH")
        try:
            proc = subprocess.run([str(docker), "info", "--format", "{{.ServerVersion}}"], capture_output=True,
                                  text=True, timeout=DOCKER_CHECK_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise ClusterError(f"kind cluster {self.name}: creating it needs Docker, and `docker info` did not "
                               f"answer within {DOCKER_CHECK_TIMEOUT_S} s") from None
        if proc.returncode != 0:
            reason = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
            raise ClusterError(f"kind cluster {self.name}: creating it needs Docker, and no Docker daemon "
                               f"answers: {reason}")

    def stop(self) -> None:
        if self._cluster is not None and not self._keep:
            self._cluster.delete()
        self._cluster = None

    def describe(self) -> str:
        return (f"kind (cluster {self.name}, {self.gpus_per_node} {GPU_RESOURCE} advertised per node as "
                f"{self.gpu_type})")
