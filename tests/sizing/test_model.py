"""The sizing model: vLLM's KV cache formula on known numbers, its calibration points, the CPU build, and a
prediction compared with vllm:cache_config_info."""

from __future__ import annotations

import pytest

from vllm_gate.base.tools import MODELS_DIR
from vllm_gate.sizing.calibration import CALIBRATION, LLAMA_31_8B
from vllm_gate.sizing.engine import CachePrediction, compare_cache_config, cpu_kv_cache_tokens, cpu_prediction
from vllm_gate.sizing.fit import engine_settings, fit, load_concurrency, server_defaults
from vllm_gate.sizing.gpus import GIB, GPU_TYPES, UnknownGpuType, gpu_type
from vllm_gate.sizing.model import EngineSettings, bytes_per_token, estimate
from vllm_gate.spec import Architecture, load_spec

LLAMA3 = load_spec("llama3", MODELS_DIR)
# The local cluster's tiny model (docs: notes/real-vllm-cpu.md): 2 layers, 2 KV heads, head_dim 32, bf16.
TINY = Architecture(num_hidden_layers=2, num_key_value_heads=2, head_dim=32, intermediate_size=128, vocab_size=128256,
                    max_position_embeddings=8192, num_parameters=16_500_000, dtype="bfloat16",
                    source="https://example.invalid/tiny (src/vllm_gate/cluster/dataplane/tiny_model_build.py)")


def test_bytes_per_token_is_two_x_layers_x_kv_heads_x_head_dim_x_element_bytes():
    assert bytes_per_token(LLAMA3.architecture) == 2 * 32 * 8 * 128 * 2 == 131072
    assert bytes_per_token(LLAMA3.architecture, tensor_parallel_size=2) == 65536
    fp8 = LLAMA3.architecture.model_copy(update={"kv_cache_dtype": "fp8"})
    assert bytes_per_token(fp8) == 65536


def test_blocks_are_whole_and_tokens_are_blocks_times_block_size():
    est = estimate(LLAMA3.architecture, 48 * GIB, EngineSettings(0.9, 8192))
    assert est.num_gpu_blocks == est.kv_cache_bytes // (16 * 131072)
    assert est.kv_cache_tokens == est.num_gpu_blocks * 16 == est.largest_max_model_len
    assert est.weights_bytes == 8030261248 * 2
    assert est.requested_bytes == int(48 * GIB * 0.9)
    assert est.kv_cache_bytes == est.requested_bytes - est.weights_bytes - est.overhead_bytes
    # One request of exactly the KV tokens fits; one token more needs a block the cache does not have.
    assert estimate(LLAMA3.architecture, 48 * GIB, EngineSettings(0.9, est.kv_cache_tokens)).fits_one_request
    assert not estimate(LLAMA3.architecture, 48 * GIB, EngineSettings(0.9, est.kv_cache_tokens + 1)).fits_one_request


def test_concurrency_counts_whole_blocks_per_request():
    est = estimate(LLAMA3.architecture, 48 * GIB, EngineSettings(0.9, 8192))
    assert est.concurrency(384) == est.num_gpu_blocks // 24
    assert est.concurrency(385) == est.num_gpu_blocks // 25


def test_nothing_left_for_the_kv_cache_is_zero_blocks():
    est = estimate(LLAMA3.architecture, 16 * GIB, EngineSettings(0.9, 8192))
    assert est.kv_cache_bytes < 0
    assert (est.num_gpu_blocks, est.kv_cache_tokens, est.fits_one_request) == (0, 0, False)


def test_utilization_to_fit_is_where_the_request_just_fits():
    gpu = gpu_type("l4")
    est = estimate(LLAMA3.architecture, gpu.runtime_bytes, EngineSettings(0.95, 131072))
    util = est.utilization_to_fit(65536)
    assert util > 0.95
    assert estimate(LLAMA3.architecture, gpu.runtime_bytes, EngineSettings(util + 1e-6, 65536)).fits_one_request
    assert not estimate(LLAMA3.architecture, gpu.runtime_bytes, EngineSettings(util - 0.001, 65536)).fits_one_request


