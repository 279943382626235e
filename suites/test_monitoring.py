"""The platform's Prometheus scrapes the model's pods, holds their vLLM series, and counts what the load test sent."""

from __future__ import annotations

import pytest

from vllm_gate.checks import metrics
from vllm_gate.monitoring import checks


def _prometheus(gate_monitoring):
    if gate_monitoring.prom is None:
        pytest.skip(gate_monitoring.no_prometheus)
    return gate_monitoring.prom


def test_model_pods_are_scrape_targets_and_up(gate_monitoring):
    problems = checks.scrape_targets(_prometheus(gate_monitoring), gate_monitoring.pods)
    assert not problems, "; ".join(problems)


def test_vllm_series_carry_pod_labels_and_model_name(gate_monitoring, gate_load):
    # After the load test: simulators create some labelled series on their first request.
    problems = checks.vllm_series(_prometheus(gate_monitoring), gate_monitoring.pods)
    assert not problems, "; ".join(problems)


def test_prometheus_rates_agree_with_the_load_client(gate_monitoring, gate_load):
    _prometheus(gate_monitoring)
    client = metrics.client_counters(gate_load.run.samples)
    problems = checks.rates(gate_load.watched, client, gate_load.run.wall_s)
    assert not problems, "; ".join(problems)
