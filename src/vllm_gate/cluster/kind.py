"""A throwaway kind cluster through pytest-kind-ng (needs Docker; CI here has none)."""

from __future__ import annotations

from pathlib import Path

from pytest_kind.cluster import KindCluster as _Kind

from vllm_gate.cluster.base import Capabilities


class KindCluster:
    kind = "kind"

    def __init__(self, name: str, kind_bin: Path | None, kubectl_bin: Path | None, keep: bool) -> None:
        self.name = name
        self.context: str | None = f"kind-{name}"
        self._cluster = _Kind(name, kind_path=kind_bin, kubectl_path=kubectl_bin)
        self.kubeconfig: Path | None = Path(self._cluster.kubeconfig_path)
        self._keep = keep
        # kind enforces NetworkPolicy since v0.24 (kindnetd); it has no GPUs.
        self.capabilities = Capabilities(real_gpus=False, enforces_network_policy=True, pulls_images=True,
                                         engine="sim", limits="kind: no GPUs")

    def start(self) -> None:
        self._cluster.create()

    def stop(self) -> None:
        if not self._keep:
            self._cluster.delete()

    def describe(self) -> str:
        return f"kind (cluster {self.name})"
