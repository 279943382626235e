"""A spec on its GPU type: the engine settings it asks for, the estimate, and whether its length and load fit."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from vllm_gate.base.errors import SpecError
from vllm_gate.sizing.calibration import WORST_OVERESTIMATE
from vllm_gate.sizing.gpus import GIB, GPU_TYPES, GpuType
from vllm_gate.sizing.model import (
    BLOCK_SIZE,
    LARGE_CARD_BYTES,
    LARGE_CARD_DEFAULTS,
    SMALL_CARD_DEFAULTS,
    EngineSettings,
    Estimate,
    blocks_for,
    estimate,
)
from vllm_gate.spec import KV_CACHE_DTYPES, Architecture, Load, ModelSpec

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


def _ints(spec: ModelSpec) -> dict[str, int]:
    """The KV-cache flags of the spec's extra_args, as whole numbers above 0; SpecError naming one that is not."""
    flags = _flag_values(spec.vllm.extra_args)
    ints = {}
    for flag, field in _INT_FLAGS.items():
        if flag in flags:
            value = flags[flag]
            if not value.isdigit() or int(value) == 0:
                raise SpecError(f"{spec.name}: vllm.extra_args {flag} {value!r}: not a whole number above 0")
            ints[field] = int(value)
    return ints


def engine_settings(spec: ModelSpec, gpu: GpuType | None = None) -> EngineSettings:
    """What the spec asks vLLM for on ``gpu``, with vLLM's defaults where it says nothing."""
    ints = _ints(spec)
    default_tokens, default_seqs = server_defaults(gpu)
    return EngineSettings(gpu_memory_utilization=spec.vllm.gpu_memory_utilization,
                          max_model_len=spec.vllm.max_model_len,
                          tensor_parallel_size=spec.vllm.tensor_parallel_size,
                          block_size=ints.get("block_size", BLOCK_SIZE),
                          max_num_batched_tokens=ints.get("max_num_batched_tokens", default_tokens),
                          max_num_seqs=ints.get("max_num_seqs", default_seqs))


def architecture(spec: ModelSpec) -> Architecture | None:
    """The spec's architecture, with a --kv-cache-dtype in extra_args applied (validated: SpecError naming it)."""
    arch = spec.architecture
    kv_dtype = _flag_values(spec.vllm.extra_args).get("--kv-cache-dtype")
    if arch is not None and kv_dtype is not None:
        try:
            arch = Architecture.model_validate({**arch.model_dump(), "kv_cache_dtype": kv_dtype})
        except ValidationError:
            raise SpecError(f"{spec.name}: vllm.extra_args --kv-cache-dtype {kv_dtype!r}: not one the sizing knows "
                            f"({', '.join(KV_CACHE_DTYPES)})") from None
    tp = spec.vllm.tensor_parallel_size
    if arch is not None and arch.num_key_value_heads % tp and tp % arch.num_key_value_heads:
        # vLLM splits the KV heads over the GPUs, or replicates them when there are fewer heads than GPUs.
        raise SpecError(f"{spec.name}: vllm.tensor_parallel_size {tp} neither divides nor is a multiple of the "
                        f"model's {arch.num_key_value_heads} KV heads: vLLM refuses it")
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
    """The spec's model on one ``gpu`` (SpecError: the spec has no architecture, or bad KV-cache flags)."""
    arch = arch or architecture(spec)
    if arch is None:
        raise SpecError(f"{spec.name}: no architecture section to size it from")
    return Fit(gpu, estimate(arch, gpu.runtime_bytes, engine_settings(spec, gpu)), arch.max_position_embeddings,
               spec.load.prompt_tokens + spec.load.output_tokens, load_concurrency(spec.load))


def gib(value: int) -> str:
    return f"{value / GIB:.1f} GiB"


def breakdown(est: Estimate) -> str:
    """How the KV cache's bytes come about, in one phrase."""
    util = est.requested_bytes / est.total_bytes
    return (f"{gib(est.total_bytes)} x {util:.2f} = {gib(est.requested_bytes)}, less weights {gib(est.weights_bytes)} "
            f"and overhead {gib(est.overhead_bytes)}")


def safe_tokens(est: Estimate) -> int:
    """The KV cache's tokens less the model's worst held-out overestimate, in whole blocks: what to promise."""
    return int(est.num_gpu_blocks * (1 - WORST_OVERESTIMATE)) * est.block_size


def length_problem(spec: ModelSpec, result: Fit) -> str | None:
    """Why vLLM will refuse the spec's max_model_len on its GPU type (above the model's max_position_embeddings, or
    more than the KV cache holds for one request), and what to change; None when it starts."""
    est = result.estimate
    settings = engine_settings(spec, result.gpu)
    length = settings.max_model_len
    longest = result.max_position_embeddings
    if length > longest:
        return (f"preflight: vllm.max_model_len {length} is above the model's max_position_embeddings {longest} "
                f"(architecture): vLLM refuses it at start-up (unless VLLM_ALLOW_LONG_MAX_MODEL_LEN is set, which "
                f"risks wrong answers); set vllm.max_model_len to at most {min(longest, safe_tokens(est))}")
    if result.fits:
        return None
    need = blocks_for(length, est.block_size) * est.block_size * est.bytes_per_token
    kv = f"{gib(max(est.kv_cache_bytes, 0))} = {est.kv_cache_tokens:,} tokens" if est.kv_cache_bytes > 0 else \
        "nothing (the weights and overhead take it all)"
    changes = []
    largest = min(safe_tokens(est), longest)
    if largest >= spec.load.prompt_tokens + spec.load.output_tokens:
        changes.append(f"set vllm.max_model_len to at most {largest}")
    util = est.utilization_to_fit(length, margin=WORST_OVERESTIMATE)
    if util <= MAX_SUGGESTED_UTILIZATION:
        changes.append(f"raise vllm.gpu_memory_utilization to {_ceil2(util):.2f}")
    others = [f.gpu.name for f in (fit(spec, g, architecture(spec)) for g in GPU_TYPES)
              if f.gpu.name != result.gpu.name and safe_tokens(f.estimate) >= length]
    if others:
        changes.append(f"use a GPU type where it fits ({', '.join(others)})")
    elif not changes:
        changes.append("shard it over more GPUs (resources.gpus and vllm.tensor_parallel_size)")
    return (f"preflight: vllm.max_model_len {length} does not fit one request on {result.gpu.name}: the KV cache "
            f"gets {kv} ({breakdown(est)}), one request of {length:,} tokens needs {gib(need)}; "
            + ", or ".join(changes) + f" (an estimate, suggestions less its worst held-out error "
            f"{WORST_OVERESTIMATE:.1%}: vllm-gate size {spec.name})")


def within_error(result: Fit) -> bool:
    """It fits by the estimate, but not once the model's worst held-out overestimate is taken off."""
    return result.fits and safe_tokens(result.estimate) < result.estimate.max_model_len


def _ceil2(value: float) -> float:
    return -(-round(value * 1000) // 10) / 100
