"""The engine's vllm:cache_config_info held against the gate's prediction: compared only where both say a size."""

from __future__ import annotations

from vllm_gate.base.tools import MODELS_DIR
from vllm_gate.gate import kv_cache
from vllm_gate.sizing.fit import fit
from vllm_gate.sizing.gpus import gpu_type
from vllm_gate.spec import load_spec

SPEC = load_spec("llama3", MODELS_DIR)


def _reported(blocks: int) -> dict[str, str]:
    return {"num_gpu_blocks": str(blocks), "kv_cache_size_tokens": str(blocks * 16), "block_size": "16",
            "gpu_memory_utilization": "0.95", "engine": "0", "cache_dtype": "auto"}


def test_a_gpu_engine_is_held_to_the_estimate_for_the_specs_gpu_type():
    blocks = fit(SPEC, gpu_type("rtx-6000-ada")).estimate.num_gpu_blocks
    same = kv_cache.compare(SPEC, "", _reported(blocks))
    assert same.note == ""
    assert same.lines() == [f"KV cache: predicted {blocks:,} blocks x 16 = {blocks * 16:,} tokens (estimate for "
                            "llama3 on rtx-6000-ada, vllm-gate size)", "KV cache: reported the same "
                            "(vllm:cache_config_info)"]
    smaller = kv_cache.compare(SPEC, "", _reported(blocks // 2))
    assert smaller.difference is not None
    assert smaller.difference.share("num_gpu_blocks") == (blocks // 2 - blocks) / blocks
    assert smaller.lines()[1].startswith(f"KV cache: reported num_gpu_blocks: predicted {blocks:,}, reported "
                                         f"{blocks // 2:,} (-50.0%)")
    assert smaller.summary()["difference"]["block_size"] == 0.0


def test_the_simulator_is_not_compared_and_says_why():
    result = kv_cache.compare(SPEC, "sim", _reported(1024))
    assert result.prediction is None
    assert result.lines() == ["KV cache: not compared: the simulator reports its --kv-cache-size flag, not a KV "
                              "cache sized for the model on a GPU"]


def test_labels_that_only_echo_settings_are_no_comparison():
    # vLLM's V1 engine before it reported num_gpu_blocks (vllm#16560): "None", and no token count.
    echo = {"num_gpu_blocks": "None", "block_size": "16", "gpu_memory_utilization": "0.95"}
    result = kv_cache.compare(SPEC, "", echo)
    assert result.difference is None
    assert result.note.startswith("not compared: vllm:cache_config_info gives no size")


def test_a_server_without_the_family_or_a_spec_without_sizing_facts_is_not_compared():
    assert kv_cache.compare(SPEC, "", {}).note == "not compared: the server serves no vllm:cache_config_info"
    unknown = load_spec("llama3", MODELS_DIR, ["resources.gpu_type=mi300x"])
    assert kv_cache.compare(unknown, "", _reported(10)).note.startswith("not compared: gpu_type mi300x")
    bare = load_spec("llama3", MODELS_DIR, ["architecture=null"])
    assert kv_cache.compare(bare, "", _reported(10)).note == ("not compared: the spec has no architecture section "
                                                              "to size it from")
