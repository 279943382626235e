"""An existing cluster (the real GPU pool), reached through kubeconfig and context like kubectl."""

from __future__ import annotations

from pathlib import Path

from vllm_gate.base.kube import api_client, current_context, server_version
from vllm_gate.cluster.base import Capabilities


class ExistingCluster:
    kind = "existing"

    prometheus_url: str | None = None  # the platform's Prometheus comes from --prometheus-url

    def __init__(self, kubeconfig: Path | None, context: str | None) -> None:
        self.kubeconfig = kubeconfig
        self.context = context or current_context(kubeconfig)
        self.name = self.context or "current-context"
        self.capabilities = Capabilities(real_gpus=True, enforces_network_policy=None, pulls_images=True,
                                         engine="vllm")
        self.version = ""

    def start(self) -> None:
        """Check the API server answers; create nothing."""
        self.version = server_version(api_client(self.kubeconfig, self.context))

    def stop(self) -> None:
        """Nothing to release: the gate does not own this cluster."""

    def describe(self) -> str:
        return f"existing (context {self.name}" + (f", Kubernetes {self.version})" if self.version else ")")
