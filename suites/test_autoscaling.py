"""The model's scaling policy scales: the HPA controller reads the metric it scales on (else it scales nothing), and
under a load above one replica's capacity it adds pods that serve within the SLOs, then removes them after the load
no sooner than its window. Runs after the model's other checks (it changes the replica count)."""

from __future__ import annotations

import pytest

from vllm_gate.checks.autoscaling import hpa_problems


@pytest.fixture
def custom_metrics(gate_run):
    """Skip (not shown) without a policy or where the cluster serves no custom metrics API."""
    if not gate_run.spec.autoscaling.enabled:
        pytest.skip("no scaling policy: autoscaling.enabled is false in the spec")
    capabilities = gate_run.capabilities
    if capabilities is not None and not capabilities.custom_metrics:
        pytest.skip(f"not shown: this cluster serves no custom metrics API ({capabilities.limits})")


pytestmark = pytest.mark.usefixtures("custom_metrics")


def test_hpa_reads_its_metric(gate_hpa):
    hpa, metric = gate_hpa
    problems = hpa_problems(hpa, metric)
    assert not problems, "; ".join(problems)


def test_scales_out_under_load_and_back_in(gate_scaling):
    problems = gate_scaling.problems()
    assert not problems, f"{gate_scaling.headline()}: " + "; ".join(problems)
