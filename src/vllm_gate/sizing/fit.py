"""A spec on its GPU type: the engine settings it asks for, the estimate, and whether its length and load fit."""

from __future__ import annotations

from dataclasses import dataclass

from vllm_gate.sizing.gpus import GIB, GPU_TYPES, GpuType
from vllm_gate.sizing.model import (
    BLOCK_SIZE,
    LARGE_CARD_BYTES,
    LARGE_CARD_DEFAULTS,
    SMALL_CARD_DEFAULTS,
    EngineSettings,
    Estimate,
    estimate,
)
from vllm_gate.spec import Architecture, Load, ModelSpec

# The highest gpu_memory_utilization worth suggesting: above it CUDA graphs and fragmentation have no room.
MAX_SUGGESTED_UTILIZATION = 0.98
# extra_args flags that change the KV cache, and the EngineSettings field each sets.
_INT_FLAGS = {"--max-num-seqs": "max_num_seqs", "--max-num-batched-tokens": "max_num_batched_tokens",
              "--block-size": "block_size"}


def _flag_values(args: list[str]) -> dict[str, str]:
    """``--flag value`` and ``--flag=value`` pairs of vLLM CLI arguments (underscores read as dashes)."""
    found: dict[str, str] = {}
    for i, arg in enumerate(args):
        if not arg.startswith("--"):
            continue
        name, sep, value = arg.partition("=")
        name = name.replace("_", "-")
        if sep:
            found[name] = value
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            found[name] = args[i + 1]
    return found


def server_defaults(gpu: GpuType | None) -> tuple[int, int]:
    """vLLM's OpenAI-server (max_num_batched_tokens, max_num_seqs) on ``gpu`` (vllm/engine/arg_utils.py): the large
    ones for cards of 70 GiB or more that are not A100s, the small ones elsewhere and where the card is not known."""
    if gpu is not None and gpu.runtime_bytes >= LARGE_CARD_BYTES and "a100" not in gpu.product.lower():
        return LARGE_CARD_DEFAULTS
    return SMALL_CARD_DEFAULTS


def engine_settings(spec: ModelSpec, gpu: GpuType | None = None) -> EngineSettings:
    """What the spec asks vLLM for on ``gpu``, with vLLM's defaults where it says nothing."""
    flags = _flag_values(spec.vllm.extra_args)
    ints = {field: int(flags[flag]) for flag, field in _INT_FLAGS.items() if flag in flags}
    default_tokens, default_seqs = server_defaults(gpu)
    return EngineSettings(gpu_memory_utilization=spec.vllm.gpu_memory_utilization,
                          max_model_len=spec.vllm.max_model_len,
                          tensor_parallel_size=spec.vllm.tensor_parallel_size,
                          block_size=ints.get("block_size", BLOCK_SIZE),
                          max_num_batched_tokens=ints.get("max_num_batched_tokens", default_tokens),
                          max_num_seqs=ints.get("max_num_seqs", default_seqs))


def architecture(spec: ModelSpec) -> Architecture | None:
    """The spec's architecture, with a --kv-cache-dtype in extra_args applied."""
    arch = spec.architecture
    kv_dtype = _flag_values(spec.vllm.extra_args).get("--kv-cache-dtype")
    if arch is not None and kv_dtype is not None:
        arch = arch.model_copy(update={"kv_cache_dtype": kv_dtype})
    return arch


def load_concurrency(load: Load) -> int:
    """Requests the load profile keeps in flight at its peak."""
    profile = load.profile
    if profile.kind == "users":
        return profile.users
    if profile.kind == "ramp":
        return max(profile.start_users, profile.end_users)
    return profile.max_users  # rate: arrivals are capped at max_users in flight


@dataclass(frozen=True)
class Fit:
    """The spec's model on one GPU type."""

    gpu: GpuType
    estimate: Estimate
    max_position_embeddings: int
    tokens_per_request: int  # the load profile's prompt + output tokens
    load_concurrency: int

    @property
    def fits(self) -> bool:
        return self.estimate.fits_one_request

    @property
    def concurrency(self) -> int:
        """Load requests the KV cache holds at once (vLLM also runs at most max_num_seqs)."""
        return self.estimate.concurrency(self.tokens_per_request)

    @property
    def load_fits(self) -> bool:
        return self.concurrency >= self.load_concurrency


def fit(spec: ModelSpec, gpu: GpuType, arch: Architecture | None = None) -> Fit:
    arch = arch or architecture(spec)
    assert arch is not None, "fit() needs the spec's architecture"
    total_gpus_bytes = gpu.runtime_bytes
    return Fit(gpu, estimate(arch, total_gpus_bytes, engine_settings(spec, gpu)), arch.max_position_embeddings,
               spec.load.prompt_tokens + spec.load.output_tokens, load_concurrency(spec.load))


def gib(value: int) -> str:
    return f"{value / GIB:.1f} GiB"


def breakdown(est: Estimate) -> str:
    """How the KV cache's bytes come about, in one phrase."""
    util = est.requested_bytes / est.total_bytes
    return (f"{gib(est.total_bytes)} x {util:.2f} = {gib(est.requested_bytes)}, less weights {gib(est.weights_bytes)} "
            f"and overhead {gib(est.overhead_bytes)}")


def failure(spec: ModelSpec, result: Fit) -> str:
    """Why the spec's max_model_len does not fit one request on its GPU type, and what to change."""
    est = result.estimate
    settings = engine_settings(spec, result.gpu)
    need = -(-settings.max_model_len // est.block_size) * est.block_size * est.bytes_per_token
    kv = f"{gib(max(est.kv_cache_bytes, 0))} = {est.kv_cache_tokens:,} tokens" if est.kv_cache_bytes > 0 else \
        "nothing (the weights and overhead take it all)"
    changes = []
    # vLLM also refuses a length above the model's max_position_embeddings: never suggest one.
    largest = min(est.largest_max_model_len, result.max_position_embeddings)
    if largest >= spec.load.prompt_tokens + spec.load.output_tokens:
        changes.append(f"set vllm.max_model_len to at most {largest}")
    util = est.utilization_to_fit(settings.max_model_len)
    if util <= MAX_SUGGESTED_UTILIZATION:
        changes.append(f"raise vllm.gpu_memory_utilization to {_ceil2(util):.2f}")
    others = [f.gpu.name for f in (fit(spec, g, architecture(spec)) for g in GPU_TYPES)
              if f.fits and f.gpu.name != result.gpu.name]
    if others:
        changes.append(f"use a GPU type where it fits ({', '.join(others)})")
    elif not changes:
        changes.append("shard it over more GPUs (resources.gpus and vllm.tensor_parallel_size)")
    beyond = (f" (it is also above the model's max_position_embeddings {result.max_position_embeddings})"
              if settings.max_model_len > result.max_position_embeddings else "")
    return (f"preflight: vllm.max_model_len {settings.max_model_len} does not fit one request on "
            f"{result.gpu.name}{beyond}: the KV cache gets {kv} ({breakdown(est)}), one request of "
            f"{settings.max_model_len:,} tokens needs {gib(need)}; " + ", or ".join(changes)
            + " (estimate: vllm-gate size " + spec.name + ")")


def _ceil2(value: float) -> float:
    return -(-round(value * 1000) // 10) / 100
