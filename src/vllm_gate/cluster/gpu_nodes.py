"""Make nodes look like the real GPU pool: the gpu-type label, the GPU taint, nvidia.com/gpu in the node status."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from vllm_gate.base.errors import ClusterError

GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}
ADVERTISE_TIMEOUT_S = 30
REQUEST_TIMEOUT_S = 15
CONFLICT_RETRIES = 5


def advertise_gpus(api: client.ApiClient, node_names: Sequence[str], *, gpu_type: str, gpus_per_node: int,
                   taint: bool = True, timeout_s: float = ADVERTISE_TIMEOUT_S) -> None:
    """Label, taint (unless not ``taint``) and give each node ``gpus_per_node`` nvidia.com/gpu; running it again
    changes nothing."""
    core = client.CoreV1Api(api)
    for name in node_names:
        try:
            _label_and_taint(core, name, gpu_type, taint)
            _patch_status(core, name, gpus_per_node)
        except ApiException as exc:
            raise ClusterError(f"node {name}: cannot advertise {GPU_RESOURCE}: {exc.status} {exc.reason}") from None
    _wait_allocatable(core, node_names, gpus_per_node, timeout_s)


def _label_and_taint(core: client.CoreV1Api, name: str, gpu_type: str, taint: bool) -> None:
    # Taints are a plain list (no merge key), so the patch carries the whole list; resourceVersion makes it
    # fail with 409 rather than drop a taint another controller added since the read.
    for _ in range(CONFLICT_RETRIES):
        node = core.read_node(name, _request_timeout=REQUEST_TIMEOUT_S)
        taints: list[dict[str, Any]] = core.api_client.sanitize_for_serialization(node.spec.taints or [])
        if taint and not any(t["key"] == GPU_TAINT["key"] and t["effect"] == GPU_TAINT["effect"] for t in taints):
            taints.append(GPU_TAINT)
        body = {"metadata": {"resourceVersion": node.metadata.resource_version,
                             "labels": {"gpu-type": gpu_type, "nvidia.com/gpu.present": "true"}},
                "spec": {"taints": taints}}
        try:
            core.patch_node(name, body, _content_type="application/merge-patch+json",
                            _request_timeout=REQUEST_TIMEOUT_S)
            return
        except ApiException as exc:
            if exc.status != 409:
                raise
    raise ClusterError(f"node {name}: changed {CONFLICT_RETRIES} times while the GPU taint was being added")


def _patch_status(core: client.CoreV1Api, name: str, gpus: int) -> None:
    # The JSON patch of "Advertise Extended Resources for a Node" (kubernetes.io). A kubelet copies capacity
    # into allocatable on its next status sync; a KWOK node has no kubelet and keeps allocatable as written,
    # so the patch sets allocatable too, to the value a kubelet computes (no reservation for extended resources).
    path = GPU_RESOURCE.replace("/", "~1")
    ops = [{"op": "add", "path": f"/status/{field}/{path}", "value": str(gpus)}
           for field in ("capacity", "allocatable")]
    core.patch_node_status(name, ops, _content_type="application/json-patch+json", _request_timeout=REQUEST_TIMEOUT_S)


def _wait_allocatable(core: client.CoreV1Api, names: Sequence[str], gpus: int, timeout_s: float) -> None:
    """Wait until the scheduler's view (allocatable) of every node shows the GPUs."""
    deadline = time.monotonic() + timeout_s
    pending = list(names)
    while True:
        pending = [n for n in pending if _allocatable_gpus(core, n) != str(gpus)]
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise ClusterError(f"nodes {', '.join(pending)}: allocatable shows no {gpus} {GPU_RESOURCE} "
                               f"within {timeout_s:g} s")
        time.sleep(0.3)


def _allocatable_gpus(core: client.CoreV1Api, name: str) -> str | None:
    try:
        node = core.read_node(name, _request_timeout=REQUEST_TIMEOUT_S)
    except ApiException as exc:
        raise ClusterError(f"node {name}: cannot read it back: {exc.status} {exc.reason}") from None
    return (node.status.allocatable or {}).get(GPU_RESOURCE)
