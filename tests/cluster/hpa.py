"""Reading an HPA as its controller left it, for the planted-metric tests."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from vllm_gate.base.waiting import wait_until

# Two of the controller's 15 s syncs: the first evaluation of a new HPA, on a busy machine.
EVALUATED_WITHIN_S = 30


def evaluated_hpa(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    """The HPA once its controller has set ScalingActive (either way), or as it is after EVALUATED_WITHIN_S. A
    metric no adapter rule serves, or no custom metrics API at all, cannot come right later: the first evaluation
    is the answer."""
    last: list[dict[str, Any]] = []

    def state() -> str | None:
        hpa = api.sanitize_for_serialization(client.AutoscalingV2Api(api).read_namespaced_horizontal_pod_autoscaler(
            name, namespace, _request_timeout=15))
        last[:] = [hpa]
        conditions = (hpa.get("status") or {}).get("conditions") or []
        return None if any(c.get("type") == "ScalingActive" for c in conditions) else "not evaluated yet"

    wait_until(state, EVALUATED_WITHIN_S, lambda _on, _elapsed: None)
    return last[0]
