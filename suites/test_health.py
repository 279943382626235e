"""The server is up, serves the spec's model name and length, and completes chats (streamed too)."""

from __future__ import annotations

import pytest

from vllm_gate.checks import inference, server
from vllm_gate.deploy import release


def test_health_endpoint_answers_200(gate_endpoint):
    assert inference.health_status(gate_endpoint) == 200


def test_models_lists_the_served_name(gate_endpoint, gate_spec):
    names = [m["id"] for m in inference.list_models(gate_endpoint)]
    assert gate_spec.served_name in names, f"/v1/models lists {names}"


def test_max_model_len_matches_the_spec(gate_endpoint, gate_spec):
    served = inference.served_max_model_len(gate_endpoint, gate_spec.served_name)
    assert served == gate_spec.vllm.max_model_len, (
        f"server reports max_model_len {served}, spec says {gate_spec.vllm.max_model_len}")


def test_server_is_the_specs_vllm_and_model(gate_server, gate_spec, gate_run):
    problems = server.problems(gate_server, gate_spec, simulated=gate_run.simulated is not None)
    assert not problems, "; ".join(problems)


def test_chat_completion(gate_endpoint, gate_spec):
    result = inference.chat(gate_endpoint, gate_spec.served_name, max_tokens=16)
    assert result.text.strip(), "empty completion"
    assert 0 < result.completion_tokens <= 16


def test_streamed_chat_completion(gate_endpoint, gate_spec):
    # chat_stream fails unless content chunks, then a usage chunk, then data: [DONE] arrive in that order.
    result = inference.chat_stream(gate_endpoint, gate_spec.served_name, max_tokens=16)
    assert result.text.strip(), f"the content chunks carried only whitespace ({result.content_chunks} chunks)"
    assert 0 < result.completion_tokens <= 16, (
        f"the usage chunk reports {result.completion_tokens} completion tokens for max_tokens 16")


def test_helm_test_passes(gate_release, gate_cluster):
    if not gate_release.containers:  # the cluster's capabilities, and what the deploy actually saw
        pytest.skip("this cluster runs no containers (KWOK pods are only scheduled): the chart's helm test pod "
                    "cannot run here")
    try:
        release.helm_test(gate_release.release, gate_cluster.kubeconfig, gate_cluster.context)
    except release.DeployFailed as exc:
        pytest.fail(f"{exc.summary}\n{exc.detail}", pytrace=False)
