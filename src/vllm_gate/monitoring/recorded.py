"""Recorded GPU telemetry, test data: a real H100 capture that the local cluster serves as dcgm-exporter series.

Nothing here reads a live GPU. The files under recorded_h100/ are byte-identical copies of four files of
../shared/data/gpu-h100 (nvidia-smi on a real H100 80GB HBM3, idle and under a bf16 matmul load); the local
cluster's fake GPU exporter renders
them in dcgm-exporter's format for its fake GPU nodes, and the gpu suite reports them as RECORDED_LABEL.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from importlib import resources
from importlib.resources.abc import Traversable

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from vllm_gate.monitoring.gpu import GpuReading, TelemetryError
from vllm_gate.monitoring.nvidia_smi import parse_query, parse_xml

RECORDED_LABEL = "recorded telemetry (H100 capture, test data, not a live GPU)"
RECORDED_DIR: Traversable = resources.files("vllm_gate.monitoring").joinpath("recorded_h100")
IDLE_FILE, LOAD_FILE, XML_FILE = "query_idle_nounits.csv", "query_load_nounits.csv", "nvidia-smi-q.xml"

# dcgm-exporter's series (etc/default-counters.csv): name, help text, the reading's value.
_SERIES: tuple[tuple[str, str, Callable[[GpuReading], float]], ...] = (
    ("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", lambda r: r.util_pct),
    ("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).", lambda r: r.mem_free_mib),
    ("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", lambda r: r.mem_used_mib),
    # dcgm-exporter shows the last XID code, 0 until one occurs; the capture ran without one (the XML's
    # gpu_recovery_action is None and the load kept the GPU at 100 %).
    ("DCGM_FI_DEV_XID_ERRORS", "Value of the last XID error encountered.", lambda r: r.xid or 0.0),
)
# dcgm-exporter's label names; pod, namespace and container come with DCGM_EXPORTER_KUBERNETES=true. The last is
# ours: the series say themselves that they are recorded, wherever a gate reads them (--cluster existing too).
RECORDED_SERIES_LABEL = "vllm_gate_recorded"
_LABELS = ("gpu", "UUID", "device", "modelName", "Hostname", "DCGM_FI_DRIVER_VERSION", "container", "namespace",
           "pod", RECORDED_SERIES_LABEL)


@dataclass(frozen=True)
class RecordedGpu:
    """The recorded card: one idle reading, the load samples (one a second), the driver that gave them."""

    idle: GpuReading
    load: tuple[GpuReading, ...]
    driver_version: str


@dataclass(frozen=True)
class PodGpus:
    """A model pod on a fake GPU node and the nvidia.com/gpu count it requested."""

    namespace: str
    pod: str
    container: str
    node: str
    gpus: int


def load_recorded(directory: Traversable = RECORDED_DIR) -> RecordedGpu:
    """Parse the recorded capture and check its files describe one and the same GPU."""
    xml = parse_xml(directory.joinpath(XML_FILE).read_text())
    idle = parse_query(directory.joinpath(IDLE_FILE).read_text())
    load = parse_query(directory.joinpath(LOAD_FILE).read_text())
    if len(xml.gpus) != 1 or len(idle) != 1 or not load:
        raise TelemetryError(f"recorded capture {directory}: expected one GPU in {XML_FILE} and {IDLE_FILE} and "
                             f"load samples in {LOAD_FILE}, got {len(xml.gpus)}, {len(idle)} and {len(load)}")
    card = xml.gpus[0]
    for file, readings in ((IDLE_FILE, idle), (LOAD_FILE, load)):
        for n, r in enumerate(readings, 1):
            for field in ("uuid", "name", "mem_total_mib"):
                if getattr(r, field) != getattr(card, field):
                    raise TelemetryError(f"recorded capture {directory}: {file} row {n} has {field} "
                                         f"{getattr(r, field)!r}, {XML_FILE} has {getattr(card, field)!r}")
    return RecordedGpu(idle[0], tuple(load), xml.driver_version)


@functools.cache
def _packaged() -> RecordedGpu:
    return load_recorded()


def dcgm_exposition(pods: Sequence[PodGpus], busy: Callable[[str, str], bool], tick: int,
                    recorded: RecordedGpu | None = None) -> str:
    """dcgm-exporter's text format for ``pods``, filled with the recorded card (test data, not a live GPU).

    A pod gets one series set per requested GPU index 0..n-1, every one of them the same recorded card
    (same UUID): there is one real capture, and the fake nodes have no cards of their own. A pod that
    ``busy(namespace, pod)`` calls busy shows the load sample ``tick`` picks (cycling); any other the idle one.
    """
    card = recorded or _packaged()
    families = [GaugeMetricFamily(name, f"{help_text} Recorded H100 capture, test data.", labels=_LABELS)
                for name, help_text, _ in _SERIES]
    for p in pods:
        reading = card.load[tick % len(card.load)] if busy(p.namespace, p.pod) else card.idle
        for index in range(p.gpus):
            shown = replace(reading, index=index)
            labels = (str(index), shown.uuid, f"nvidia{index}", shown.name, p.node, card.driver_version,
                      p.container, p.namespace, p.pod, "true")
            for family, (_, _, value) in zip(families, _SERIES, strict=True):
                family.add_metric(labels, value(shown))
    return generate_latest(_Families(families)).decode()


class _Families(Collector):
    """Hands ready-made families to prometheus_client's text writer."""

    def __init__(self, families: list[GaugeMetricFamily]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families
