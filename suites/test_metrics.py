"""/metrics exposes the vLLM families the platform relies on, and they agree with the client."""

from __future__ import annotations

import pytest

from vllm_gate.checks import inference, metrics


def test_required_vllm_metric_families_are_exposed(gate_endpoint, gate_spec):
    # vLLM creates every labelled series at start; simulators create some on their first request.
    inference.chat(gate_endpoint, gate_spec.served_name, max_tokens=4)
    problems = metrics.family_problems(metrics.scrape(gate_endpoint))
    assert not problems, f"/metrics at {gate_endpoint}: {'; '.join(problems)}"


def test_server_counters_grew_by_what_the_client_measured(gate_load):
    if gate_load.metrics_error:
        pytest.fail(f"/metrics could not be read around the load test: {gate_load.metrics_error}", pytrace=False)
    client = metrics.client_counters(gate_load.run.samples)
    problems = metrics.counter_problems(gate_load.before, gate_load.after, client)
    samples = gate_load.run.samples
    if not samples:
        problems.append("the load client recorded no request at all")
    elif client.requests == 0:
        problems.append(f"every one of its {len(samples)} requests failed, the first with: {samples[0].error}")
    assert not problems, "; ".join(problems)
