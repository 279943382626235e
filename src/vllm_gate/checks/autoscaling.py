"""Whether the model's HorizontalPodAutoscaler can act: the controller reads its metric from the cluster's metrics
API. A policy whose metric nobody serves (no adapter, no rule for it, a renamed vLLM series) scales nothing, and
says so only in the HPA's status: these checks read it there and name the metric."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from vllm_gate.base.errors import GateError

EVALUATION_S = 60  # the controller's 15 s sync and a first metrics read, on a busy machine
POLL_S = 2.0
PROGRESS_EVERY_S = 10.0


def _condition(hpa: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    return next((c for c in (hpa.get("status") or {}).get("conditions") or [] if c.get("type") == kind), None)


def evaluated(hpa: Mapping[str, Any]) -> bool:
    """The controller has tried to read the HPA's metrics at least once (ScalingActive set, either way)."""
    return _condition(hpa, "ScalingActive") is not None


def hpa_problems(hpa: Mapping[str, Any], metric: str) -> list[str]:
    """What keeps the HPA from scaling on ``metric``: an inactive ScalingActive condition (its reason and message),
    or no current value of the metric; [] when the controller reads it."""
    name = f"HorizontalPodAutoscaler {hpa['metadata']['namespace']}/{hpa['metadata']['name']}"
    active = _condition(hpa, "ScalingActive")
    if active is None:
        return [f"{name}: the controller has not evaluated it (no ScalingActive condition): metric {metric} not "
                "shown to be read"]
    if active.get("status") != "True":
        return [f"{name} cannot scale on metric {metric}: ScalingActive {active.get('status')} "
                f"({active.get('reason')}): {active.get('message') or 'no message'}"]
    current = [m for m in (hpa.get("status") or {}).get("currentMetrics") or []
               if ((m.get("pods") or {}).get("metric") or {}).get("name") == metric]
    if not current:
        return [f"{name}: ScalingActive, but its status has no current value of metric {metric}"]
    return []


def wait_evaluated(api: client.ApiClient, namespace: str, name: str, timeout_s: float,
                   progress: Callable[[str], None]) -> Mapping[str, Any]:
    """The HPA once the controller has evaluated it (or as it is after ``timeout_s``), saying every 10 s what it
    waits for."""
    autoscaling = client.AutoscalingV2Api(api)
    started = said = time.monotonic()
    while True:
        try:
            hpa = api.sanitize_for_serialization(autoscaling.read_namespaced_horizontal_pod_autoscaler(
                name, namespace, _request_timeout=15))
        except ApiException as exc:
            raise GateError(f"HorizontalPodAutoscaler {namespace}/{name}: cannot be read (HTTP {exc.status} "
                            f"{exc.reason})") from None
        now = time.monotonic()
        if evaluated(hpa) or now - started >= timeout_s:
            return hpa
        if now - said >= PROGRESS_EVERY_S:
            said = now
            progress(f"autoscaling: waiting for the HPA controller to evaluate {namespace}/{name}, "
                     f"{now - started:.0f}/{timeout_s:.0f} s")
        time.sleep(POLL_S)