@pytest.mark.parametrize("point", CALIBRATION, ids=lambda p: f"{p.model}-{p.gpu}-{p.engine.max_model_len}")
def test_each_calibration_point_lands_within_its_stated_error(point):
    assert abs(point.error) <= point.max_error, (
        f"{point.model} on {point.gpu}: predicted {point.predicted().num_gpu_blocks} blocks, vLLM reported "
        f"{point.reported_blocks} ({point.error:+.2%}, allowed {point.max_error:.0%}); source {point.source}")
    assert point.source.startswith("https://")


def test_the_model_is_held_to_points_it_was_not_fitted_on():
    held_out = [p for p in CALIBRATION if not p.in_sample]
    assert len(held_out) >= 3
    # Among them the V1 engine the gate deploys, and an 80 GB card.
    assert any(p.engine.engine == "v1" for p in held_out)
    assert any(p.total_gib > 70 for p in held_out)
    # A tolerance is the error seen, rounded up to the next whole percent: no wider than needed.
    for point in CALIBRATION:
        assert point.max_error - abs(point.error) < 0.01, point


def test_v1_torch_peak_is_the_larger_of_forward_pass_and_sampler():
    v1 = estimate(LLAMA_31_8B, 80 * GIB, EngineSettings(0.9, 8192, max_num_batched_tokens=8192, max_num_seqs=1024))
    assert v1.torch_peak_bytes == max(v1.activation_bytes, v1.sampler_bytes) == v1.sampler_bytes
    few = estimate(LLAMA_31_8B, 80 * GIB, EngineSettings(0.9, 8192, max_num_batched_tokens=8192, max_num_seqs=8))
    assert few.torch_peak_bytes == few.activation_bytes
    v0 = estimate(LLAMA_31_8B, 80 * GIB, EngineSettings(0.9, 8192, max_num_batched_tokens=8192, engine="v0"))
    assert v0.torch_peak_bytes == v0.activation_bytes + v0.sampler_bytes
    # Tensor parallelism shards the forward pass, not the gathered logits, and adds NCCL buffers outside torch.
    tp2 = estimate(LLAMA_31_8B, 80 * GIB, EngineSettings(0.9, 8192, tensor_parallel_size=2,
                                                        max_num_batched_tokens=8192, max_num_seqs=1024))
    assert tp2.sampler_bytes == v1.sampler_bytes
    assert tp2.non_torch_bytes > v1.non_torch_bytes


def test_server_defaults_follow_vllm_by_card():
    assert server_defaults(gpu_type("h100-sxm")) == server_defaults(gpu_type("h200")) == (8192, 1024)
    assert server_defaults(gpu_type("a100-80gb")) == (2048, 256)  # vLLM leaves A100s on the small defaults
    assert server_defaults(gpu_type("l4")) == server_defaults(None) == (2048, 256)
    assert fit(LLAMA3, gpu_type("h100-sxm")).estimate.max_num_seqs == 1024


def test_the_failed_calibration_point_is_predicted_to_fail_too():
    # vLLM refused max seq len 29000 there: 1478 blocks x 16 = 23,648 tokens.
    failed = next(p for p in CALIBRATION if p.engine.max_model_len == 29000)
    assert not failed.predicted().fits_one_request
    assert failed.reported_blocks * 16 == 23648


def test_the_calibration_architecture_matches_llama3s_kv_shape():
    assert bytes_per_token(LLAMA_31_8B) == bytes_per_token(LLAMA3.architecture)


def test_gpu_table_names_are_unique_and_totals_below_nvidia_smi():
    assert len({g.name for g in GPU_TYPES}) == len(GPU_TYPES)
    for gpu in GPU_TYPES:
        assert gpu.runtime_total_mib < gpu.smi_total_mib, gpu.name
        assert gpu.source
    # The captures in the repository's test data: H200 torch total 143,156 MiB.
    assert gpu_type("h200").runtime_total_mib == 143156
    assert gpu_type("h100-sxm").runtime_total_mib == 81559 - 480


def test_unknown_gpu_type_names_the_known_ones():
    with pytest.raises(UnknownGpuType, match="known: h200, "):
        gpu_type("t4")


