"""The model's scaling policy can act: the HPA controller reads the metric it scales on (else it scales nothing)."""

from __future__ import annotations

import pytest

from vllm_gate.checks.autoscaling import hpa_problems


def test_hpa_reads_its_metric(gate_hpa):
    if gate_hpa is None:
        pytest.skip("no scaling policy: autoscaling.enabled is false in the spec")
    hpa, metric = gate_hpa
    problems = hpa_problems(hpa, metric)
    assert not problems, "; ".join(problems)
