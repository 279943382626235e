"""GPU readings of a pod from dcgm-exporter's series in Prometheus (DCGM_FI_DEV_*)."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from vllm_gate.monitoring.gpu import GpuReading
from vllm_gate.monitoring.prometheus import POLL_S, Prometheus, promql_string
from vllm_gate.monitoring.recorded import RECORDED_SERIES_LABEL

UTIL, FB_USED, FB_FREE, XID = ("DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE",
                               "DCGM_FI_DEV_XID_ERRORS")
FIELDS = (UTIL, FB_USED, FB_FREE, XID)


def pod_series(metric: str, namespace: str, pod: str) -> str:
    """The metric for one pod, whether the scrape kept dcgm-exporter's pod labels or renamed them exported_*."""
    ns, name = promql_string(namespace), promql_string(pod)
    return f"{metric}{{namespace={ns},pod={name}}} or {metric}{{exported_namespace={ns},exported_pod={name}}}"


def wait_for_series(prom: Prometheus, namespace: str, pod: str, timeout_s: float) -> bool:
    """Whether the pod's GPU series show up within ``timeout_s`` (dcgm-exporter maps pods on its next scrape)."""
    deadline = time.monotonic() + timeout_s
    while not prom.query(pod_series(FB_USED, namespace, pod)):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)
    return True


def recorded_series(prom: Prometheus, namespace: str, pod: str) -> bool:
    """Whether the pod's GPU series say they are recorded test data (the local cluster's stand-in exporter)."""
    return any(one["metric"].get(RECORDED_SERIES_LABEL) == "true"
               for one in prom.query(pod_series(FB_USED, namespace, pod)))


def _readings(by_field: dict[str, list[dict[str, Any]]]) -> list[GpuReading]:
    """Join the fields' series into one reading per GPU and timestamp (one scrape gives one timestamp)."""
    values: dict[tuple[str, str, float], dict[str, float]] = defaultdict(dict)
    names: dict[tuple[str, str], str] = {}
    for field, series in by_field.items():
        for one in series:
            labels = one["metric"]
            gpu = (labels.get("gpu", "0"), labels.get("UUID", ""))
            names[gpu] = labels.get("modelName", "")
            for ts, value in one.get("values") or [one["value"]]:
                values[(*gpu, float(ts))][field] = float(value)
    readings = []
    for (index, uuid, _ts), got in sorted(values.items(), key=lambda item: (item[0][2], item[0][0])):
        if {UTIL, FB_USED, FB_FREE} <= got.keys():
            readings.append(GpuReading(index=int(index), uuid=uuid, name=names[(index, uuid)], util_pct=got[UTIL],
                                       mem_used_mib=got[FB_USED], mem_free_mib=got[FB_FREE], xid=got.get(XID)))
    return readings


def readings_now(prom: Prometheus, namespace: str, pod: str) -> list[GpuReading]:
    """The pod's GPUs as their latest scrape shows them."""
    at = time.time()  # one evaluation time for every field: instant results carry it as their timestamp
    return _readings({field: prom.query(pod_series(field, namespace, pod), at) for field in FIELDS})


def readings_between(prom: Prometheus, namespace: str, pod: str, start: float, end: float,
                     step_s: float) -> list[GpuReading]:
    """The pod's GPUs sampled every ``step_s`` from ``start`` to ``end`` (the load test)."""
    return _readings({field: prom.query_range(pod_series(field, namespace, pod), start, end, step_s)
                      for field in FIELDS})
