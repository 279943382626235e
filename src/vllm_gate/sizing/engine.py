"""The engine as deployed: the CPU build's KV cache, and a prediction compared with ``vllm:cache_config_info``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from vllm_gate.sizing.gpus import GIB
from vllm_gate.sizing.model import BLOCK_SIZE, Estimate, bytes_per_token
from vllm_gate.spec import Architecture

# vLLM's CPU platform sets block_size 128 where none is given (vllm/platforms/cpu.py; the local cluster's engine
# reported block_size 128 with user_specified_block_size False).
CPU_BLOCK_SIZE = 128


def cpu_kv_cache_tokens(arch: Architecture, kvcache_space_gib: float, block_size: int = BLOCK_SIZE,
                        tensor_parallel_size: int = 1) -> int:
    """Tokens vLLM's CPU build holds: VLLM_CPU_KVCACHE_SPACE GiB in whole blocks (no profiling run on CPU)."""
    per_block = block_size * bytes_per_token(arch, tensor_parallel_size)
    return int(kvcache_space_gib * GIB) // per_block * block_size


@dataclass(frozen=True)
class CachePrediction:
    """What the engine should report in ``vllm:cache_config_info``, and what the prediction is of."""

    basis: str
    num_gpu_blocks: int
    block_size: int
    gpu_memory_utilization: float
    kv_cache_memory_bytes: int | None = None  # where the prediction knows it exactly (the CPU build)

    @property
    def kv_cache_size_tokens(self) -> int:
        return self.num_gpu_blocks * self.block_size

    @classmethod
    def of_estimate(cls, estimate: Estimate, gpu_memory_utilization: float, basis: str) -> CachePrediction:
        return cls(basis, estimate.num_gpu_blocks, estimate.block_size, gpu_memory_utilization)

    def summary(self) -> dict[str, object]:
        return {"basis": self.basis, "num_gpu_blocks": self.num_gpu_blocks, "block_size": self.block_size,
                "kv_cache_size_tokens": self.kv_cache_size_tokens,
                "gpu_memory_utilization": self.gpu_memory_utilization,
                "kv_cache_memory_bytes": self.kv_cache_memory_bytes}


def cpu_prediction(kv_bytes_per_token: int, kvcache_space_bytes: int, gpu_memory_utilization: float,
                   basis: str, block_size: int = CPU_BLOCK_SIZE) -> CachePrediction:
    """vLLM's CPU build: the KV cache is VLLM_CPU_KVCACHE_SPACE exactly, cut into whole blocks."""
    return CachePrediction(basis, kvcache_space_bytes // (block_size * kv_bytes_per_token), block_size,
                           gpu_memory_utilization, kvcache_space_bytes)


@dataclass(frozen=True)
class CacheDifference:
    """Predicted against reported, per label: (predicted, reported) where both are known."""

    values: Mapping[str, tuple[float, float]]

    def share(self, label: str) -> float | None:
        """(reported - predicted) / predicted for ``label``; None where nothing was predicted (0)."""
        predicted, reported = self.values[label]
        return (reported - predicted) / predicted if predicted else None

    def lines(self) -> list[str]:
        def apart(label: str) -> str:
            share = self.share(label)
            return "predicted 0" if share is None else f"{share:+.1%}"
        return [f"{label}: predicted {p:,.10g}, reported {r:,.10g} ({apart(label)})"
                for label, (p, r) in self.values.items()]


def compare_cache_config(predicted: CachePrediction, labels: Mapping[str, str]) -> CacheDifference:
    """Compare a prediction with the labels of the engine's ``vllm:cache_config_info`` gauge.

    Labels the engine does not report are left out; a label that is not a number is an error (ValueError).
    """
    expected: dict[str, float | None] = {
        "num_gpu_blocks": predicted.num_gpu_blocks,
        "kv_cache_size_tokens": predicted.kv_cache_size_tokens,
        "block_size": predicted.block_size,
        "gpu_memory_utilization": predicted.gpu_memory_utilization,
        "kv_cache_memory_bytes": predicted.kv_cache_memory_bytes,
    }
    values: dict[str, tuple[float, float]] = {}
    for label, want in expected.items():
        raw = labels.get(label)
        if want is None or raw is None or raw in ("", "None"):
            continue
        try:
            values[label] = (float(want), float(raw))
        except ValueError:
            raise ValueError(f"cache_config_info label {label}={raw!r} is not a number") from None
    return CacheDifference(values)
