"""Published vLLM start-up logs the sizing model is held to: each point, what vLLM reported, and the model's error.

A point is in sample when its numbers set one of the model's constants (sizing/model.py), held out when they did
not: only the held-out ones say how far the model can be trusted elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from vllm_gate.sizing.gpus import GIB
from vllm_gate.sizing.model import EngineSettings, Estimate, estimate
from vllm_gate.spec import Architecture

# Llama-3.1-8B(-Instruct): Llama-3-8B's layers, KV heads and parameters with a 131,072-token context.
LLAMA_31_8B = Architecture(
    num_hidden_layers=32, num_key_value_heads=8, head_dim=128, intermediate_size=14336, vocab_size=128256,
    max_position_embeddings=131072, num_parameters=8030261248, dtype="bfloat16",
    source="https://huggingface.co/meta-llama/Llama-3.1-8B-Instruct/blob/main/config.json")
# Meta-Llama-3-8B: the same shapes with an 8,192-token context (vLLM's default max_model_len for it).
LLAMA_3_8B = LLAMA_31_8B.model_copy(update={
    "max_position_embeddings": 8192,
    "source": "https://huggingface.co/meta-llama/Meta-Llama-3-8B/blob/main/config.json"})
# Qwen2.5-7B-Instruct: 28 layers, 4 KV heads of 128 (hidden 3,584 / 28 heads), untied embeddings.
QWEN25_7B = Architecture(
    num_hidden_layers=28, num_key_value_heads=4, head_dim=128, intermediate_size=18944, vocab_size=152064,
    max_position_embeddings=32768, num_parameters=7615616512, dtype="bfloat16",
    source="https://huggingface.co/Qwen/Qwen2.5-7B-Instruct/blob/main/config.json")


@dataclass(frozen=True)
class CalibrationPoint:
    """One vLLM start-up as its log reported it."""

    model: str
    gpu: str
    vllm_version: str
    arch: Architecture
    total_gib: float  # the log's total_gpu_memory (CUDA's total)
    engine: EngineSettings
    reported_blocks: int  # "# GPU blocks", or "GPU KV cache size" tokens / 16, or the KV GiB over the block bytes
    source: str
    in_sample: bool  # its numbers set one of the model's constants (else held out)
    max_error: float  # the share by which the model may miss reported_blocks here (the test holds it to this)

    def predicted(self) -> Estimate:
        return estimate(self.arch, int(self.total_gib * GIB), self.engine)

    @property
    def error(self) -> float:
        """Predicted blocks less reported, as a share of reported (positive: the model promises more)."""
        return (self.predicted().num_gpu_blocks - self.reported_blocks) / self.reported_blocks


_ISSUE_10517 = ("https://github.com/vllm-project/vllm/issues/10517 (comment by kaspersiminski, 2024-12-02: "
                "\"Memory profiling results: total_gpu_memory=23.58GiB ... gpu_memory_utilization=0.90\", "
                "\"# GPU blocks: {blocks}\", weights 14.9888 GB)")
# Pinned to the commits read: the repositories move their result files.
_LLMD = ("https://github.com/llm-d-incubation/llm-d-planner/blob/fbd68515a903397a1b785a2189dc7512b0d55680/accuracy/"
         "results/v0.19.0/accuracy_report.md")
_LLMD_LOG = ("https://github.com/llm-d-incubation/llm-d-planner/blob/d3121e059da88662db39a926a3ead964be97359b/accuracy/"
             "results/v0.19.0/logs/meta-llama-llama-3-1-8b--h100-80gb--tp1pp1dp1--16384.log")
_LLMSIM = "https://github.com/casys-kaist/LLMServingSim/blob/{commit}/bench/"
_V1_H100 = ("vLLM 0.19.0 OpenAI server on H100 80GB HBM3: total 79.19 GiB, utilization 0.95, its H100 defaults "
            "max_num_batched_tokens 8192 and max_num_seqs 1024 (the log: \"Defaulting max_num_batched_tokens to "
            "8192 ... max_num_seqs to 1024 for OPENAI_API_SERVER\")")

CALIBRATION: tuple[CalibrationPoint, ...] = (
    # V0 without chunked prefill: its profiling run is max_model_len tokens long (max_num_batched_tokens =
    # max_model_len), with 256 dummy sequences for the sampler. These two set V0_ACTIVATION_FACTOR and
    # NON_TORCH_BYTES.
    CalibrationPoint("Llama-3.1-8B-Instruct", "rtx-3090", "0.6.x (V0)", LLAMA_31_8B, 23.58,
                     EngineSettings(0.90, 20000, max_num_batched_tokens=20000, max_num_seqs=256, engine="v0"), 1952,
                     _ISSUE_10517.format(blocks=1952), True, 0.01),
    CalibrationPoint("Llama-3.1-8B-Instruct", "rtx-3090", "0.6.x (V0)", LLAMA_31_8B, 23.58,
                     EngineSettings(0.90, 29000, max_num_batched_tokens=29000, max_num_seqs=256, engine="v0"), 1478,
                     _ISSUE_10517.format(blocks=1478) + "; max seq len 29000 failed: \"maximum number of tokens that "
                     "can be stored in KV cache (23648)\"", True, 0.02),
    # A V0 development build (December 2024) with the default max_model_len 8192 and no chunked prefill, so 8,192
    # profiled tokens; it reported non_torch_memory 1.79 GiB, which the model's 0.35 does not foresee.
    CalibrationPoint("Meta-Llama-3-8B", "h100-sxm", "0.6.5.dev (V0)", LLAMA_3_8B, 79.22,
                     EngineSettings(0.90, 8192, max_num_batched_tokens=8192, max_num_seqs=256, engine="v0"),
                     int(53.29 * 1024 / 2),
                     "https://github.com/vllm-project/vllm/pull/10511 (comment by youkaichao, 2024-12-14: "
                     "\"vllm serve meta-llama/Meta-Llama-3-8B\", total_gpu_memory 79.22GiB, gpu_memory_utilization "
                     "0.90, model weights take 14.96GiB, non_torch_memory 1.79GiB, PyTorch activation peak memory "
                     "1.26GiB, available_kv_cache_memory 53.29GiB = 27,284 blocks of 2 MiB)", False, 0.04),
    # V1: this one sets V1_SAMPLER_BYTES (its torch peak, 1.89 GiB) and confirms the 0.25 GiB non-torch figure.
    CalibrationPoint("Llama-3.1-8B-Instruct", "h100-sxm", "0.19.0 (V1)", LLAMA_31_8B, 79.19,
                     EngineSettings(0.95, 16384, max_num_batched_tokens=8192, max_num_seqs=1024), 476016 // 16,
                     f"{_LLMD} and {_LLMD_LOG} ({_V1_H100}; \"torch peak memory increase: 1.89GiB; non-torch "
                     "forward increase memory: 0.25GiB; weights memory: 14.99GiB\", \"Available KV cache memory: "
                     "58.11 GiB\", \"GPU KV cache size: 476,016 tokens\")", True, 0.01),
    CalibrationPoint("Qwen2.5-7B-Instruct", "h100-sxm", "0.19.0 (V1)", QWEN25_7B, 79.19,
                     EngineSettings(0.95, 8192, max_num_batched_tokens=8192, max_num_seqs=1024), 1096000 // 16,
                     f"{_LLMD} (TP 1, max_model_len 8,192; {_V1_H100}; weights 14.25 GiB, activation 2.21 GiB, "
                     "non-torch 0.24 GiB, KV cache 58.53 GiB, 1,096,000 tokens)", False, 0.01),
    # The KV GiB is what the report's parts leave: 75.23 - 7.51 weights - 1.89 activation - 2.07 non-torch.
    CalibrationPoint("Llama-3.1-8B-Instruct", "h100-sxm", "0.19.0 (V1)", LLAMA_31_8B, 79.19,
                     EngineSettings(0.95, 8192, tensor_parallel_size=2, max_num_batched_tokens=8192,
                                    max_num_seqs=1024), int((75.23 - 7.51 - 1.89 - 2.07) * 1024),
                     f"{_LLMD} (TP 2, \"Sensitivity: Tensor Parallelism\": weights 7.51 GiB, activation 1.89 GiB, "
                     f"non-torch 2.07 GiB a GPU; {_V1_H100}; KV cache 63.76 GiB = 65,290 blocks of 1 MiB a GPU)",
                     False, 0.01),
    CalibrationPoint("Llama-3.1-8B", "rtx-4090", "0.19.0 (V1)", LLAMA_31_8B, 25250627584 / GIB,
                     EngineSettings(0.90, 32768, max_num_batched_tokens=2048, max_num_seqs=256), 2588,
                     _LLMSIM.format(commit="da26736bebe5e8b505f7aec809454c24c08260f7")
                     + "results/llama-3.1-8b-rtx4090/meta.json (vllm_version 0.19.0, device_total_memory_bytes "
                     "25,250,627,584, gpu_memory_utilization 0.9, max_num_batched_tokens 2048, max_num_seqs 256, "
                     "num_gpu_blocks 2588); discussed in https://github.com/casys-kaist/LLMServingSim/pull/59",
                     False, 0.07),
    # vLLM 0.28 on a Blackwell workstation card: newer releases also reserve the CUDA graphs' memory before the KV
    # cache, which the model (written for the gate's 0.11) does not count.
    CalibrationPoint("Llama-3.1-8B", "rtx-pro-6000-blackwell", "0.28.0 (V1)", LLAMA_31_8B, 101976440832 / GIB,
                     EngineSettings(0.92, 131072, max_num_batched_tokens=2048, max_num_seqs=128), 35913,
                     _LLMSIM.format(commit="0acc21b27fb2950bdfac90162e7bd3de43fe3dff")
                     + "examples/RTXPRO6000/Llama-3.1-8B/vllm/meta.json (vllm_version 0.28.0, "
                     "device_total_memory_bytes 101,976,440,832, gpu_memory_utilization 0.92, max_num_batched_tokens "
                     "2048, max_num_seqs 128, num_gpu_blocks 35913)", False, 0.03),
)


# The most the estimate promised beyond what vLLM gave, on the points held out from fitting it: suggestions (the
# largest max_model_len, the utilization to set) are taken that much lower, and a fit within it is only a warning.
WORST_OVERESTIMATE = max(0.0, *(point.error for point in CALIBRATION if not point.in_sample))
