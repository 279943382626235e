"""Endpoint checks against a simulator process (llm-d-inference-sim when built, else our stand-in).

A healthy server passes; each fault fails with a reason a person can act on.
"""

from __future__ import annotations

import re

import pytest

from tests.conftest import require
from vllm_gate.base.errors import EndpointError
from vllm_gate.base.ports import free_port
from vllm_gate.checks import inference, metrics
from vllm_gate.cluster.dataplane.sim import SimServer, sim_args_from_pod


@pytest.fixture(scope="module")
def sim():
    require("vllm-sim-standin")
    with SimServer(model="meta-llama/Meta-Llama-3-8B-Instruct", served_name="llama3", max_model_len=8192,
                   ttft_ms=20, itl_ms=2) as server:
        inference.wait_healthy(server.url, "llama3", 10)
        yield server


def test_healthy_simulator_passes_every_endpoint_check(sim):
    assert inference.health_status(sim.url) == 200
    assert "llama3" in [m["id"] for m in inference.list_models(sim.url)]
    assert inference.served_max_model_len(sim.url, "llama3") == 8192
    done = inference.chat(sim.url, "llama3", max_tokens=8)
    assert done.text
    assert 0 < done.completion_tokens <= 8
    streamed = inference.chat_stream(sim.url, "llama3", max_tokens=8)
    assert streamed.text
    assert streamed.events[0] == "role"
    assert streamed.events[-2:] == ("usage", "[DONE]")
    assert streamed.content_chunks == streamed.chunks - 2
    assert 0 < streamed.completion_tokens <= 8
    assert metrics.family_problems(metrics.scrape(sim.url)) == []


def test_wrong_served_model_name_is_named(sim):
    with pytest.raises(EndpointError, match=r"is healthy but /v1/models lists \['llama3'\], not 'llama-3'"):
        inference.wait_healthy(sim.url, "llama-3", timeout_s=1)
    with pytest.raises(EndpointError, match=r"HTTP 404"):
        inference.chat(sim.url, "llama-3")


def test_server_that_never_becomes_healthy_times_out_with_the_reason_saying_what_it_waits_for():
    said: list[str] = []
    with SimServer(model="m", startup_s=600) as starting, pytest.raises(EndpointError) as info:
        inference.wait_healthy(starting.url, "m", timeout_s=12, progress=said.append)
    assert "not healthy within 12 s: /health/ready answered 503" in info.value.summary
    assert len(said) == 1
    assert re.fullmatch(rf"waiting for {re.escape(starting.url)} to be healthy: /health/ready answered 503 \(still "
                        r"starting\) \(1[01] of 12 s\)", said[0]), said


def test_nothing_listening_fails_once_refused_for_its_short_wait_not_the_whole_one():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(EndpointError, match=r"nothing listens at http://127\.0\.0\.1:\d+: connection refused for \d+"):
        inference.wait_healthy(url, "m", timeout_s=120, refused_s=2)
    with pytest.raises(EndpointError, match=r"not healthy within 1 s: connection refused \(ConnectError\)"):
        inference.wait_healthy(url, "m", timeout_s=1)
    # Without refused_s (a port-forward, a Service): refusals are waited out to the end.
    with pytest.raises(EndpointError, match=r"not healthy within 3 s: connection refused"):
        inference.wait_healthy(url, "m", timeout_s=3)


def test_stream_ttft_counts_from_the_first_content_chunk_not_the_role_chunk():
    # The simulator sends the role-only chunk at once and content only after the TTFT.
    with SimServer(model="m", ttft_ms=300, itl_ms=1) as slow:
        streamed = inference.chat_stream(slow.url, "m", max_tokens=4)
    assert streamed.ttft_s >= 0.3


def test_scrape_accepts_old_metric_names():
    old = """# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name="m"} 0.5
# TYPE vllm:time_per_output_token_seconds histogram
vllm:time_per_output_token_seconds_bucket{le="+Inf",model_name="m"} 1
vllm:time_per_output_token_seconds_sum{model_name="m"} 0.1
vllm:time_per_output_token_seconds_count{model_name="m"} 1
"""
    problems = " ".join(metrics.family_problems(metrics.parse(old)))
    assert "vllm:kv_cache_usage_perc" not in problems
    assert "vllm:inter_token_latency_seconds" not in problems
    assert "vllm:num_requests_running: absent" in problems


def test_counters_sum_one_model():
    text = """# TYPE vllm:request_success_total counter
vllm:request_success_total{finished_reason="stop",model_name="a"} 3
vllm:request_success_total{finished_reason="length",model_name="a"} 2
vllm:request_success_total{finished_reason="stop",model_name="b"} 7
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{model_name="a"} 40
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{model_name="a"} 50
"""
    after = metrics.counters(metrics.parse(text), "a")
    assert after == metrics.Counters(5, 40, 50)


@pytest.mark.parametrize(("args", "expected"), [
    (["meta-llama/Meta-Llama-3-8B-Instruct", "--served-model-name", "llama3", "--host", "0.0.0.0", "--port",
      "8000", "--max-model-len", "8192", "--gpu-memory-utilization", "0.95", "--tensor-parallel-size", "1",
      "--enforce-eager"],
     ["--model", "meta-llama/Meta-Llama-3-8B-Instruct", "--served-model-name", "llama3", "--max-model-len", "8192",
      "--tensor-parallel-size", "1", "--port", "9000"]),
    (["--model", "m", "--port", "8000", "--time-to-first-token=200ms"],
     ["--model", "m", "--time-to-first-token", "200ms", "--port", "9000"]),
])
def test_pod_args_become_simulator_args(args, expected):
    assert sim_args_from_pod(args, 9000) == expected
