"""GPU readings, whatever the source, and the gpu suite's judgments on them (identity, memory, load, XID)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from vllm_gate.base.errors import GateError

# Bands around gpu_memory_utilization, as fractions of capacity (used + free). Measured on a real H200
# (tests/data/gpu-h200): a torch process (not vLLM: no model can be downloaded there) holding 0.9 of what
# CUDA reports as total showed in nvidia-smi as 128265 MiB used of 143157 MiB = 0.896, so nvidia-smi's
# used / (used + free) is the fraction a process holds. How far vLLM itself lands from its fraction (the
# profiled activation peak it frees, CUDA graphs outside the budget) is not measured here: the margins are
# assumptions. Above, the band stops halfway to a full card, so even at 0.95 another process holding 2.5 %
# of the card is caught.
MEMORY_ABOVE_MARGIN = 0.05
MEMORY_BELOW_MARGIN = 0.10


class TelemetryError(GateError):
    """GPU telemetry could not be parsed, or its files do not describe the same GPU."""


@dataclass(frozen=True)
class GpuReading:
    """One GPU at one moment; memory in MiB as nvidia-smi and dcgm-exporter count it."""

    index: int
    uuid: str
    name: str
    util_pct: float
    mem_used_mib: float
    mem_free_mib: float
    mem_total_mib: float | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    xid: float | None = None
    mem_reserved_mib: float | None = None

    @property
    def capacity_mib(self) -> float:
        """What CUDA can allocate: nvidia-smi's total less the driver's reserved memory.

        torch.cuda.mem_get_info's total equals nvidia-smi's idle free (143156 MiB on the H200 capture),
        and vLLM's --gpu-memory-utilization is a fraction of that total.
        """
        return self.mem_used_mib + self.mem_free_mib

    def label(self) -> str:
        return f"GPU {self.index} {self.uuid} ({self.name})"


def _tokens(text: str) -> list[str]:
    return [t for t in re.split(r"[^a-z0-9]+", text.lower()) if t]


def gpu_type_matches(gpu_type: str, product: str) -> bool:
    """Every token of the spec's gpu_type (or a node label) is a token of the product name.

    ``rtx-6000-ada`` matches "NVIDIA RTX 6000 Ada Generation"; ``h100`` matches "NVIDIA H100 80GB HBM3"
    but not "NVIDIA H200", since tokens compare whole.
    """
    wanted = _tokens(gpu_type)
    have = set(_tokens(product))
    return bool(wanted) and all(t in have for t in wanted)


def _by_gpu(readings: Iterable[GpuReading]) -> dict[tuple[str, int], list[GpuReading]]:
    # uuid and index together: the recorded exporter serves one real card under several indices.
    groups: dict[tuple[str, int], list[GpuReading]] = {}
    for r in readings:
        groups.setdefault((r.uuid, r.index), []).append(r)
    return groups


def identity_problems(gpus: list[GpuReading], requested: int, gpu_type: str) -> list[str]:
    """The pod sees exactly ``requested`` distinct GPUs, each of the spec's ``gpu_type``."""
    groups = _by_gpu(gpus)
    problems: list[str] = []
    if len(groups) != requested:
        seen = ", ".join(f"{uuid} (index {index})" for uuid, index in groups) or "none"
        problems.append(f"the pod sees {len(groups)} distinct GPU(s), it requested {requested}: {seen}")
    for readings in groups.values():
        first = readings[0]
        if not gpu_type_matches(gpu_type, first.name):
            problems.append(f"{first.label()} is a {first.name!r}, the spec's gpu_type is {gpu_type!r}")
    return problems


def memory_problems(gpus: list[GpuReading], gpu_memory_utilization: float) -> list[str]:
    """Memory used is about ``gpu_memory_utilization`` x capacity, as vLLM's up-front KV cache implies."""
    if not gpus:
        return ["no GPU memory reading: cannot compare memory used with the preallocation"]
    low = gpu_memory_utilization - MEMORY_BELOW_MARGIN
    high = min(gpu_memory_utilization + MEMORY_ABOVE_MARGIN, (1 + gpu_memory_utilization) / 2)
    band = f"expected {low:.2f}-{high:.2f} for gpu_memory_utilization {gpu_memory_utilization}"
    problems: list[str] = []
    for readings in _by_gpu(gpus).values():
        usable = [r for r in readings if r.capacity_mib > 0]
        if not usable:
            problems.append(f"{readings[0].label()}: used + free memory is 0 MiB, no capacity to compare with")
            continue
        most = max(usable, key=lambda r: r.mem_used_mib / r.capacity_mib)
        least = min(usable, key=lambda r: r.mem_used_mib / r.capacity_mib)
        if most.mem_used_mib / most.capacity_mib > high:
            problems.append(f"{_memory_seen(most)}, far above the {band}: another process holds memory on this GPU")
        if least.mem_used_mib / least.capacity_mib < low:
            problems.append(f"{_memory_seen(least)}, far below the {band}: the model did not load on this GPU")
    return problems


def _memory_seen(r: GpuReading) -> str:
    return (f"{r.label()}: {r.mem_used_mib:.0f} MiB used of {r.capacity_mib:.0f} MiB capacity = "
            f"{r.mem_used_mib / r.capacity_mib:.3f}")


def utilization_problems(under_load: list[GpuReading]) -> list[str]:
    """Each GPU shows utilization above 0 % in at least one sample taken under load."""
    if not under_load:
        return ["no GPU utilization sample was taken under load"]
    return [f"{readings[0].label()}: 0 % utilization in all {len(readings)} sample(s) under load"
            for readings in _by_gpu(under_load).values() if all(r.util_pct <= 0 for r in readings)]


def xid_problems(samples: list[GpuReading]) -> list[str]:
    """No XID error on any GPU; a source that cannot report XID (nvidia-smi) is no evidence of none."""
    if not samples:
        return ["no GPU sample: XID errors not checked"]
    problems: list[str] = []
    for readings in _by_gpu(samples).values():
        known = [r for r in readings if r.xid is not None]
        if not known:
            problems.append(f"{readings[0].label()}: the telemetry source reports no XID field, "
                            "so XID errors cannot be ruled out")
        codes = sorted({int(r.xid) for r in known if r.xid})
        if codes:
            problems.append(f"{readings[0].label()}: XID error {', '.join(map(str, codes))} during the run")
    return problems
