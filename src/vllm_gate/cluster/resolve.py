"""Pick the cluster provider for ``--cluster``: auto, existing, kind or local."""

from __future__ import annotations

from pathlib import Path

from vllm_gate.base.kube import current_context
from vllm_gate.cluster.base import Cluster
from vllm_gate.cluster.dataplane.cluster_prometheus import DEFAULT_PROMETHEUS_PODS, PrometheusPods
from vllm_gate.cluster.existing import ExistingCluster
from vllm_gate.cluster.kind import KindCluster
from vllm_gate.cluster.local import LOCAL_ENGINES, LOCAL_NODES, GpuPool, LocalCluster, Progress


def resolve_cluster(kind: str, *, kubeconfig: Path | None, context: str | None, gpu_nodes: int,
                    kind_name: str, kind_bin: Path | None, keep_kind: bool, progress: Progress,
                    gpu_type: str = "rtx-6000-ada", local_node: str = "auto", local_engine: str = "auto",
                    prometheus_pods: PrometheusPods = DEFAULT_PROMETHEUS_PODS, custom_metrics: bool = True) -> Cluster:
    """``auto`` is the current kubeconfig context when there is one (kubectl's rules), else ``local``;
    ``local_node`` (LOCAL_NODES) says whether the local cluster runs its real node, ``local_engine``
    (LOCAL_ENGINES) which engine that node runs, ``prometheus_pods`` where its Prometheus pod runs there,
    ``custom_metrics`` whether it serves the custom metrics API (its prometheus-adapter)."""
    if kind == "auto":
        kind = "existing" if (context or current_context(kubeconfig)) else "local"
    if kind == "existing":
        return ExistingCluster(kubeconfig, context)
    if kind == "kind":
        return KindCluster(kind_name, kind_bin, None, keep_kind, gpu_type=gpu_type)
    return LocalCluster(pool=GpuPool(nodes=gpu_nodes), real_node=LOCAL_NODES[local_node],
                        real_engine=LOCAL_ENGINES[local_engine], prometheus_pods=prometheus_pods,
                        custom_metrics=custom_metrics, progress=progress)