def test_cpu_kv_cache_is_the_kvcache_space_in_whole_blocks():
    # vLLM 0.32.0's CPU build reported 2,097,152 tokens for the tiny model with VLLM_CPU_KVCACHE_SPACE=1.
    assert cpu_kv_cache_tokens(TINY, 1) == 2_097_152
    assert cpu_kv_cache_tokens(TINY, 0.5) == 1_048_576
    assert cpu_kv_cache_tokens(TINY, 1, block_size=128) == 2_097_152
    # A space that is not whole blocks rounds down to them.
    # 512 bytes a token, 8,192 a block: one byte short of three blocks is two.
    assert cpu_kv_cache_tokens(TINY, (3 * 8192 - 1) / GIB) == 2 * 16


def test_cache_config_comparison_reports_each_label_difference():
    est = estimate(LLAMA3.architecture, gpu_type("h100-sxm").runtime_bytes, EngineSettings(0.9, 8192))
    labels = {"num_gpu_blocks": str(est.num_gpu_blocks - est.num_gpu_blocks // 10),
              "kv_cache_size_tokens": str(est.kv_cache_tokens), "block_size": "16",
              "gpu_memory_utilization": "0.9", "engine": "0"}
    diff = compare_cache_config(CachePrediction.of_estimate(est, 0.9, "h100"), labels)
    assert set(diff.values) == {"num_gpu_blocks", "kv_cache_size_tokens", "block_size", "gpu_memory_utilization"}
    assert diff.share("num_gpu_blocks") == pytest.approx(-0.1, abs=0.001)
    assert diff.share("kv_cache_size_tokens") == 0
    assert any(line.startswith("num_gpu_blocks: predicted") and "-10.0%" in line for line in diff.lines())


def test_cache_config_comparison_skips_missing_labels_and_refuses_non_numbers():
    est = estimate(LLAMA3.architecture, 48 * GIB, EngineSettings(0.9, 8192))
    predicted = CachePrediction.of_estimate(est, 0.9, "48 GiB")
    assert set(compare_cache_config(predicted, {"block_size": "16", "num_gpu_blocks": "None"}).values) == {"block_size"}
    with pytest.raises(ValueError, match="block_size='sixteen'"):
        compare_cache_config(predicted, {"block_size": "sixteen"})


def test_the_cpu_builds_prediction_is_what_vllm_0_32_reported_for_the_tiny_model():
    # The labels vLLM 0.32.0's CPU build served for the local cluster's tiny model (VLLM_CPU_KVCACHE_SPACE=1).
    reported = {"block_size": "128", "num_gpu_blocks": "16384", "kv_cache_size_tokens": "2097152",
                "kv_cache_memory_bytes": "1073741824", "gpu_memory_utilization": "0.95", "cache_dtype": "auto"}
    predicted = cpu_prediction(bytes_per_token(TINY), GIB, 0.95, "tiny model")
    diff = compare_cache_config(predicted, reported)
    assert set(diff.values) == {"num_gpu_blocks", "kv_cache_size_tokens", "block_size", "gpu_memory_utilization",
                                "kv_cache_memory_bytes"}
    assert all(p == r for p, r in diff.values.values()), diff.lines()
    # One block fewer reported is seen.
    off = compare_cache_config(predicted, {**reported, "num_gpu_blocks": "16383"})
    assert off.share("num_gpu_blocks") == pytest.approx(-1 / 16384)


def test_engine_settings_read_the_flags_that_change_the_kv_cache():
    spec = load_spec("llama3", MODELS_DIR, ["vllm.extra_args=[--max-num-seqs, '64', --block-size=32, "
                                            "--max_num_batched_tokens, '4096']"])
    settings = engine_settings(spec)
    assert (settings.max_num_seqs, settings.block_size, settings.max_num_batched_tokens) == (64, 32, 4096)
    fp8 = load_spec("llama3", MODELS_DIR, ["vllm.extra_args=[--kv-cache-dtype, fp8]"])
    assert fit(fp8, gpu_type("l4")).estimate.bytes_per_token == 65536


@pytest.mark.parametrize(("profile", "expected"), [
    ("{kind: users, users: 12, duration_s: 60}", 12),
    ("{kind: ramp, start_users: 2, end_users: 40, duration_s: 60}", 40),
    ("{kind: rate, requests_per_s: 2, duration_s: 60, max_users: 32}", 32),
])
def test_load_concurrency_is_the_profiles_peak_in_flight(profile, expected):
    assert load_concurrency(load_spec("llama3", MODELS_DIR, [f"load.profile={profile}"]).load) == expected
