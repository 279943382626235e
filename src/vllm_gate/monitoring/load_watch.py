"""What Prometheus and the GPUs showed around the load test: counters at a scrape on each side, GPU readings."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from vllm_gate.base.errors import GateError
from vllm_gate.checks.metrics import Counters
from vllm_gate.monitoring.gpu import GpuReading
from vllm_gate.monitoring.gpu_source import GpuSource
from vllm_gate.monitoring.prometheus import (
    CounterWindow,
    Prometheus,
    counters_at,
    scrape_interval_s,
    wait_for_scrape,
)

SCRAPE_WAIT_MARGIN_S = 15.0  # beyond two scrape intervals: a slow scrape, a busy Prometheus


@dataclass(frozen=True)
class ModelPods:
    """The model's pods the gate deployed, as the monitoring checks look them up."""

    namespace: str
    pods: tuple[str, ...]
    container: str
    model: str  # the served model name (vLLM's model_name label)


@dataclass
class Watched:
    """The evidence, or why a part of it could not be taken (the load test ran regardless)."""

    counters: CounterWindow | None = None
    counters_error: str | None = None
    gpu_under_load: dict[str, list[GpuReading]] = field(default_factory=dict)
    gpu_error: str | None = None


class LoadWatch:
    """Call ``begin()`` right before the load test and ``end()`` right after it."""

    def __init__(self, prom: Prometheus | None, gpu: GpuSource | None, target: ModelPods,
                 progress: Callable[[str], None]) -> None:
        self._prom, self._gpu, self._target, self._progress = prom, gpu, target, progress
        self._interval = 0.0
        self._start = 0.0
        self._before: Counters | None = None
        self._load_start = 0.0
        self.watched = Watched()

    def _scrape_after(self, moment: float) -> float:
        assert self._prom is not None
        t = self._target
        return wait_for_scrape(self._prom, t.namespace, t.pods, moment, 2 * self._interval + SCRAPE_WAIT_MARGIN_S)

    def begin(self) -> None:
        t = self._target
        if self._prom is not None:
            try:
                self._interval = scrape_interval_s(self._prom.active_targets(), t.namespace, t.pods)
                self._progress(f"monitoring: waiting for Prometheus to scrape {len(t.pods)} pod(s) before the load "
                               f"test (interval {self._interval:g} s)")
                self._start = self._scrape_after(time.time())
                self._before = counters_at(self._prom, t.namespace, t.pods, t.model, self._start)
            except GateError as exc:
                self.watched.counters_error = exc.summary
        if self._gpu is not None:
            self._gpu.begin(t.pods)
        self._load_start = time.time()

    def end(self, *, scrape: bool = True) -> Watched:
        """Take the evidence (``scrape=False``: only stop sampling, after a load test that failed)."""
        t = self._target
        load_end = time.time()
        if self._gpu is not None:  # first: an nvidia-smi sampler stops at the load test's end
            try:
                self.watched.gpu_under_load = {pod: self._gpu.during(pod, self._load_start, load_end)
                                               for pod in t.pods}
            except GateError as exc:
                self.watched.gpu_error = exc.summary
        if scrape and self._prom is not None and self._before is not None:
            try:
                end = self._scrape_after(load_end)
                after = counters_at(self._prom, t.namespace, t.pods, t.model, end)
                self.watched.counters = CounterWindow(self._start, end, self._before, after, self._interval)
            except GateError as exc:
                self.watched.counters_error = exc.summary
        return self.watched
