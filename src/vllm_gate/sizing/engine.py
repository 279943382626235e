"""The engine as deployed: the CPU build's KV cache, and a prediction compared with ``vllm:cache_config_info``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from vllm_gate.sizing.gpus import GIB
from vllm_gate.sizing.model import BLOCK_SIZE, Estimate, bytes_per_token
from vllm_gate.spec import Architecture


def cpu_kv_cache_tokens(arch: Architecture, kvcache_space_gib: float, block_size: int = BLOCK_SIZE,
                        tensor_parallel_size: int = 1) -> int:
    """Tokens vLLM's CPU build holds: VLLM_CPU_KVCACHE_SPACE GiB in whole blocks (no profiling run on CPU)."""
    per_block = block_size * bytes_per_token(arch, tensor_parallel_size)
    return int(kvcache_space_gib * GIB) // per_block * block_size


@dataclass(frozen=True)
class CacheDifference:
    """Predicted against reported, per label: (predicted, reported) where both are known."""

    values: Mapping[str, tuple[float, float]]

    def share(self, label: str) -> float:
        """(reported - predicted) / predicted for ``label``."""
        predicted, reported = self.values[label]
        return (reported - predicted) / predicted if predicted else float("inf")

    def lines(self) -> list[str]:
        return [f"{label}: predicted {p:g}, reported {r:g} ({self.share(label):+.1%})"
                for label, (p, r) in self.values.items()]


def compare_cache_config(predicted: Estimate, gpu_memory_utilization: float,
                         labels: Mapping[str, str]) -> CacheDifference:
    """Compare a prediction with the labels of the engine's ``vllm:cache_config_info`` gauge.

    Labels the engine does not report are left out; a label that is not a number is an error (ValueError).
    """
    expected: dict[str, float] = {
        "num_gpu_blocks": predicted.num_gpu_blocks,
        "kv_cache_size_tokens": predicted.kv_cache_tokens,
        "block_size": predicted.block_size,
        "gpu_memory_utilization": gpu_memory_utilization,
    }
    values: dict[str, tuple[float, float]] = {}
    for label, want in expected.items():
        raw = labels.get(label)
        if raw is None or raw in ("", "None"):
            continue
        try:
            values[label] = (float(want), float(raw))
        except ValueError:
            raise ValueError(f"cache_config_info label {label}={raw!r} is not a number") from None
    return CacheDifference(values)
