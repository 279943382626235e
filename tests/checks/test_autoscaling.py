"""The HPA's status says whether it can scale: an inactive ScalingActive or no current value of the metric fails,
naming the metric and the controller's reason. The statuses below are the shapes kube-controller-manager writes."""

from __future__ import annotations

from vllm_gate.checks.autoscaling import evaluated, hpa_problems

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
    assert not evaluated(fresh)
    (problem,) = hpa_problems(fresh, METRIC)
    assert "has not evaluated it (no ScalingActive condition)" in problem


def test_an_active_hpa_needs_a_current_value_of_its_own_metric():
    reading = [{"type": "Pods", "pods": {"metric": {"name": METRIC}, "current": {"averageValue": "0"}}}]
    other = [{"type": "Pods", "pods": {"metric": {"name": "vllm_num_requests_running"},
                                       "current": {"averageValue": "3"}}}]
    ok = hpa([active("True", "ValidMetricFound")], reading)
    assert evaluated(ok)
    assert hpa_problems(ok, METRIC) == []
    (problem,) = hpa_problems(hpa([active("True", "ValidMetricFound")], other), METRIC)
    assert problem.endswith("ScalingActive, but its status has no current value of metric vllm_num_requests_waiting")
