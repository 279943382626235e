"""Where the gate reads a model pod's GPUs: dcgm-exporter series in Prometheus, else nvidia-smi in the pod."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Protocol

from kubernetes import client

from vllm_gate.base.errors import GateError
from vllm_gate.monitoring import dcgm
from vllm_gate.monitoring.gpu import GpuReading
from vllm_gate.monitoring.pod_exec import nvidia_smi_in_pod
from vllm_gate.monitoring.prometheus import Prometheus
from vllm_gate.monitoring.recorded import RECORDED_LABEL

EXEC_SAMPLE_EVERY_S = 5.0
DCGM_WAIT_MARGIN_S = 10.0  # beyond two scrape intervals: the exporter maps a new pod to its GPUs on its next poll


class GpuSource(Protocol):
    description: str  # for the report: what the readings are
    recorded: bool  # recorded test data, never a live GPU
    reports_xid: bool  # whether its readings carry XID errors (nvidia-smi --query-gpu has no such field)

    def now(self, pod: str) -> list[GpuReading]:
        """The pod's GPUs now."""

    def begin(self, pods: Sequence[str]) -> None:
        """The load test starts."""

    def during(self, pod: str, start: float, end: float) -> list[GpuReading]:
        """The pod's GPU readings between ``start`` and ``end`` (the load test), after it ended."""


class DcgmSource:
    """dcgm-exporter's series in Prometheus, sampled at the scrape interval."""

    reports_xid = True

    def __init__(self, prom: Prometheus, namespace: str, step_s: float, *, recorded: bool) -> None:
        self._prom, self._namespace, self._step_s = prom, namespace, step_s
        self.recorded = recorded
        what = RECORDED_LABEL if recorded else "dcgm-exporter series"
        self.description = f"{what} in Prometheus {prom.shown}"

    def now(self, pod: str) -> list[GpuReading]:
        return dcgm.readings_now(self._prom, self._namespace, pod)

    def begin(self, pods: Sequence[str]) -> None:
        """Nothing to do: Prometheus keeps the history."""

    def during(self, pod: str, start: float, end: float) -> list[GpuReading]:
        return dcgm.readings_between(self._prom, self._namespace, pod, start, end, self._step_s)


class ExecSource:
    """nvidia-smi through the exec API, sampled by a thread every EXEC_SAMPLE_EVERY_S through the load test."""

    recorded = False
    reports_xid = False

    def __init__(self, api: client.ApiClient, namespace: str, container: str) -> None:
        self._api, self._namespace, self._container = api, namespace, container
        self.description = f"nvidia-smi --query-gpu in the pods (container {container}, exec API)"
        self._samples: dict[str, list[tuple[float, GpuReading]]] = {}
        self._errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def now(self, pod: str) -> list[GpuReading]:
        return nvidia_smi_in_pod(self._api, self._namespace, pod, self._container)

    def begin(self, pods: Sequence[str]) -> None:
        self._samples = {pod: [] for pod in pods}
        self._thread = threading.Thread(target=self._sample, args=(list(pods),), name="vllm-gate-nvidia-smi",
                                        daemon=True)
        self._thread.start()

    def _sample(self, pods: list[str]) -> None:
        while not self._stop.is_set():
            for pod in pods:
                try:
                    taken = time.time()
                    self._samples[pod] += [(taken, reading) for reading in self.now(pod)]
                except GateError as exc:
                    self._errors.append(exc.summary)
            self._stop.wait(EXEC_SAMPLE_EVERY_S)

    def during(self, pod: str, start: float, end: float) -> list[GpuReading]:
        """Stop sampling; the readings taken between ``start`` and ``end``."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(EXEC_SAMPLE_EVERY_S * 4)
        readings = [reading for taken, reading in self._samples.get(pod, []) if start <= taken <= end]
        if self._errors and not readings:
            raise GateError(f"no nvidia-smi reading of pod {pod} during the load test: {self._errors[-1]}")
        return readings


def choose_gpu_source(prom: Prometheus | None, api: client.ApiClient, namespace: str, pods: Sequence[str],
                      container: str, *, step_s: float, live_pods: bool, recorded: bool) -> GpuSource | str:
    """The best GPU source for the pods, or why there is none.

    ``live_pods``: the pods run real containers on real GPUs, so nvidia-smi can run in them.
    """
    reasons = []
    if prom is not None:
        try:
            if dcgm.wait_for_series(prom, namespace, pods[0], 2 * step_s + DCGM_WAIT_MARGIN_S):
                marked = dcgm.recorded_series(prom, namespace, pods[0])
                return DcgmSource(prom, namespace, step_s, recorded=recorded or marked)
            reasons.append(f"Prometheus {prom.shown} has no {dcgm.FB_USED} series for pod {namespace}/{pods[0]} "
                           "(pod/namespace or exported_pod/exported_namespace labels)")
        except GateError as exc:
            reasons.append(exc.summary)
    else:
        reasons.append("no Prometheus (--prometheus-url) to read dcgm-exporter series from")
    if not live_pods:
        return "; ".join([*reasons, "and the pods run no real containers on real GPUs, so nvidia-smi cannot run "
                                    "in them"])
    source = ExecSource(api, namespace, container)
    try:
        source.now(pods[0])
    except GateError as exc:
        return "; ".join([*reasons, exc.summary])
    return source
