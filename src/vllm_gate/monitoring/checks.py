"""The monitoring and gpu suites' checks: each returns its problems, a failed Prometheus call among them."""

from __future__ import annotations

from collections.abc import Callable

from vllm_gate.base.errors import GateError
from vllm_gate.checks.metrics import Counters
from vllm_gate.monitoring.gpu import (
    GpuReading,
    identity_problems,
    memory_problems,
    utilization_problems,
    xid_problems,
)
from vllm_gate.monitoring.gpu_source import GpuSource
from vllm_gate.monitoring.load_watch import ModelPods, Watched
from vllm_gate.monitoring.prometheus import Prometheus, rate_problems, series_problems, target_problems


def _problems(check: Callable[[], list[str]]) -> list[str]:
    try:
        return check()
    except GateError as exc:
        return [exc.summary]


def scrape_targets(prom: Prometheus, pods: ModelPods) -> list[str]:
    return _problems(lambda: target_problems(prom.active_targets(), pods.namespace, pods.pods))


def vllm_series(prom: Prometheus, pods: ModelPods) -> list[str]:
    return _problems(lambda: series_problems(prom, pods.namespace, pods.pods, pods.model))


def rates(watched: Watched, client: Counters, load_wall_s: float) -> list[str]:
    if watched.counters is None:
        return [f"Prometheus's counters around the load test could not be read: {watched.counters_error}"]
    return rate_problems(watched.counters, client, load_wall_s)


def _per_pod(pods: ModelPods, read: Callable[[str], list[GpuReading]],
             judge: Callable[[list[GpuReading]], list[str]]) -> list[str]:
    def check() -> list[str]:
        return [f"pod {pods.namespace}/{pod}: {problem}" for pod in pods.pods for problem in judge(read(pod))]
    return _problems(check)


def gpu_identity(source: GpuSource, pods: ModelPods, requested: int, gpu_type: str) -> list[str]:
    return _per_pod(pods, source.now, lambda gpus: identity_problems(gpus, requested, gpu_type))


def gpu_memory(source: GpuSource, pods: ModelPods, gpu_memory_utilization: float) -> list[str]:
    return _per_pod(pods, source.now, lambda gpus: memory_problems(gpus, gpu_memory_utilization))


def _under_load(watched: Watched, pods: ModelPods, judge: Callable[[list[GpuReading]], list[str]]) -> list[str]:
    if watched.gpu_error:
        return [f"GPU readings during the load test could not be taken: {watched.gpu_error}"]
    return _per_pod(pods, lambda pod: watched.gpu_under_load.get(pod, []), judge)


def gpu_busy(watched: Watched, pods: ModelPods) -> list[str]:
    return _under_load(watched, pods, utilization_problems)


def gpu_xid(watched: Watched, pods: ModelPods) -> list[str]:
    return _under_load(watched, pods, xid_problems)
