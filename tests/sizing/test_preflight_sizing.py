"""Preflight's sizing, at the library level (no cluster): what does not fit fails in seconds, with what to change."""

from __future__ import annotations

import re

import pytest

from vllm_gate.base.errors import SpecError
from vllm_gate.base.tools import MODELS_DIR
from vllm_gate.deploy.preflight import PreflightFailed, check_sizing
from vllm_gate.sizing.fit import fit
from vllm_gate.sizing.gpus import gpu_type
from vllm_gate.spec import load_spec

LONG_ON_24GB = ["vllm.max_model_len=131072", "resources.gpu_type=l4"]


def test_a_long_context_model_is_told_the_largest_length_its_kv_cache_holds():
    # Llama 3.1's 131,072-token context on the same 8B architecture: the KV cache is what limits it.
    spec = load_spec("llama3", MODELS_DIR, [*LONG_ON_24GB, "architecture.max_position_embeddings=131072"])
    largest = fit(spec, gpu_type("l4")).estimate.largest_max_model_len
    with pytest.raises(PreflightFailed) as failed:
        check_sizing(spec)
    assert f"set vllm.max_model_len to at most {largest}" in failed.value.summary
    assert "max_position_embeddings" not in failed.value.summary


def test_max_model_len_beyond_the_kv_cache_fails_naming_the_largest_that_fits():
    spec = load_spec("llama3", MODELS_DIR, LONG_ON_24GB)
    largest = fit(spec, gpu_type("l4")).estimate.largest_max_model_len
    assert 8192 < largest < 131072
    with pytest.raises(PreflightFailed) as failed:
        check_sizing(spec)
    message = failed.value.summary
    assert message.startswith("preflight: vllm.max_model_len 131072 does not fit one request on l4")
    assert f"= {largest:,} tokens" in message  # what the KV cache holds
    # Llama 3 8B's max_position_embeddings (8192) is below that: vLLM would refuse more, so that is the suggestion.
    assert "set vllm.max_model_len to at most 8192" in message
    assert "max_position_embeddings 8192" in message  # llama3 is an 8k model besides
    fits_elsewhere = re.search(r"use a GPU type where it fits \(([^)]*)\)", message)
    assert fits_elsewhere is not None
    assert "h100-sxm" in fits_elsewhere.group(1)
    assert "a10g" not in fits_elsewhere.group(1)
    assert "\n" not in message


def test_a_utilization_that_would_fit_is_suggested():
    # mistral-7b at 62k on an L4 (58,656 tokens fit at 0.95): a little more of the card holds it.
    spec = load_spec("mistral-7b", MODELS_DIR, ["vllm.max_model_len=62000", "resources.gpu_type=l4"])
    with pytest.raises(PreflightFailed, match=r"raise vllm.gpu_memory_utilization to 0\.9[6-8]"):
        check_sizing(spec)


def test_the_specs_as_committed_fit_their_gpu_type():
    for name in ("llama3", "mistral-7b"):
        lines = check_sizing(load_spec(name, MODELS_DIR))
        assert len(lines) == 1
        assert lines[0].startswith(f"vllm-gate: sizing (estimate): {name} on rtx-6000-ada: KV cache")


def test_load_beyond_the_kv_cache_warns_or_fails_as_the_spec_says():
    crowded = ["load.profile.users=200", "resources.gpu_type=l4"]
    lines = check_sizing(load_spec("llama3", MODELS_DIR, crowded))
    warning = next(line for line in lines if line.startswith("vllm-gate: WARNING sizing: the load profile keeps 200"))
    assert "holds 116" in warning
    with pytest.raises(PreflightFailed, match=r"keeps 200 requests of 384 tokens in flight.*holds 116"):
        check_sizing(load_spec("llama3", MODELS_DIR, [*crowded, "sizing.concurrency=fail"]))


def test_unknown_gpu_type_or_architecture_is_not_shown_never_passed_or_failed():
    (line,) = check_sizing(load_spec("llama3", MODELS_DIR, ["resources.gpu_type=mi300x"]))
    assert line.startswith("vllm-gate: sizing not shown: gpu_type mi300x is not in the sizing table")
    (line,) = check_sizing(load_spec("llama3", MODELS_DIR, ["architecture=null"]))
    assert line.startswith("vllm-gate: sizing not shown: the spec has no architecture section")


def test_bad_sizing_and_architecture_values_name_the_field():
    with pytest.raises(SpecError, match=r"sizing.concurrency: Input should be 'warn' or 'fail'"):
        load_spec("llama3", MODELS_DIR, ["sizing.concurrency=sometimes"])
    with pytest.raises(SpecError, match=r"architecture: .*set num_parameters or weight_bytes"):
        load_spec("llama3", MODELS_DIR, ["architecture.num_parameters=null"])
    with pytest.raises(SpecError, match=r"architecture.kv_cache_dtype"):
        load_spec("llama3", MODELS_DIR, ["architecture.kv_cache_dtype=int3"])
