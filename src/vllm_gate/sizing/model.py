"""The KV cache vLLM will have: total memory x utilization, less weights, activation peak and runtime overhead.

vLLM (V1 engine, vllm/v1/worker/gpu_worker.py ``determine_available_memory``) profiles one forward pass of
``max_num_batched_tokens`` dummy tokens plus the sampler on ``max_num_seqs`` dummy requests, then gives the KV cache
``total_gpu_memory * gpu_memory_utilization`` less the weights, that run's torch peak and the memory outside torch
(CUDA context, cuBLAS workspace, NCCL). vllm/v1/core/kv_cache_utils.py then cuts it into blocks:
``num_gpu_blocks = available // (block_size * bytes_per_token)``; one request of ``max_model_len`` tokens needs
``cdiv(max_model_len, block_size)`` blocks, else start-up fails ("To serve at least one request with the model's max
seq len ... the estimated maximum model length is ...").
"""

from __future__ import annotations

from dataclasses import dataclass

from vllm_gate.sizing.gpus import GIB
from vllm_gate.spec import DTYPE_BYTES, Architecture

BLOCK_SIZE = 16  # vLLM's default --block-size on CUDA
# vLLM's defaults for the OpenAI server (vllm/engine/arg_utils.py): the profiling run's token count and the
# sampler's dummy requests.
MAX_NUM_BATCHED_TOKENS = 8192
MAX_NUM_SEQS = 256
# Calibrated (sizing/calibration.py): the profiling run's torch peak above the weights and the sampler's logits, per
# profiled token, is 3.7 x intermediate_size x the dtype's bytes (3.65 and 3.70 measured on Llama-3.1-8B at 20,000
# and 29,000 profiled tokens: the MLP's gate/up projection and its activated output dominate it).
ACTIVATION_FACTOR = 3.7
# Memory outside torch that vLLM counts (CUDA context, cuBLAS, NCCL): 0.35 GiB measured on an RTX 3090
# (vllm-project/vllm#10517). An estimate for other cards and versions.
NON_TORCH_BYTES = int(0.35 * GIB)
# The V1 sampler's dummy run holds fp32 logits for max_num_seqs requests: an estimate, not calibrated.
LOGITS_BYTES = 4


@dataclass(frozen=True)
class EngineSettings:
    """What vLLM is asked for that changes the KV cache (its own defaults where the spec does not say)."""

    gpu_memory_utilization: float
    max_model_len: int
    tensor_parallel_size: int = 1
    block_size: int = BLOCK_SIZE
    max_num_batched_tokens: int = MAX_NUM_BATCHED_TOKENS
    max_num_seqs: int = MAX_NUM_SEQS


@dataclass(frozen=True)
class Estimate:
    """One GPU's memory as vLLM will split it, per GPU (tensor parallel shards the weights and the KV heads)."""

    total_bytes: int
    requested_bytes: int  # total x gpu_memory_utilization
    weights_bytes: int
    activation_bytes: int
    non_torch_bytes: int
    sampler_bytes: int
    kv_cache_bytes: int  # may be negative: nothing left for the KV cache
    bytes_per_token: int
    block_size: int
    num_gpu_blocks: int
    max_model_len: int
    max_num_seqs: int

    @property
    def overhead_bytes(self) -> int:
        """Everything but the weights and the KV cache."""
        return self.activation_bytes + self.non_torch_bytes + self.sampler_bytes

    @property
    def kv_cache_tokens(self) -> int:
        """vLLM's "GPU KV cache size: N tokens"."""
        return self.num_gpu_blocks * self.block_size

    @property
    def largest_max_model_len(self) -> int:
        """The longest max_model_len one request fits: vLLM's "estimated maximum model length"."""
        return self.kv_cache_tokens

    @property
    def fits_one_request(self) -> bool:
        return self.num_gpu_blocks >= blocks_for(self.max_model_len, self.block_size)

    def concurrency(self, tokens_per_request: int) -> int:
        """Requests of ``tokens_per_request`` tokens (prompt + output) whose blocks the KV cache holds at once."""
        return self.num_gpu_blocks // blocks_for(tokens_per_request, self.block_size)

    def utilization_to_fit(self, max_model_len: int) -> float:
        """The gpu_memory_utilization at which one request of ``max_model_len`` tokens fits (may exceed 1)."""
        needed = blocks_for(max_model_len, self.block_size) * self.block_size * self.bytes_per_token
        return (self.weights_bytes + self.overhead_bytes + needed) / self.total_bytes


def blocks_for(tokens: int, block_size: int) -> int:
    return -(-tokens // block_size)


def bytes_per_token(arch: Architecture, tensor_parallel_size: int = 1) -> int:
    """KV cache bytes one token needs on one GPU: 2 (K and V) x layers x KV heads x head dim x element bytes / TP."""
    kv_heads = max(arch.num_key_value_heads // tensor_parallel_size, 1)  # vLLM replicates heads when TP > heads
    return 2 * arch.num_hidden_layers * kv_heads * arch.head_dim * arch.kv_element_bytes


def estimate(arch: Architecture, total_bytes: int, engine: EngineSettings) -> Estimate:
    """Split one GPU of ``total_bytes`` (as CUDA reports it) the way vLLM will for ``arch`` under ``engine``."""
    tp = engine.tensor_parallel_size
    requested = int(total_bytes * engine.gpu_memory_utilization)
    weights = arch.weights // tp
    activation = int(ACTIVATION_FACTOR * arch.intermediate_size * DTYPE_BYTES[arch.dtype]
                     * engine.max_num_batched_tokens / tp)
    sampler = engine.max_num_seqs * arch.vocab_size * LOGITS_BYTES
    kv = requested - weights - activation - NON_TORCH_BYTES - sampler
    per_token = bytes_per_token(arch, tp)
    blocks = max(kv, 0) // (engine.block_size * per_token)
    return Estimate(total_bytes, requested, weights, activation, NON_TORCH_BYTES, sampler, kv, per_token,
                    engine.block_size, blocks, engine.max_model_len, engine.max_num_seqs)
