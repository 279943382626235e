"""GPU types the sizing knows: total memory as the CUDA runtime sees it (what vLLM multiplies by its utilization)."""

from __future__ import annotations

from dataclasses import dataclass

MIB = 2**20
GIB = 2**30
# nvidia-smi's memory.total includes memory the driver reserves; CUDA (torch.cuda.mem_get_info, which vLLM reads)
# sees the rest. Measured here: H100 80GB HBM3 480 MiB of 81,559 (0.59 %), H200 616 MiB of 143,771 (0.43 %).
# Cards without a capture get the mean share, an estimate.
ESTIMATED_RESERVED_SHARE = 0.005


@dataclass(frozen=True)
class GpuType:
    """One gpu-type label value and the memory its pods get."""

    name: str  # the spec's resources.gpu_type and the nodes' gpu-type label
    product: str  # what nvidia-smi names it
    smi_total_mib: int  # nvidia-smi memory.total
    runtime_total_mib: int  # what CUDA reports as total: vLLM's total_gpu_memory
    measured: bool  # runtime_total_mib read on a real card (else smi_total_mib less the estimated reserve)
    source: str

    @property
    def runtime_bytes(self) -> int:
        return self.runtime_total_mib * MIB

    @property
    def runtime_gib(self) -> float:
        return self.runtime_total_mib / 1024


def _estimated(name: str, product: str, smi_mib: int, source: str) -> GpuType:
    runtime = round(smi_mib * (1 - ESTIMATED_RESERVED_SHARE))
    return GpuType(name, product, smi_mib, runtime, False,
                   f"{source}; runtime total estimated as memory.total less {ESTIMATED_RESERVED_SHARE:.1%} driver "
                   "reserve (the measured H100 and H200 share)")


_SMI = "nvidia-smi memory.total {mib} MiB as public nvidia-smi tables of this card show it (datasheet: {sheet})"

GPU_TYPES: tuple[GpuType, ...] = (
    GpuType("h200", "NVIDIA H200", 143771, 143156, True,
            "measured: tests/data/gpu-h200 (nvidia-smi -q: total 143,771 MiB, reserved 616 MiB; torch's total "
            "143,156 MiB in load.log)"),
    GpuType("h100-sxm", "NVIDIA H100 80GB HBM3", 81559, 81079, True,
            "measured: the project's shared H100 capture (nvidia-smi -q: total 81,559 MiB, reserved 480 MiB, free "
            "81,079 MiB idle)"),
    GpuType("h100-pcie", "NVIDIA H100 PCIe", 81559, 81079, False,
            "estimate: the H100 SXM's measured total (the same 80 GB of HBM; "
            "https://www.nvidia.com/en-us/data-center/h100/)"),
    _estimated("a100-80gb", "NVIDIA A100-SXM4-80GB", 81920,
               _SMI.format(mib="81,920", sheet="80 GB HBM2e, https://www.nvidia.com/en-us/data-center/a100/")),
    _estimated("a100-40gb", "NVIDIA A100-SXM4-40GB", 40960,
               _SMI.format(mib="40,960", sheet="40 GB HBM2, https://www.nvidia.com/en-us/data-center/a100/")),
    _estimated("rtx-6000-ada", "NVIDIA RTX 6000 Ada Generation", 49140,
               _SMI.format(mib="49,140", sheet="48 GB GDDR6, https://www.nvidia.com/en-us/design-visualization/"
                                               "rtx-6000/")),
    _estimated("l40s", "NVIDIA L40S", 46068,
               _SMI.format(mib="46,068", sheet="48 GB GDDR6 with ECC, https://www.nvidia.com/en-us/data-center/"
                                               "l40s/")),
    _estimated("rtx-4090", "NVIDIA GeForce RTX 4090", 24564,
               _SMI.format(mib="24,564", sheet="24 GB GDDR6X, https://www.nvidia.com/en-us/geforce/graphics-cards/"
                                               "40-series/rtx-4090/")),
    GpuType("rtx-3090", "NVIDIA GeForce RTX 3090", 24576, round(23.58 * 1024), True,
            "measured: vLLM's own log, total_gpu_memory=23.58GiB (https://github.com/vllm-project/vllm/issues/10517"
            "); nvidia-smi total from the datasheet's 24 GB GDDR6X"),
    _estimated("a10g", "NVIDIA A10G", 23028,
               _SMI.format(mib="23,028", sheet="24 GB GDDR6, https://aws.amazon.com/ec2/instance-types/g5/")),
    _estimated("l4", "NVIDIA L4", 23034,
               _SMI.format(mib="23,034", sheet="24 GB GDDR6, https://www.nvidia.com/en-us/data-center/l4/")),
)


class UnknownGpuType(LookupError):
    """A gpu_type the table does not hold."""


def gpu_type(name: str) -> GpuType:
    """The table's entry for ``name``; UnknownGpuType names the known ones."""
    for gpu in GPU_TYPES:
        if gpu.name == name:
            return gpu
    raise UnknownGpuType(f"gpu type {name!r} is not in the sizing table (known: "
                         f"{', '.join(g.name for g in GPU_TYPES)})")


def known_gpu_type(name: str) -> GpuType | None:
    """The table's entry for ``name``, None where it has none."""
    return next((g for g in GPU_TYPES if g.name == name), None)
