"""Published vLLM start-up logs the sizing model is held to: each point, what vLLM reported, and the model's error."""

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


@dataclass(frozen=True)
class CalibrationPoint:
    """One vLLM start-up as its log reported it."""

    model: str
    gpu: str
    vllm_version: str
    arch: Architecture
    total_gib: float  # the log's total_gpu_memory (CUDA's total, 2 decimals)
    engine: EngineSettings
    reported_blocks: int  # the log's "# GPU blocks"
    source: str
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

# V0 engine without chunked prefill: its profiling run is max_model_len tokens long (max_num_batched_tokens =
# max_model_len), with 256 dummy sequences for the sampler.
CALIBRATION: tuple[CalibrationPoint, ...] = (
    CalibrationPoint("Llama-3.1-8B-Instruct", "rtx-3090", "0.6.x (V0)", LLAMA_31_8B, 23.58,
                     EngineSettings(0.90, 20000, max_num_batched_tokens=20000), 1952,
                     _ISSUE_10517.format(blocks=1952), 0.02),
    CalibrationPoint("Llama-3.1-8B-Instruct", "rtx-3090", "0.6.x (V0)", LLAMA_31_8B, 23.58,
                     EngineSettings(0.90, 29000, max_num_batched_tokens=29000), 1478,
                     _ISSUE_10517.format(blocks=1478) + "; max seq len 29000 failed: \"maximum number of tokens that "
                     "can be stored in KV cache (23648)\"", 0.02),
)
