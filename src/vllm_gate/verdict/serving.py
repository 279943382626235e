"""What actually serves the model: real vLLM on real nodes, or a simulator / KWOK node in its place."""

from __future__ import annotations

from dataclasses import dataclass

from kubernetes import client

KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
ENGINE_LABEL = "vllm-gate/engine"


@dataclass(frozen=True)
class Serving:
    """``simulated`` names what answers in place of vLLM on real nodes; None when nothing does."""

    pods: int
    simulated: str | None
    containers_run: bool = True  # False on KWOK nodes or without image IDs: no helm test pod can run there
    names: tuple[str, ...] = ()  # the pods, not terminating
    container: str = ""  # the model server's container (the pod's first)
    image_ids: tuple[str, ...] = ()  # what the kubelets report they ran (digests), where containers ran
    placement: tuple[str, ...] = ()  # one line per pod: its node, and whether a kubelet ran it there

    @property
    def real(self) -> bool:
        return self.pods > 0 and self.simulated is None


def _kwok(node: client.V1Node) -> bool:
    # KWOK marks the nodes it fakes with this annotation (and a kwok:// providerID when it sets one).
    annotations = node.metadata.annotations or {}
    return KWOK_NODE_ANNOTATION in annotations or (node.spec.provider_id or "").startswith("kwok")


def fake_pool(core: client.CoreV1Api, gpu_type: str) -> str | None:
    """Before deploying: when every node of the spec's GPU type is a KWOK node, say so (a rehearsal), else None."""
    nodes = core.list_node(label_selector=f"gpu-type={gpu_type}", _request_timeout=15).items
    if nodes and all(_kwok(n) for n in nodes):
        return f"KWOK node {', '.join(sorted(n.metadata.name for n in nodes))} (no container runs there)"
    return None


def observe(core: client.CoreV1Api, namespace: str, selector: str) -> Serving:
    """Look at the release's pods and their nodes: which engine runs, and on what kind of node."""
    pods = core.list_namespaced_pod(namespace, label_selector=selector, _request_timeout=15).items
    pods = [p for p in pods if p.metadata.deletion_timestamp is None]
    if not pods:
        return Serving(0, None)
    findings: list[str] = []
    sims = sorted({p.metadata.name for p in pods if (p.metadata.labels or {}).get(ENGINE_LABEL) == "sim"})
    if sims:
        findings.append(f"engine: sim in pod {', '.join(sims)}")
    node_names = sorted({p.spec.node_name for p in pods if p.spec.node_name})
    fake = [n for n in node_names if _kwok(core.read_node(n, _request_timeout=15))]
    unrun = sorted(p.metadata.name for p in pods if not _ran_an_image(p))
    if fake:
        findings.append(f"KWOK node {', '.join(fake)} (no container runs there; a simulator answers)")
    elif unrun:
        # Positive evidence, whatever the nodes are called: a kubelet that ran the image reports its ID.
        findings.append(f"pod {', '.join(unrun)} reports no image ID (no container image ran)")
    image_ids = sorted({cs.image_id for p in pods for cs in p.status.container_statuses or [] if cs.image_id})
    placement = tuple(_placement(p, fake) for p in sorted(pods, key=lambda p: p.metadata.name))
    return Serving(len(pods), "; ".join(findings) or None, containers_run=not (fake or unrun),
                   names=tuple(sorted(p.metadata.name for p in pods)), container=pods[0].spec.containers[0].name,
                   image_ids=tuple(image_ids), placement=placement)


def _placement(pod: client.V1Pod, kwok_nodes: list[str]) -> str:
    """Where one pod ran, and whether a kubelet ran its containers there (the report's evidence)."""
    node = pod.spec.node_name
    if not node:
        return f"pod {pod.metadata.name}: not scheduled"
    if node in kwok_nodes:
        return f"pod {pod.metadata.name} on KWOK node {node} (only scheduled there; no container ran)"
    if _ran_an_image(pod):
        return f"pod {pod.metadata.name} on node {node} (its kubelet ran the container)"
    return f"pod {pod.metadata.name} on node {node} (no image ID reported: no container ran yet)"


def _ran_an_image(pod: client.V1Pod) -> bool:
    statuses = pod.status.container_statuses or []
    return bool(statuses) and all(cs.image_id for cs in statuses)
