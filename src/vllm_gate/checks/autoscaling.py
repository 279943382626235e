"""Whether the model's HorizontalPodAutoscaler can act: the controller reads its metric from the cluster's metrics
API. A policy whose metric nobody serves (no adapter, no rule for it, a renamed vLLM series) scales nothing, and
says so only in the HPA's status: these checks read it there and name the metric."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.utils.quantity import parse_quantity

from vllm_gate.base.errors import GateError
from vllm_gate.base.waiting import wait_until

# The controller's 15 s sync, the adapter's next relist of the series (a minute on platform charts), a busy machine.
EVALUATION_S = 90
KEDA_FALLBACK = ("the chart's KEDA ScaledObject (autoscaling.controller: keda): this cluster serves no "
                 "keda.sh/v1alpha1 ScaledObject, so the chart rendered its fallback, an HPA on the custom metrics API")
KEDA_METRIC = "s0-prometheus"  # KEDA names a ScaledObject's external metrics s<trigger index>-<trigger type>
POLL_S = 2.0


def _condition(hpa: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    return next((c for c in (hpa.get("status") or {}).get("conditions") or [] if c.get("type") == kind), None)


def owned_by_keda(hpa: Mapping[str, Any]) -> bool:
    """KEDA created it for a ScaledObject (the chart's controller: keda, on a cluster that serves KEDA)."""
    return any(o.get("kind") == "ScaledObject" for o in hpa["metadata"].get("ownerReferences") or [])


def scaled_metric(hpa: Mapping[str, Any], metric: str) -> str:
    """The metric the HPA reads: ``metric`` (custom metrics API), or KEDA's external metric for its first trigger."""
    return KEDA_METRIC if owned_by_keda(hpa) else metric


def current_value(hpa: Mapping[str, Any], metric: str) -> float | None:
    """The controller's current per-pod average of ``metric`` (a Pods or an External metric); None: not read."""
    for entry in (hpa.get("status") or {}).get("currentMetrics") or []:
        for kind in ("pods", "external"):
            found = entry.get(kind) or {}
            average = (found.get("current") or {}).get("averageValue")
            if (found.get("metric") or {}).get("name") == metric and average is not None:
                return float(parse_quantity(average))
    return None


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
    if current_value(hpa, metric) is None:
        return [f"{name}: ScalingActive, but its status has no current value of metric {metric}"]
    return []


def wait_read(api: client.ApiClient, namespace: str, name: str, metric: str, timeout_s: float,
              progress: Callable[[str], None]) -> Mapping[str, Any]:
    """The HPA once its controller reads ``metric`` (or as it is after ``timeout_s``: an adapter lists a new pod's
    series only at its next relist), saying every 10 s what it waits for."""
    autoscaling = client.AutoscalingV2Api(api)
    last: list[Mapping[str, Any]] = []

    def state() -> str | None:
        try:
            hpa = api.sanitize_for_serialization(autoscaling.read_namespaced_horizontal_pod_autoscaler(
                name, namespace, _request_timeout=15))
        except ApiException as exc:
            raise GateError(f"HorizontalPodAutoscaler {namespace}/{name}: cannot be read (HTTP {exc.status} "
                            f"{exc.reason})") from None
        last[:] = [hpa]
        problems = hpa_problems(hpa, scaled_metric(hpa, metric))
        return problems[0] if problems else None

    wait_until(state, timeout_s, lambda on, elapsed: progress(
        f"autoscaling: waiting for the HPA controller to read {metric} for {namespace}/{name} ({on}), "
        f"{elapsed:.0f}/{timeout_s:.0f} s"), poll_s=POLL_S)
    return last[0]
