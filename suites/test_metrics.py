"""/metrics exposes the vLLM families the platform relies on, and they agree with the client."""

from __future__ import annotations

from vllm_gate import metrics


def test_required_vllm_metric_families_are_exposed(gate_endpoint):
    missing = metrics.missing_families(metrics.scrape(gate_endpoint))
    assert not missing, f"/metrics lacks {missing}"


def test_server_counters_grew_by_what_the_client_measured(gate_load):
    ok = [s for s in gate_load.run.samples if s.ok]
    server = gate_load.after - gate_load.before
    client = metrics.Counters(len(ok), sum(s.prompt_tokens or 0 for s in ok), sum(s.output_tokens or 0 for s in ok))
    assert server == client, f"server counters grew by {server}, the load client measured {client}"
