"""Preflight's sizing, at the library level (no cluster): what does not fit fails in seconds, with what to change."""

from __future__ import annotations

import re

import pytest

from vllm_gate.base.errors import SpecError
from vllm_gate.base.tools import MODELS_DIR
from vllm_gate.deploy.preflight import PreflightFailed, check_sizing
from vllm_gate.sizing.calibration import WORST_OVERESTIMATE
from vllm_gate.sizing.fit import fit, safe_tokens
from vllm_gate.sizing.gpus import gpu_type
from vllm_gate.spec import load_spec

LONG_ON_24GB = ["vllm.max_model_len=131072", "resources.gpu_type=l4"]


# Llama 3.1's 131,072-token context on Llama 3 8B's architecture: the KV cache, not the model, limits the length.
LLAMA31_CONTEXT = "architecture.max_position_embeddings=131072"


def test_max_model_len_beyond_the_kv_cache_fails_naming_the_largest_that_fits():
    spec = load_spec("llama3", MODELS_DIR, [*LONG_ON_24GB, LLAMA31_CONTEXT])
    estimate = fit(spec, gpu_type("l4")).estimate
    assert 8192 < estimate.kv_cache_tokens < 131072
    with pytest.raises(PreflightFailed) as failed:
        check_sizing(spec)
    message = failed.value.summary
    assert message.startswith("preflight: vllm.max_model_len 131072 does not fit one request on l4: the KV cache "
                              f"gets 5.5 GiB = {estimate.kv_cache_tokens:,} tokens")
    # The largest length promised is the estimate less its worst held-out overestimate, in whole blocks.
    safe = safe_tokens(estimate)
    assert safe == int(estimate.num_gpu_blocks * (1 - WORST_OVERESTIMATE)) * 16 < estimate.kv_cache_tokens
    assert f"set vllm.max_model_len to at most {safe}," in message
    fits_elsewhere = re.search(r"use a GPU type where it fits \(([^)]*)\)", message)
    assert fits_elsewhere is not None
    assert "h100-sxm" in fits_elsewhere.group(1)
    assert "a10g" not in fits_elsewhere.group(1)
    assert "max_position_embeddings" not in message
    assert "\n" not in message


@pytest.mark.parametrize(("overrides", "largest"), [
    (LONG_ON_24GB, 8192),  # Llama 3 8B is an 8k model: that, not the KV cache, is the limit
    (["vllm.max_model_len=16384", "resources.gpu_type=h100-sxm"], 8192),  # fits the KV cache, still refused
])
def test_a_length_above_the_models_positions_is_refused_whatever_the_kv_cache(overrides, largest):
    with pytest.raises(PreflightFailed) as failed:
        check_sizing(load_spec("llama3", MODELS_DIR, overrides))
    message = failed.value.summary
    assert "is above the model's max_position_embeddings 8192 (architecture): vLLM refuses it" in message
    assert message.endswith(f"set vllm.max_model_len to at most {largest}")


def test_a_server_already_running_is_warned_about_not_refused():
    lines = check_sizing(load_spec("llama3", MODELS_DIR, [*LONG_ON_24GB, LLAMA31_CONTEXT]), refuse=False)
    assert lines[0].startswith("vllm-gate: WARNING sizing: vllm.max_model_len 131072 does not fit one request on l4")


def test_a_fit_within_the_estimates_error_is_a_warning():
    spec = load_spec("llama3", MODELS_DIR, ["resources.gpu_type=l4", LLAMA31_CONTEXT])
    estimate = fit(spec, gpu_type("l4")).estimate
    inside = (safe_tokens(estimate) + estimate.kv_cache_tokens) // 2  # fits the estimate, not its error band
    lines = check_sizing(load_spec("llama3", MODELS_DIR, ["resources.gpu_type=l4", LLAMA31_CONTEXT,
                                                          f"vllm.max_model_len={inside}"]))
    assert any(line.startswith(f"vllm-gate: WARNING sizing: max_model_len {inside} fits by") and
               "vLLM may refuse to start" in line for line in lines), lines
    clear = check_sizing(load_spec("llama3", MODELS_DIR, ["resources.gpu_type=l4", LLAMA31_CONTEXT,
                                                          f"vllm.max_model_len={safe_tokens(estimate)}"]))
    assert not any("may refuse" in line for line in clear), clear


def test_a_utilization_that_would_fit_is_suggested():
    # mistral-7b at 59k on an L4 (its KV cache holds 58,656 at 0.95): a little more of the card holds it, with the
    # estimate's error to spare.
    spec = load_spec("mistral-7b", MODELS_DIR, ["vllm.max_model_len=59000", "resources.gpu_type=l4",
                                                "architecture.max_position_embeddings=131072"])
    with pytest.raises(PreflightFailed, match=r"raise vllm.gpu_memory_utilization to 0\.9[6-8]"):
        check_sizing(spec)


@pytest.mark.parametrize(("flag", "named"), [
    (["--max-num-seqs", "abc"], "--max-num-seqs 'abc': not a whole number above 0"),
    (["--kv-cache-dtype", "fp16"], "--kv-cache-dtype 'fp16': not one the sizing knows"),
])
def test_bad_kv_cache_flags_are_a_spec_error_naming_them(flag, named):
    extra = "vllm.extra_args=[" + ", ".join(repr(f) for f in flag) + "]"
    with pytest.raises(SpecError, match=re.escape(named)):
        check_sizing(load_spec("llama3", MODELS_DIR, [extra]))


def test_a_tensor_parallel_size_vllm_refuses_is_a_spec_error():
    with pytest.raises(SpecError, match="tensor_parallel_size 3 neither divides nor is a multiple of the model's 8"):
        check_sizing(load_spec("llama3", MODELS_DIR, ["vllm.tensor_parallel_size=3", "resources.gpus=3"]))


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
