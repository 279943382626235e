"""The report's line per pod: on which kind of node it ran, and whether a kubelet ran its container."""

from __future__ import annotations

from kubernetes import client

from vllm_gate.verdict.serving import _placement


def _pod(node: str | None, image_id: str = "") -> client.V1Pod:
    status = client.V1ContainerStatus(name="vllm", image="i", image_id=image_id, ready=bool(image_id),
                                      restart_count=0)
    return client.V1Pod(metadata=client.V1ObjectMeta(name="m-0"), spec=client.V1PodSpec(
        node_name=node, containers=[client.V1Container(name="vllm")]), status=client.V1PodStatus(
        container_statuses=[status]))


def test_a_pod_a_kubelet_ran_names_its_node():
    assert _placement(_pod("real-0", "sha256:abc"), []) == "pod m-0 on node real-0 (its kubelet ran the container)"


def test_a_pod_on_a_kwok_node_is_named_as_only_scheduled():
    assert "KWOK node gpu-0 (only scheduled there" in _placement(_pod("gpu-0", "sha256:abc"), ["gpu-0"])


def test_no_image_id_is_not_called_a_run_container():
    assert "no container ran yet" in _placement(_pod("real-0"), [])


def test_an_unscheduled_pod_says_so():
    assert _placement(_pod(None), []) == "pod m-0: not scheduled"
