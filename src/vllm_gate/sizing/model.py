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
from typing import Literal

from vllm_gate.spec import DTYPE_BYTES, Architecture

BLOCK_SIZE = 16  # vLLM's default --block-size on CUDA
GIB_BYTES = 2**30
# vLLM's OpenAI-server defaults (vllm/engine/arg_utils.py, V1): cards of 70 GiB and more that are not A100s profile
# 8,192 tokens and 1,024 dummy requests, the rest 2,048 and 256 ("NOTE(Kuntai): Setting large
# max_num_batched_tokens for A100 reduces throughput"). fit.server_defaults picks them by GPU type.
LARGE_CARD_BYTES = 70 * GIB_BYTES
LARGE_CARD_DEFAULTS = (8192, 1024)  # (max_num_batched_tokens, max_num_seqs)
SMALL_CARD_DEFAULTS = (2048, 256)
MAX_NUM_BATCHED_TOKENS, MAX_NUM_SEQS = SMALL_CARD_DEFAULTS
# V0 engine (0.6.x), calibrated in sample on vllm-project/vllm#10517 (sizing/calibration.py): the profiling run's
# torch peak above the weights is 3.7 x intermediate_size x the dtype's bytes per profiled token (3.65 and 3.70
# measured on Llama-3.1-8B at 20,000 and 29,000 tokens: the MLP's gate/up projection and its activated output) plus
# the sampler's fp32 logits for max_num_seqs requests.
V0_ACTIVATION_FACTOR = 3.7
V0_LOGITS_BYTES = 4
# V1 engine (0.8+, what the gate deploys): the forward pass (torch.compile'd) and the dummy sampler run are
# profiled one after the other, so the torch peak is the larger of the two, not their sum. Calibrated on vLLM
# 0.19.0's H100 logs (llm-d-planner accuracy report): the sampler run (fp32 logits, top-k/top-p sort values and
# int64 indices) takes 15.45 bytes per request x vocab entry (Llama-3.1-8B: 1.89 GiB at 1,024 requests x 128,256);
# the forward pass 4.58 x intermediate_size x dtype bytes per token (CodeLlama-7b, whose 32,016-entry vocabulary
# leaves the forward pass the larger: 0.77 GiB at 8,192 tokens x 11,008).
V1_SAMPLER_BYTES = 15.45
V1_ACTIVATION_FACTOR = 4.58
# Memory outside torch (CUDA context, cuBLAS workspace): 0.35 GiB on an RTX 3090 under V0 (vllm-project/vllm#10517),
# 0.25 GiB on an H100 under V1 0.19; the larger is kept. With tensor parallelism NCCL and custom all-reduce buffers
# add 1.88 GiB a GPU (H100, V1 0.19: 2.13 GiB at TP 4 less 0.25 at TP 1).
NON_TORCH_BYTES = int(0.35 * GIB_BYTES)
TP_NON_TORCH_BYTES = int(1.88 * GIB_BYTES)


@dataclass(frozen=True)
class EngineSettings:
    """What vLLM is asked for that changes the KV cache (its own defaults where the spec does not say)."""

    gpu_memory_utilization: float
    max_model_len: int
    tensor_parallel_size: int = 1
    block_size: int = BLOCK_SIZE
    max_num_batched_tokens: int = MAX_NUM_BATCHED_TOKENS
    max_num_seqs: int = MAX_NUM_SEQS
    engine: Literal["v0", "v1"] = "v1"  # how the profiling run is measured (see the constants above)


@dataclass(frozen=True)
class Estimate:
    """One GPU's memory as vLLM will split it, per GPU (tensor parallel shards the weights and the KV heads)."""

    total_bytes: int
    requested_bytes: int  # total x gpu_memory_utilization
    weights_bytes: int
    activation_bytes: int  # the profiled forward pass's torch peak above the weights
    sampler_bytes: int  # the dummy sampler run's
    torch_peak_bytes: int  # what vLLM subtracts for both: their sum under V0, the larger under V1
    non_torch_bytes: int
    kv_cache_bytes: int  # may be negative: nothing left for the KV cache
    bytes_per_token: int
    block_size: int
    num_gpu_blocks: int
    max_model_len: int
    max_num_seqs: int

    @property
    def overhead_bytes(self) -> int:
        """Everything but the weights and the KV cache."""
        return self.torch_peak_bytes + self.non_torch_bytes

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

    def utilization_to_fit(self, max_model_len: int, margin: float = 0.0) -> float:
        """The gpu_memory_utilization at which one request of ``max_model_len`` tokens fits (may exceed 1), with a
        KV cache ``margin`` larger than it needs (the estimate's error)."""
        needed = blocks_for(max_model_len, self.block_size) * self.block_size * self.bytes_per_token / (1 - margin)
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
    dtype_bytes = DTYPE_BYTES[arch.dtype]
    tokens = engine.max_num_batched_tokens
    if engine.engine == "v0":
        activation = int(V0_ACTIVATION_FACTOR * arch.intermediate_size * dtype_bytes * tokens / tp)
        sampler = engine.max_num_seqs * arch.vocab_size * V0_LOGITS_BYTES
        peak = activation + sampler
    else:
        activation = int(V1_ACTIVATION_FACTOR * arch.intermediate_size * dtype_bytes * tokens / tp)
        # The logits are gathered whole on every rank: the sampler's share does not shrink with TP.
        sampler = int(V1_SAMPLER_BYTES * engine.max_num_seqs * arch.vocab_size)
        peak = max(activation, sampler)
    non_torch = NON_TORCH_BYTES + (TP_NON_TORCH_BYTES if tp > 1 else 0)
    kv = requested - weights - peak - non_torch
    per_token = bytes_per_token(arch, tp)
    blocks = max(kv, 0) // (engine.block_size * per_token)
    return Estimate(total_bytes, requested, weights, activation, sampler, peak, non_torch, kv, per_token,
                    engine.block_size, blocks, engine.max_model_len, engine.max_num_seqs)
