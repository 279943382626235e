"""Turn a model spec into the values of the generic chart (`charts/vllm`)."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Literal

from packaging.version import InvalidVersion, Version

from vllm_gate.spec import ModelSpec

STARTUP_PROBE_PERIOD_S = 10
CHART_NAME = "vllm"

Strategy = Literal["Recreate", "RollingUpdate"]
# maxUnavailable 0: the old pod serves until its replacement is Ready; maxSurge 1: one extra GPU set at a time.
STRATEGY_VALUES: dict[Strategy, dict[str, Any]] = {
    "Recreate": {"type": "Recreate"},
    "RollingUpdate": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
}


def release_fullname(release: str) -> str:
    """The chart's ``vllm.fullname`` for a release (Deployment, NetworkPolicy and PDB name)."""
    name = release if CHART_NAME in release else f"{release}-{CHART_NAME}"
    return name[:63].rstrip("-")


def go_duration(ms: float) -> str:
    """Milliseconds as a Go duration (``60ms``, ``22.5ms``), exact: never rounded down to zero."""
    text = format(Decimal(repr(ms)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{text}ms"


def model_cache_values(spec: ModelSpec) -> dict[str, Any]:
    """The chart's ``modelCache`` for the spec's cache choice (HF_HOME lives on it)."""
    cache = spec.model_cache
    values: dict[str, Any] = {"type": cache.kind, "size": cache.size}
    if cache.kind == "pvc":
        values["storageClassName"] = cache.storage_class or ""
        values["accessMode"] = cache.access_mode or "ReadWriteOnce"
    if cache.kind == "existingClaim":
        values["existingClaim"] = cache.claim_name
    return values


def chart_values(spec: ModelSpec, strategy: Strategy = "Recreate", service: str | None = None, *,
                 engine: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Return chart values for ``spec``. The HF token is referenced by Secret name, never held.

    ``strategy`` is the Deployment's, as the preflight decided it (vllm_gate.deploy.preflight); ``service`` the
    Service's name when it is not the spec's (a candidate's, vllm_gate.deploy.target); ``engine`` what the local
    cluster's real engine adds (its volumes: cluster/dataplane/vllm_cpu.py).
    """
    res = spec.resources
    net = spec.network
    monitoring = spec.monitoring
    rehearsal = spec.rehearsal
    values = {
        "engine": spec.engine,
        "model": {
            "id": spec.model_id,
            "servedName": spec.served_name,
            "maxModelLen": spec.vllm.max_model_len,
            "gpuMemoryUtilization": spec.vllm.gpu_memory_utilization,
            "tensorParallelSize": spec.vllm.tensor_parallel_size,
            "extraArgs": list(spec.vllm.extra_args),
        },
        "image": {
            "repository": spec.image.repository,
            "tag": spec.image.tag,
            "digest": spec.image.digest or "",
        },
        "autoscaling": autoscaling_values(spec),
        "sim": {
            "timeToFirstToken": go_duration(rehearsal.ttft_ms),
            "timeToFirstTokenStdDev": go_duration(rehearsal.ttft_std_ms),
            "interTokenLatency": go_duration(rehearsal.itl_ms),
            "interTokenLatencyStdDev": go_duration(rehearsal.itl_std_ms),
            # The simulated model the identity checks exercise: pod annotations the local cluster turns into the
            # stand-in's flags (the llm-d image ignores them; see charts/vllm/README.md).
            "chatTemplate": rehearsal.chat_template,
            "eosAfter": rehearsal.eos_after_tokens,
            "answerSalt": rehearsal.answer_salt,
            "maxNumSeqs": rehearsal.max_num_seqs,
        },
        "service": {"name": service or spec.service.name, "type": spec.service.type, "port": spec.service.port},
        "resources": {
            "requests": {"cpu": res.cpu_request, "memory": res.memory_request},
            "limits": {"memory": res.memory_limit},
        },
        "gpu": {"count": res.gpus, "resourceName": "nvidia.com/gpu"},
        "strategy": copy.deepcopy(STRATEGY_VALUES[strategy]),
        "nodeSelector": {"gpu-type": res.gpu_type},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "shm": {"sizeLimit": res.shm_size},
        "modelCache": model_cache_values(spec),
        "shutdown": {"preStopSleepSeconds": spec.shutdown.endpoint_removal_s,
                     "drainSeconds": spec.shutdown.drain_s},
        "terminationGracePeriodSeconds": spec.shutdown.grace_period_s,
        "runtimeClassName": spec.scheduling.runtime_class_name or "",
        "priorityClassName": spec.scheduling.priority_class_name or "",
        "startupProbe": {
            "periodSeconds": STARTUP_PROBE_PERIOD_S,
            "failureThreshold": math.ceil(spec.startup.timeout_s / STARTUP_PROBE_PERIOD_S),
            "timeoutSeconds": 5,
        },
        "monitoring": {
            "scrape": monitoring.scrape,
            "interval": monitoring.interval,
            # Empty: Prometheus' own default, its global scrape timeout capped at the interval, so it never
            # exceeds a short interval (which Prometheus refuses).
            "scrapeTimeout": "",
            "labels": dict(monitoring.labels),
        },
        "networkPolicy": {
            "enabled": True,
            "routerPodLabels": dict(net.router_pod_labels),
            "routerNamespace": net.router_namespace or "",
            "monitoringNamespace": monitoring.namespace,
            "prometheusPodLabels": dict(monitoring.prometheus_pod_labels),
        },
    }
    # The engine's values win: where it says no HF token, none travels, whatever the spec's values hold.
    return values | copy.deepcopy(dict(engine or {}))


# vLLM 0.9 renamed gpu_cache_usage_perc to kv_cache_usage_perc (vllm-project/vllm#18354); later releases dropped
# the old name. prometheus-adapter's usual rule exposes vllm:<name> as vllm_<name>.
KV_CACHE_RENAMED_IN = Version("0.9")


def autoscaling_series(spec: ModelSpec) -> str:
    """The spec's signal as Prometheus names the series, for the vLLM release its image holds."""
    signal = spec.autoscaling.signal
    if signal == "queue":
        return "vllm:num_requests_waiting"
    if signal == "gpu_utilization":
        return "DCGM_FI_DEV_GPU_UTIL"
    try:
        release = Version(Version((spec.image.vllm_version or spec.image.tag).removeprefix("v")).public)
    except InvalidVersion:
        release = KV_CACHE_RENAMED_IN  # the spec refuses a tag that names no release; a sim image names none
    return "vllm:kv_cache_usage_perc" if release >= KV_CACHE_RENAMED_IN else "vllm:gpu_cache_usage_perc"


def autoscaling_metric(spec: ModelSpec) -> str:
    """The spec's signal as the custom metrics API names it (prometheus-adapter's rules: vllm:x as vllm_x)."""
    return spec.autoscaling.metric_name or autoscaling_series(spec).replace("vllm:", "vllm_", 1)


def autoscaling_values(spec: ModelSpec) -> dict[str, object]:
    policy = spec.autoscaling
    value = policy.target_value
    target = f"{round(value * 1000)}m" if value != int(value) else str(int(value))
    return {"enabled": policy.enabled, "minReplicas": policy.min_replicas, "maxReplicas": policy.max_replicas,
            "metric": autoscaling_metric(spec), "targetAverageValue": target,
            "scaleUpStabilizationSeconds": policy.scale_up_stabilization_s,
            "scaleDownStabilizationSeconds": policy.scale_down_stabilization_s, "controller": policy.controller,
            # KEDA reads its threshold as a plain number, not a Kubernetes quantity.
            "keda": {"prometheusAddress": policy.keda_prometheus_url or "", "series": autoscaling_series(spec),
                     "threshold": f"{value:.6f}".rstrip("0").rstrip(".")}}
