"""What every cluster provider offers the gate."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

CLUSTER_KINDS = ("auto", "existing", "kind", "local")


@dataclass(frozen=True)
class Capabilities:
    """What a cluster can show; the suites skip (with this reason) what it cannot."""

    real_gpus: bool
    # None: unknown until the active probe (exposure/test_network_policy_is_enforced) says; it runs wherever pods
    # run, whatever this says, and fails when it cannot tell. False: no CNI enforces it here (KWOK only).
    enforces_network_policy: bool | None
    pulls_images: bool
    # vllm: the spec's; sim: the simulator in its place; vllm-cpu: vLLM's CPU build with a tiny model in its place
    engine: Literal["vllm", "sim", "vllm-cpu"]
    limits: str = ""  # one line: what this cluster cannot show
    runs_containers: bool = True  # False where pods are only scheduled (KWOK): no helm test, no probe pods
    recorded_gpu_telemetry: bool = False  # its GPU series are recorded test data, never a live GPU
    # How its Prometheus finds the model pods. platform: the platform's own (whatever the chart rendered for it);
    # annotations: Kubernetes discovery of the prometheus.io/* pod annotations alone (no Prometheus Operator), through
    # the release's NetworkPolicy; gate-targets: targets the local cluster wrote (its pods have no network).
    scrape_discovery: Literal["platform", "annotations", "gate-targets"] = "platform"
    # Whether it serves the custom metrics API (custom.metrics.k8s.io) an HPA reads: a platform's adapter, or the local
    # cluster's prometheus-adapter with its real node (KWOK-only, its pods have no metrics to serve).
    custom_metrics: bool = True


class Cluster(Protocol):
    kind: str
    name: str
    kubeconfig: Path | None
    context: str | None
    capabilities: Capabilities
    prometheus_url: str | None  # a Prometheus the cluster itself brings (the local one); None: only --prometheus-url

    def start(self) -> None:
        """Make the cluster usable (create it, or check it is reachable)."""

    def stop(self) -> None:
        """Release what start() created; leave anything pre-existing alone."""

    def describe(self) -> str:
        """One line for the report header: kind, name, context, version."""
