"""Advertising GPUs on nodes (what the kind provider does after create), run on the local cluster's real API."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests.conftest import running_local_cluster
from vllm_gate.base.errors import ClusterError
from vllm_gate.base.kube import api_client
from vllm_gate.cluster.gpu_nodes import GPU_RESOURCE, GPU_TAINT, advertise_gpus
from vllm_gate.cluster.kind import CONTROL_PLANE_TAINT, KindCluster, gpu_node_names
from vllm_gate.cluster.local import GpuPool
from vllm_gate.cluster.resolve import resolve_cluster

WAIT_S = 30
GPU_TYPE = "l4-test"  # a type the local cluster's own gpu-N nodes (rtx-6000-ada) do not carry


@pytest.fixture(scope="module")
def api() -> Iterator[client.ApiClient]:
    for local in running_local_cluster("gpunodes", data_plane=False):
        yield api_client(local.kubeconfig, local.context)


def wait_for(what: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {WAIT_S} s"
        time.sleep(0.3)


def plain_node(api: client.ApiClient, name: str, taints: list[dict[str, str]] | None = None) -> None:
    """A KWOK node as kind's kubelet registers one: no gpu-type label, no GPU taint, no nvidia.com/gpu."""
    core = client.CoreV1Api(api)
    core.create_node({"apiVersion": "v1", "kind": "Node",
                      "metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": "fake"},
                                   "labels": {"kubernetes.io/hostname": name, "type": "kwok"}},
                      "spec": {"taints": taints or []}})
    wait_for(f"node {name} Ready and its not-ready taint gone", lambda: settled(core.read_node(name)))


def settled(node: client.V1Node) -> bool:
    ready = any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])
    return ready and not any(t.key.startswith("node.kubernetes.io/") for t in node.spec.taints or [])


def gpu_pod(api: client.ApiClient, name: str) -> None:
    """A pod as the chart renders the model server: one GPU, the spec's gpu-type, the GPU toleration."""
    client.CoreV1Api(api).create_namespaced_pod("default", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"nodeSelector": {"gpu-type": GPU_TYPE},
                 "tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
                 "containers": [{"name": "c", "image": "example.invalid/gpu-job:v1",
                                 "resources": {"limits": {GPU_RESOURCE: "1"}, "requests": {GPU_RESOURCE: "1"}}}]}})


def unschedulable(api: client.ApiClient, pod: str) -> bool:
    status = client.CoreV1Api(api).read_namespaced_pod(pod, "default").status
    return any(c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable"
               for c in status.conditions or [])


def test_gpu_pod_stays_pending_on_a_plain_node_and_binds_once_gpus_are_advertised(api):
    plain_node(api, "plain-0")
    gpu_pod(api, "wants-gpu")
    wait_for("pod wants-gpu Unschedulable before the GPUs are advertised", lambda: unschedulable(api, "wants-gpu"))
    assert client.CoreV1Api(api).read_namespaced_pod("wants-gpu", "default").spec.node_name is None

    advertise_gpus(api, ["plain-0"], gpu_type=GPU_TYPE, gpus_per_node=2)

    core = client.CoreV1Api(api)
    wait_for("pod wants-gpu bound after advertise_gpus",
             lambda: core.read_namespaced_pod("wants-gpu", "default").spec.node_name is not None)
    assert core.read_namespaced_pod("wants-gpu", "default").spec.node_name == "plain-0"
    node = core.read_node("plain-0")
    assert node.metadata.labels["gpu-type"] == GPU_TYPE
    assert node.metadata.labels["nvidia.com/gpu.present"] == "true"
    assert (node.status.capacity[GPU_RESOURCE], node.status.allocatable[GPU_RESOURCE]) == ("2", "2")
    assert [(t.key, t.value, t.effect) for t in node.spec.taints] == [tuple(GPU_TAINT.values())]


def test_advertising_twice_changes_nothing_and_keeps_other_taints(api):
    other = {"key": "example.com/maintenance", "value": "soon", "effect": "PreferNoSchedule"}
    plain_node(api, "plain-1", taints=[other])
    advertise_gpus(api, ["plain-1"], gpu_type=GPU_TYPE, gpus_per_node=4)
    first = client.CoreV1Api(api).read_node("plain-1")
    advertise_gpus(api, ["plain-1"], gpu_type=GPU_TYPE, gpus_per_node=4)
    again = client.CoreV1Api(api).read_node("plain-1")
    assert again.metadata.resource_version == first.metadata.resource_version
    assert [(t.key, t.effect) for t in again.spec.taints] == [(other["key"], other["effect"]),
                                                              (GPU_TAINT["key"], GPU_TAINT["effect"])]


def test_advertising_on_a_missing_node_is_one_line_naming_it(api):
    with pytest.raises(ClusterError) as info:
        advertise_gpus(api, ["no-such-node"], gpu_type=GPU_TYPE, gpus_per_node=1)
    assert info.value.summary == f"node no-such-node: cannot advertise {GPU_RESOURCE}: 404 Not Found"


def test_local_cluster_gpu_nodes_get_their_gpus_from_advertise_gpus(api):
    node = client.CoreV1Api(api).read_node("gpu-0")
    assert node.metadata.labels["gpu-type"] == GpuPool().gpu_type
    assert node.status.allocatable[GPU_RESOURCE] == str(GpuPool().gpus_per_node)


def test_kind_gpu_nodes_are_the_nodes_without_the_control_plane_taint(api):
    plain_node(api, "control-plane-0", taints=[{"key": CONTROL_PLANE_TAINT, "effect": "NoSchedule"}])
    names = gpu_node_names(api)
    assert "control-plane-0" not in names
    assert {"gpu-0", "cpu-0"} <= set(names)


def test_kind_cluster_without_docker_fails_in_one_line_and_creates_nothing(tmp_path: Path, monkeypatch):
    """Creating a kind cluster needs Docker, absent here: the create and its node patching on kind are not
    exercised; the patching runs above on the local cluster, through the same API calls."""
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")  # no daemon, wherever this runs
    monkeypatch.chdir(tmp_path)  # where pytest-kind-ng would put .pytest-kind/
    cluster = resolve_cluster("kind", kubeconfig=None, context=None, gpu_nodes=1, kind_name="vg-no-docker",
                              kind_bin=None, keep_kind=False, progress=lambda _m: None, gpu_type="h100-sxm")
    assert isinstance(cluster, KindCluster)
    assert cluster.gpu_type == "h100-sxm"
    with pytest.raises(ClusterError) as info:
        cluster.start()
    assert info.value.summary.startswith("kind cluster vg-no-docker: creating it needs Docker, and ")
    assert "\n" not in info.value.summary
    cluster.stop()
    assert not (tmp_path / ".pytest-kind").exists()
    assert cluster.kubeconfig is not None
    assert not cluster.kubeconfig.exists()
