"""The HPA's status says whether it can scale: an inactive ScalingActive or no current value of the metric fails,
naming the metric and the controller's reason. The statuses below are the shapes kube-controller-manager writes."""

from __future__ import annotations

from vllm_gate.checks.autoscaling import current_value, hpa_problems, owned_by_keda, scaled_metric

METRIC = "vllm_num_requests_waiting"


def hpa(conditions: list[dict], current: list[dict] | None = None) -> dict:
    return {"metadata": {"namespace": "ias-production", "name": "llama3-vllm"},
            "status": {"conditions": conditions, "currentMetrics": current}}


def active(status: str, reason: str, message: str = "") -> dict:
    return {"type": "ScalingActive", "status": status, "reason": reason, "message": message}


def test_a_metric_nobody_serves_fails_naming_it_and_the_controllers_reason():
    unserved = hpa([{"type": "AbleToScale", "status": "True", "reason": "SucceededGetScale"},
                    active("False", "FailedGetPodsMetric", "the HPA was unable to compute the replica count: unable "
                           "to get metric vllm_num_requests_waiting: unable to fetch metrics from custom metrics "
                           "API: no custom metrics API (custom.metrics.k8s.io) registered")])
    (problem,) = hpa_problems(unserved, METRIC)
    assert problem.startswith("HorizontalPodAutoscaler ias-production/llama3-vllm cannot scale on metric "
                              "vllm_num_requests_waiting: ScalingActive False (FailedGetPodsMetric): the HPA was")
    assert "no custom metrics API (custom.metrics.k8s.io) registered" in problem


def test_an_hpa_the_controller_never_evaluated_is_not_shown_to_scale():
    fresh = hpa([])
    (problem,) = hpa_problems(fresh, METRIC)
    assert "has not evaluated it (no ScalingActive condition)" in problem


def test_an_active_hpa_needs_a_current_value_of_its_own_metric():
    reading = [{"type": "Pods", "pods": {"metric": {"name": METRIC}, "current": {"averageValue": "0"}}}]
    other = [{"type": "Pods", "pods": {"metric": {"name": "vllm_num_requests_running"},
                                       "current": {"averageValue": "3"}}}]
    ok = hpa([active("True", "ValidMetricFound")], reading)
    assert hpa_problems(ok, METRIC) == []
    (problem,) = hpa_problems(hpa([active("True", "ValidMetricFound")], other), METRIC)
    assert problem.endswith("ScalingActive, but its status has no current value of metric vllm_num_requests_waiting")


def test_an_hpa_keda_created_is_read_on_its_external_metric():
    # The shape KEDA's operator writes for a ScaledObject's HPA: owned by the ScaledObject, one External metric
    # per trigger named s<index>-<type>.
    keda = hpa([active("True", "ValidMetricFound")],
               [{"type": "External", "external": {"metric": {"name": "s0-prometheus"},
                                                  "current": {"averageValue": "2500m"}}}])
    keda["metadata"]["ownerReferences"] = [{"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
                                            "name": "llama3-vllm"}]
    assert owned_by_keda(keda)
    assert scaled_metric(keda, METRIC) == "s0-prometheus"
    assert current_value(keda, "s0-prometheus") == 2.5
    assert hpa_problems(keda, "s0-prometheus") == []
    plain = hpa([active("True", "ValidMetricFound")])
    assert not owned_by_keda(plain)
    assert scaled_metric(plain, METRIC) == METRIC
    assert current_value(plain, METRIC) is None
