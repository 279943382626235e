"""The model's pods have the GPUs they asked for, holding vLLM's preallocation, busy under load, without XID errors."""

from __future__ import annotations

import pytest

from vllm_gate.monitoring import checks
from vllm_gate.monitoring.recorded import RECORDED_LABEL


def _source(gate_monitoring):
    if gate_monitoring.gpu is None:
        pytest.skip(gate_monitoring.no_gpu)
    return gate_monitoring.gpu


def _live_source(gate_monitoring):
    """A live GPU: recorded telemetry says nothing about which GPU this pod got or what it holds."""
    source = _source(gate_monitoring)
    if source.recorded:
        pytest.skip(f"{RECORDED_LABEL}: the pod's GPU count, type and memory exist only on a live GPU")
    return source


def test_pod_has_the_gpus_it_asked_for(gate_monitoring, gate_spec):
    resources = gate_spec.resources
    problems = checks.gpu_identity(_live_source(gate_monitoring), gate_monitoring.pods, resources.gpus,
                                   resources.gpu_type)
    assert not problems, "; ".join(problems)


def test_gpu_memory_matches_vllm_preallocation(gate_monitoring, gate_spec):
    problems = checks.gpu_memory(_live_source(gate_monitoring), gate_monitoring.pods,
                                 gate_spec.vllm.gpu_memory_utilization)
    assert not problems, "; ".join(problems)


def test_gpu_busy_under_load(gate_monitoring, gate_load):
    _source(gate_monitoring)
    problems = checks.gpu_busy(gate_load.watched, gate_monitoring.pods)
    assert not problems, "; ".join(problems)


def test_no_xid_errors_during_the_run(gate_monitoring, gate_load):
    source = _source(gate_monitoring)
    if not source.reports_xid:
        pytest.skip(f"{source.description} reports no XID errors; scrape dcgm-exporter (DCGM_FI_DEV_XID_ERRORS) "
                    "into --prometheus-url to check them")
    problems = checks.gpu_xid(gate_load.watched, gate_monitoring.pods)
    assert not problems, "; ".join(problems)
