"""Model specs (`models/<name>.yaml`): schema, loading, ``--set`` overrides."""

from __future__ import annotations

import copy
import re
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from packaging.version import InvalidVersion, Version
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from vllm_gate.base.errors import SpecError
from vllm_gate.base.secret import redact_url

DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# Prometheus' duration syntax (units in this order, each at most once), as the Prometheus Operator's CRDs check it.
PROMETHEUS_DURATION = re.compile(r"^(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?$")
QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$")
_UNITS = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50}
# Flags the spec sets through its own fields; repeating them in extra_args would fight the spec.
MANAGED_FLAGS = ("--model", "--served-model-name", "--port", "--host", "--max-model-len",
                 "--gpu-memory-utilization", "--tensor-parallel-size", "-tp")
# llm-d-inference-sim refuses a latency std-dev above this fraction of its mean (pkg/common/config.go).
SIM_MAX_STD_FRACTION = 0.3


def quantity_bytes(value: str) -> int:
    """Return a Kubernetes memory quantity (``20Gi``) in bytes."""
    match = QUANTITY.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a Kubernetes quantity such as 20Gi")
    return int(Decimal(match.group(1)) * _UNITS[match.group(2)])


class StrictModel(BaseModel):
    """Spec base: unknown fields are errors, so a typo never falls back to a default silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Image(StrictModel):
    repository: str = Field(min_length=1, description="Image repository, e.g. vllm/vllm-openai.")
    tag: str = Field(min_length=1, description="Pinned image tag; 'latest' is refused.")
    digest: str | None = Field(None, pattern=r"^sha256:[0-9a-f]{64}$", description="Optional digest.")
    vllm_version: str | None = Field(
        None, description="The vLLM release the image holds, where its tag does not name it (a tag such as "
                          "v0.11.0 does); the server's /version must answer it.")

    @field_validator("tag")
    @classmethod
    def _pinned(cls, tag: str) -> str:
        if tag == "latest":
            raise ValueError("'latest' is not a pinned version (it changes under an upgrade); name a release")
        return tag

    @model_validator(mode="after")
    def _names_a_release(self) -> Image:
        for given in (self.vllm_version, None if self.vllm_version else self.tag):
            if given is not None and not _is_release(given):
                raise ValueError(f"{given!r} names no vLLM release (e.g. v0.11.0, 0.6.3.post1): set "
                                 "image.vllm_version to the release this image holds, which the server's /version "
                                 "must answer")
        return self


def _is_release(text: str) -> bool:
    try:
        Version(text.removeprefix("v"))
    except InvalidVersion:
        return False
    return True


class Resources(StrictModel):
    gpus: int = Field(ge=1, strict=True, description="nvidia.com/gpu per pod.")
    gpu_type: str = Field(pattern=r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$", max_length=63,
                          description="Value of the gpu-type node label the pod must land on.")
    memory_request: str = Field(description="Memory request, e.g. 20Gi.")
    memory_limit: str = Field(description="Memory limit, e.g. 24Gi.")
    cpu_request: str = Field("4", pattern=r"^\d+(\.\d+)?m?$", description="CPU request.")
    shm_size: str = Field("8Gi", description="Size of the memory-backed /dev/shm.")

    @field_validator("memory_request", "memory_limit", "shm_size")
    @classmethod
    def _quantity(cls, value: str) -> str:
        quantity_bytes(value)
        return value

    @model_validator(mode="after")
    def _limit_covers_request(self) -> Resources:
        if quantity_bytes(self.memory_limit) < quantity_bytes(self.memory_request):
            raise ValueError(f"memory_limit {self.memory_limit} is below memory_request {self.memory_request}")
        return self


class Engine(StrictModel):
    max_model_len: int = Field(gt=0, strict=True, description="--max-model-len.")
    gpu_memory_utilization: float = Field(gt=0, le=1, description="--gpu-memory-utilization.")
    tensor_parallel_size: int = Field(1, ge=1, strict=True, description="--tensor-parallel-size.")
    extra_args: list[str] = Field(default_factory=list, description="Further vLLM CLI arguments.")

    @field_validator("extra_args")
    @classmethod
    def _unmanaged(cls, args: list[str]) -> list[str]:
        for arg in args:
            if arg.split("=", 1)[0] in MANAGED_FLAGS:
                raise ValueError(f"{arg} is set by its own spec field; remove it from extra_args")
        return args


class Service(StrictModel):
    name: str = Field(pattern=DNS1035_LABEL, max_length=63, description="Service name the router calls.")
    port: int = Field(8000, ge=1, le=65535, strict=True, description="Service and container port.")
    type: Literal["ClusterIP"] = Field("ClusterIP", description="Only ClusterIP: the model is private.")


class Network(StrictModel):
    router_pod_labels: dict[str, str] = Field(
        default_factory=lambda: {"app.kubernetes.io/name": "ias-router"},
        min_length=1, description="Labels of the API router pods the NetworkPolicy admits.")
    router_namespace: str | None = Field(None, description="Router namespace; None = the model's own.")


class Monitoring(StrictModel):
    """How the platform's Prometheus scrapes the model, and which of its pods the NetworkPolicy admits."""

    scrape: Literal["servicemonitor", "podmonitor", "annotations"] = Field(
        "servicemonitor", description="servicemonitor or podmonitor: a Prometheus Operator object (where the "
                                      "cluster has its CRD, else the annotations); annotations: prometheus.io/* "
                                      "pod annotations.")
    namespace: str = Field("monitoring", pattern=DNS1123_LABEL, max_length=63,
                           description="Namespace the platform's Prometheus runs in.")
    prometheus_pod_labels: dict[str, str] = Field(
        default_factory=lambda: {"app.kubernetes.io/name": "prometheus"},
        description="Labels of the Prometheus pods: the NetworkPolicy admits these pods alone, on the serving port.")
    labels: dict[str, str] = Field(default_factory=dict,
                                   description="Extra labels on the ServiceMonitor or PodMonitor, for the "
                                               "Prometheus selector (e.g. release: kube-prometheus-stack).")
    interval: str = Field("30s", description="Scrape interval, a Prometheus duration such as 30s or 1m30s.")

    @field_validator("prometheus_pod_labels")
    @classmethod
    def _selects_prometheus(cls, labels: dict[str, str]) -> dict[str, str]:
        # An empty selector would admit every pod of the monitoring namespace to the inference API.
        if not labels:
            raise ValueError("must name at least one label of the Prometheus pods; an empty selector admits "
                             "every pod of the monitoring namespace")
        return labels

    @field_validator("interval")
    @classmethod
    def _duration(cls, interval: str) -> str:
        # Without a non-zero digit it is empty or zero (0s, 0m): no interval to scrape at.
        if not PROMETHEUS_DURATION.match(interval) or not any(ch in "123456789" for ch in interval):
            raise ValueError(f"{interval!r} is not a Prometheus duration above zero, such as 30s or 1m30s")
        return interval


class Startup(StrictModel):
    timeout_s: int = Field(1800, gt=0, strict=True,
                           description="Budget for model download + load; sizes the startupProbe.")
    assumes_warm_cache: bool = Field(
        False, description="True: timeout_s covers loading only, the weights already being on the persistent "
                           "model cache (a pvc or existingClaim); False: it covers the download too.")


class ModelCache(StrictModel):
    """Where vLLM keeps downloaded weights (HF_HOME): per pod, a claim the chart creates, or an existing one."""

    kind: Literal["emptyDir", "pvc", "existingClaim"] = Field(
        "emptyDir", description="emptyDir: per pod, downloaded again by every new pod; pvc: a claim the chart "
                                "creates; existingClaim: a claim made elsewhere (shared when ReadWriteMany).")
    size: str = Field("100Gi", description="emptyDir size limit (also its ephemeral-storage request), or the "
                                           "size the chart's claim requests.")
    storage_class: str | None = Field(None, pattern=DNS1123_SUBDOMAIN, max_length=253,
                                      description="pvc only: storageClassName; None = the cluster's default.")
    access_mode: Literal["ReadWriteOnce", "ReadWriteOncePod", "ReadWriteMany"] | None = Field(
        None, description="pvc only: the claim's access mode (default ReadWriteOnce); ReadWriteMany lets pods on "
                          "several nodes share it.")
    claim_name: str | None = Field(None, pattern=DNS1123_SUBDOMAIN, max_length=253,
                                   description="existingClaim only: the PersistentVolumeClaim to mount.")

    @field_validator("size")
    @classmethod
    def _quantity(cls, value: str) -> str:
        quantity_bytes(value)
        return value

    @model_validator(mode="after")
    def _fields_fit_kind(self) -> ModelCache:
        if self.kind != "pvc" and (self.storage_class is not None or self.access_mode is not None):
            raise ValueError(f"storage_class and access_mode apply to kind pvc only, not {self.kind}")
        if (self.kind == "existingClaim") != (self.claim_name is not None):
            raise ValueError("claim_name is required with kind existingClaim and applies to it only")
        return self


class Shutdown(StrictModel):
    """How a pod stops: wait for endpoint removal (preStop), then give in-flight requests time to finish."""

    endpoint_removal_s: int = Field(15, ge=1, strict=True,
                                    description="preStop sleep: time for endpoints and the router to drop the pod.")
    drain_s: int = Field(115, ge=0, strict=True,
                         description="Time after SIGTERM for in-flight requests to finish before SIGKILL.")

    @property
    def grace_period_s(self) -> int:
        """terminationGracePeriodSeconds: it must cover the preStop sleep and the drain."""
        return self.endpoint_removal_s + self.drain_s


class Scheduling(StrictModel):
    runtime_class_name: str | None = Field(
        None, pattern=DNS1123_SUBDOMAIN, max_length=253,
        description="RuntimeClass, e.g. nvidia where it is not containerd's default runtime.")
    priority_class_name: str | None = Field(None, pattern=DNS1123_SUBDOMAIN, max_length=253,
                                            description="PriorityClass of the model pods.")


class Rollout(StrictModel):
    """How an upgrade replaces the model's pods; the gate's preflight decides ``auto`` from the pool."""

    strategy: Literal["auto", "recreate", "rolling"] = Field(
        "auto", description="auto: RollingUpdate when the pool has a spare GPU set for a surge pod, else "
                            "Recreate; rolling: RollingUpdate or fail preflight; recreate: always Recreate.")


class Promotion(StrictModel):
    """How a certified candidate takes over from the live revision once the registry's row is switched to it."""

    drain_s: int = Field(30, ge=0, strict=True,
                         description="After the switch: time for the router's connections and caches to leave the "
                                     "previous revision before it is uninstalled.")
    keep_previous_s: int = Field(0, ge=0, strict=True,
                                 description="After the drain: keep the previous revision this long (0: uninstall "
                                             "it at once) so `ias-admin model rollback NAME` can switch the row back; "
                                             "a later gate run of the model uninstalls it once that time has passed.")
    router_timeout_s: int = Field(60, gt=0, strict=True,
                                  description="How long the API router may take to serve the candidate after the "
                                              "switch before the gate switches the row back (PROMOTION FAILED).")


class Costs(StrictModel):
    input_per_1k: Decimal = Field(ge=0, description="Price per 1K prompt tokens.")
    output_per_1k: Decimal = Field(ge=0, description="Price per 1K output tokens.")


class Percentiles(StrictModel):
    p50: float | None = Field(None, gt=0)
    p95: float | None = Field(None, gt=0)
    p99: float | None = Field(None, gt=0)


class Slos(StrictModel):
    ttft_ms: Percentiles = Field(default_factory=Percentiles, description="Time to first token limits.")
    itl_ms: Percentiles = Field(default_factory=Percentiles, description="Inter-token latency limits.")
    e2e_ms: Percentiles = Field(default_factory=Percentiles, description="End-to-end latency limits.")
    max_error_rate: float = Field(0.01, ge=0, le=1, description="Largest failed-request fraction.")
    # Required and above zero: a floor of 0 would pass a server that produced nothing.
    min_output_tokens_per_s: float = Field(gt=0, description="Smallest aggregate output token rate.")
    min_goodput: float = Field(0.9, ge=0, le=1,
                               description="Smallest fraction of requests meeting every p99 latency limit.")


class RealEngineSlos(StrictModel):
    """The SLO limits of a rehearsal on the local cluster's real engine (vLLM's CPU build with a tiny model, on this
    machine kind), in place of the spec's own limits, which are for its model on GPUs: measured there under the
    spec's load, with headroom, and said where from. Goodput stays the spec's; the error rate too unless set here."""

    ttft_ms: Percentiles
    itl_ms: Percentiles
    e2e_ms: Percentiles
    min_output_tokens_per_s: float = Field(gt=0)
    max_error_rate: float | None = Field(None, ge=0, le=1, description="None: the spec's own.")
    source: str = Field(min_length=1, description="The measurement these limits come from (command, machine, "
                                                  "numbers) and the headroom added.")

    @model_validator(mode="after")
    def _every_latency_limited(self) -> RealEngineSlos:
        for name in ("ttft_ms", "itl_ms", "e2e_ms"):
            if not any(getattr(self, name).model_dump().values()):
                raise ValueError(f"{name}: set at least one percentile (an empty one would drop those SLO checks)")
        return self


class Rehearsal(StrictModel):
    """How a rehearsal stands in for the model: the simulator's latency, with where the numbers come from, the
    simulated model the identity checks exercise, and the real engine's SLO limits.

    A zero-latency simulator passes every latency SLO; these numbers make a rehearsal's SLO section
    mean something, and make an SLO tighter than the expected latency fail in rehearsal too.
    """

    ttft_ms: float = Field(gt=0, description="Mean time to first token (--time-to-first-token).")
    itl_ms: float = Field(gt=0, description="Mean inter-token latency (--inter-token-latency).")
    ttft_std_ms: float = Field(0, ge=0, description="Standard deviation of TTFT.")
    itl_std_ms: float = Field(0, ge=0, description="Standard deviation of ITL.")
    source: str = Field(description="Where the numbers come from: a published measurement or a stated estimate.")
    # What the identity checks need the simulator to do (scripts/vllm-sim; the llm-d simulator has no such flags).
    chat_template: Literal["llama3", "mistral", "chatml", "none"] = Field(
        "none", description="Chat template the simulator applies before counting prompt tokens (--chat-template).")
    eos_after_tokens: int = Field(
        24, ge=0, description="Without ignore_eos, answers end (finish_reason stop) after this many tokens; "
                              "0: never (a model without its chat template) (--eos-after).")
    answer_salt: str = Field("", description="Changes every deterministic answer: a planted model change "
                                             "(--answer-salt).")
    max_num_seqs: int = Field(256, ge=1, strict=True,
                              description="Requests the simulator runs at once, the rest queue (--max-num-seqs): a "
                                          "known capacity for the capacity search to find.")
    real_engine: RealEngineSlos | None = Field(
        None, description="SLO limits on the local cluster's real engine (vLLM's CPU build, a tiny model); without "
                          "them such a rehearsal holds the engine to the spec's own limits.")

    @field_validator("source")
    @classmethod
    def _stated(cls, source: str) -> str:
        if not source.strip():
            raise ValueError("must say where the latency numbers come from (a measurement, or an estimate and "
                             "its basis)")
        return source

    @model_validator(mode="after")
    def _std_within_simulator_limit(self) -> Rehearsal:
        for name, mean, std in (("ttft", self.ttft_ms, self.ttft_std_ms), ("itl", self.itl_ms, self.itl_std_ms)):
            if std > SIM_MAX_STD_FRACTION * mean:
                raise ValueError(f"{name}_std_ms {std:g} exceeds {SIM_MAX_STD_FRACTION:.0%} of {name}_ms {mean:g}; "
                                 "the simulator refuses to start with it")
        return self


class ChatMessage(StrictModel):
    role: Literal["system", "user", "assistant"]
    content: str = Field(min_length=1)


DEFAULT_CANARY = (ChatMessage(role="system", content="You are a concise assistant."),
                  ChatMessage(role="user", content="What is the capital of France? Answer in one word."))
DEFAULT_STOP_PROMPTS = ("Say hello.", "Name one primary color.", "What is 2 + 2? Answer with the number only.")
DEFAULT_DRIFT_PROMPTS = (
    "Explain in two sentences what a hash table is.",
    "Write a haiku about autumn.",
    "List three prime numbers greater than ten.",
    "Translate 'good morning' into German.",
    "What does HTTP status 404 mean?",
)


class Canary(StrictModel):
    """A fixed conversation whose prompt-token count identifies the tokenizer and chat template."""

    messages: list[ChatMessage] = Field(default_factory=lambda: list(DEFAULT_CANARY), min_length=1)
    prompt_tokens: int | None = Field(None, gt=0, description="The server's usage.prompt_tokens for the canary, "
                                                              "once known; else the last certification's.")


class Stopping(StrictModel):
    """Short prompts, sent without ignore_eos, must end with finish_reason stop within a bound."""

    prompts: list[str] = Field(default_factory=lambda: list(DEFAULT_STOP_PROMPTS), min_length=1)
    max_tokens: int = Field(512, gt=0, description="Generous: a model that never stops reaches it.")
    stop_within_tokens: int = Field(256, gt=0, description="Each answer must stop within this many tokens.")

    @model_validator(mode="after")
    def _bound_below_max(self) -> Stopping:
        if self.stop_within_tokens >= self.max_tokens:
            raise ValueError(f"stop_within_tokens {self.stop_within_tokens} must be below max_tokens "
                             f"{self.max_tokens}, or a model that never stops would look like one that did")
        return self


class Drift(StrictModel):
    """Fixed prompts answered at temperature 0, compared with the last certification's answers."""

    prompts: list[str] = Field(default_factory=lambda: list(DEFAULT_DRIFT_PROMPTS), min_length=1)
    max_tokens: int = Field(64, gt=0)
    seed: int = Field(1234, ge=0)
    min_similarity: float = Field(0.9, gt=0, le=1, description="Mean text similarity (0-1) to the last "
                                                               "certified answers below which the check fails.")


class Identity(StrictModel):
    """The right model, answering sensibly: tokenizer and chat template, stopping, answer drift."""

    canary: Canary = Field(default_factory=Canary)
    stopping: Stopping = Field(default_factory=Stopping)
    drift: Drift = Field(default_factory=Drift)


class Regression(StrictModel):
    """How far a run may fall behind the last passed one on the same cluster (--compare-last)."""

    latency_p95_increase: float = Field(0.20, gt=0, description="TTFT, ITL and end-to-end p95 may grow by this "
                                                                 "share.")
    throughput_decrease: float = Field(0.15, gt=0, lt=1, description="Output tokens/s may drop by this share.")


class CapacitySearch(StrictModel):
    """The capacity search (here, or ``--find-capacity``): after the SLO load test, the highest concurrency one
    replica serves with every latency SLO and the error rate held, climbing and bisecting against the candidate."""

    enabled: bool = Field(False, description="Run the search in every run of this model.")
    start_users: int | None = Field(None, ge=1, strict=True,
                                    description="The first step's users; default: the load profile's peak.")
    max_users: int = Field(128, ge=1, strict=True, description="The ceiling: no step loads more.")
    resolution: float = Field(0.1, gt=0, lt=1, description="Bisect until the lowest failing step is within this "
                                                           "share (at least one user) of the highest passing.")
    step_duration_s: float = Field(30, gt=0, description="Each step's load, after its warm-up.")
    warmup_s: float = Field(5, ge=0, description="Requests starting this early in a step are not judged.")
    budget_s: float = Field(900, gt=0, description="No step starts that would end the search after this long.")
    peak_users: int | None = Field(None, ge=1, strict=True,
                                   description="Expected peak concurrency: the report says the replicas it needs.")
    max_drop: float = Field(0.15, gt=0, lt=1, description="Capacity may fall this share below the last passed "
                                                          "run's before the regression check fails.")

    @model_validator(mode="after")
    def _a_step_fits(self) -> CapacitySearch:
        if self.start_users is not None and self.start_users > self.max_users:
            raise ValueError(f"start_users {self.start_users} is above max_users {self.max_users}")
        if self.budget_s < self.warmup_s + self.step_duration_s:
            raise ValueError(f"budget_s {self.budget_s:g} holds not even one step of warmup_s + step_duration_s "
                             f"({self.warmup_s + self.step_duration_s:g} s)")
        return self


AUTOSCALING_SIGNALS = ("queue", "kv_cache", "gpu_utilization")
DEFAULT_TARGETS = {"queue": 1.0, "kv_cache": 0.8, "gpu_utilization": 90.0}


class Autoscaling(StrictModel):
    """A per-model scaling policy, rendered by the chart as an autoscaling/v2 HorizontalPodAutoscaler on a per-pod
    metric the cluster's custom metrics API serves (prometheus-adapter's vLLM and DCGM series)."""

    enabled: bool = Field(False, description="Render the HPA (the Deployment's replica count is then its).")
    min_replicas: int = Field(1, ge=1, strict=True)
    max_replicas: int = Field(2, ge=1, strict=True, description="Preflight checks the pool holds this many pods.")
    signal: Literal["queue", "kv_cache", "gpu_utilization"] = Field(
        "queue", description="queue: vllm:num_requests_waiting per pod (recommended: it rises exactly when a "
                             "replica is past its capacity); kv_cache: the KV cache's used share per pod; "
                             "gpu_utilization: DCGM_FI_DEV_GPU_UTIL (near 100 % whenever a model is loaded and "
                             "serving anything: a poor demand signal).")
    target: float | None = Field(None, gt=0,
                                 description="Per-pod average that triggers a scale-out: waiting requests, a "
                                             "KV-cache share (0-1), or GPU utilization percent; default 1 "
                                             "waiting request (any queue: a replica is past its capacity), 0.8 "
                                             "of the KV cache, 90 %.")
    metric_name: str | None = Field(None, min_length=1, description="The metric's name in the custom metrics "
                                                                     "API; default: the signal's series as "
                                                                     "prometheus-adapter names it for the "
                                                                     "image's vLLM release.")
    scale_up_stabilization_s: int = Field(0, ge=0, le=3600, strict=True)
    scale_down_stabilization_s: int = Field(600, ge=0, le=3600, strict=True,
                                            description="A new pod loads weights for minutes: scale in slowly.")
    pool: Literal["warn", "fail"] = Field("warn", description="Preflight, when the pool cannot hold max_replicas.")
    controller: Literal["hpa", "keda"] = Field(
        "hpa", description="hpa: an HPA on the custom metrics API; keda: a KEDA ScaledObject (Prometheus trigger) "
                           "where the cluster serves KEDA, else the HPA (listed as not shown).")
    # No user info: the URL lands in the chart's values and NOTES; credentials go in a KEDA TriggerAuthentication.
    keda_prometheus_url: str | None = Field(None, pattern=r"^https?://[^@\s]+$",
                                            description="The in-cluster Prometheus KEDA's trigger asks (controller "
                                                        "keda), without credentials.")
    # The autoscaling test: a load above one replica's capacity for scale_out_within_s + hold_s, then the wait for
    # the scale-in (the window and a minute).
    load_users: int | None = Field(None, ge=2, strict=True,
                                   description="The test's concurrent users; default: from one replica's "
                                               "capacity as this run's capacity search measured it (the most two "
                                               "replicas hold under a Service's random spread, at least knee + 2).")
    scale_out_within_s: int = Field(600, ge=15, le=3600, strict=True,
                                    description="How long into the load a new pod must serve (scheduling, image, "
                                                "weights and warm-up: minutes on GPUs).")
    hold_s: int = Field(60, ge=10, le=3600, strict=True,
                        description="How long the load runs past scale_out_within_s: its requests (once the new "
                                    "pods serve) are held to the latency SLOs.")

    @property
    def target_value(self) -> float:
        """The target, or the signal's default."""
        return self.target if self.target is not None else DEFAULT_TARGETS[self.signal]

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas {self.min_replicas} is above max_replicas {self.max_replicas}")
        if self.signal == "kv_cache" and self.target_value > 1:
            raise ValueError(f"target {self.target_value:g}: the KV cache's used share is between 0 and 1")
        if self.enabled and self.controller == "keda" and not self.keda_prometheus_url:
            raise ValueError("controller keda: set keda_prometheus_url, the Prometheus its trigger asks")
        if self.enabled and self.max_replicas < 2:
            raise ValueError("max_replicas 1 scales nothing: the autoscaling test needs room for a second pod")
        return self


class UsersProfile(StrictModel):
    kind: Literal["users"] = "users"
    users: int = Field(ge=1, strict=True, description="Concurrent streaming users.")
    duration_s: float = Field(gt=0, description="How long the load runs.")


class RampProfile(StrictModel):
    kind: Literal["ramp"] = "ramp"
    start_users: int = Field(ge=1, strict=True)
    end_users: int = Field(ge=1, strict=True)
    duration_s: float = Field(gt=0, description="Ramp from start_users to end_users over this long.")


class RateProfile(StrictModel):
    kind: Literal["rate"] = "rate"
    requests_per_s: float = Field(gt=0, description="Mean arrival rate; arrivals are Poisson.")
    duration_s: float = Field(gt=0)
    max_users: int = Field(64, ge=1, strict=True, description="Cap on requests in flight.")


Profile = Annotated[UsersProfile | RampProfile | RateProfile, Field(discriminator="kind")]


class Load(StrictModel):
    profile: Profile
    prompt_tokens: int = Field(gt=0, strict=True, description="Prompt length per request.")
    output_tokens: int = Field(gt=0, strict=True, description="Exact output length (max_tokens + ignore_eos).")


DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
KvCacheDtype = Literal["auto", "bfloat16", "float16", "fp8", "fp8_e4m3", "fp8_e5m2"]
KV_CACHE_DTYPES: tuple[str, ...] = get_args(KvCacheDtype)


class Architecture(StrictModel):
    """The model's facts that decide its GPU memory, from its config.json (no model hub is reachable to read them)."""

    num_hidden_layers: int = Field(gt=0, strict=True, description="config.json num_hidden_layers.")
    num_key_value_heads: int = Field(gt=0, strict=True, description="config.json num_key_value_heads (GQA).")
    head_dim: int = Field(gt=0, strict=True, description="config.json head_dim, else hidden_size / "
                                                          "num_attention_heads.")
    intermediate_size: int = Field(gt=0, strict=True, description="config.json intermediate_size (sizes the "
                                                                   "activation peak of vLLM's profiling run).")
    vocab_size: int = Field(gt=0, strict=True, description="config.json vocab_size (sizes the sampler's profiling).")
    max_position_embeddings: int = Field(gt=0, strict=True, description="config.json max_position_embeddings.")
    num_parameters: int | None = Field(None, gt=0, strict=True,
                                       description="Parameter count; the weights are this times the dtype's bytes.")
    weight_bytes: int | None = Field(None, gt=0, strict=True,
                                     description="Bytes of weights on the GPU, where known (wins over "
                                                 "num_parameters: quantized or mixed-precision checkpoints).")
    dtype: Literal["bfloat16", "float16", "float32"] = Field(description="config.json torch_dtype (vLLM's --dtype "
                                                                         "auto).")
    # auto stores the KV cache in the model's dtype; the fp8 ones use one byte per element.
    kv_cache_dtype: KvCacheDtype = Field(
        "auto", description="vLLM's --kv-cache-dtype; auto = dtype.")
    source: str = Field(description="Where these facts come from: the config.json URL, and the weights' source.")

    @model_validator(mode="after")
    def _weights_known(self) -> Architecture:
        if self.num_parameters is None and self.weight_bytes is None:
            raise ValueError("set num_parameters or weight_bytes: the weights' size decides what is left for the "
                             "KV cache")
        if "http" not in self.source:
            raise ValueError("source must cite where the facts come from by URL (the model's config.json)")
        return self

    @property
    def weights(self) -> int:
        """Bytes of weights on the GPU (all shards together)."""
        if self.weight_bytes is not None:
            return self.weight_bytes
        assert self.num_parameters is not None
        return self.num_parameters * DTYPE_BYTES[self.dtype]

    @property
    def kv_element_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype] if self.kv_cache_dtype == "auto" else (
            1 if self.kv_cache_dtype.startswith("fp8") else DTYPE_BYTES[self.kv_cache_dtype])


class Sizing(StrictModel):
    """What preflight does when the load profile's concurrency exceeds what the KV cache holds."""

    concurrency: Literal["warn", "fail"] = Field(
        "warn", description="warn: say so before the load test; fail: fail preflight (the load test would queue).")


class ModelSpec(StrictModel):
    """One model the gate can deploy, check and register."""

    # Helm release names are at most 53 characters (the rest of 63 is left for suffixes).
    name: str = Field(pattern=DNS1123_LABEL, max_length=53, description="Release and registry name.")
    display_name: str = Field(min_length=1, description="Human name shown by the router.")
    model_id: str = Field(min_length=1, description="Hugging Face model id vLLM loads.")
    served_model_name: str | None = Field(None, min_length=1,
                                          description="Name in /v1/models; defaults to model_id.")
    namespace: str = Field(pattern=DNS1123_LABEL, max_length=63)
    engine: Literal["vllm", "sim"] = Field("vllm", description="vllm, or the GPU-free simulator.")
    image: Image
    service: Service
    resources: Resources
    vllm: Engine
    network: Network = Field(default_factory=Network)
    monitoring: Monitoring = Field(default_factory=Monitoring)
    startup: Startup = Field(default_factory=Startup)
    model_cache: ModelCache = Field(default_factory=ModelCache)
    shutdown: Shutdown = Field(default_factory=Shutdown)
    scheduling: Scheduling = Field(default_factory=Scheduling)
    rollout: Rollout = Field(default_factory=Rollout)
    promotion: Promotion = Field(default_factory=Promotion)
    costs: Costs
    slo: Slos
    load: Load
    rehearsal: Rehearsal = Field(description="The simulator's latency profile for rehearsals (engine: sim).")
    identity: Identity = Field(default_factory=Identity)
    regression: Regression = Field(default_factory=Regression)
    architecture: Architecture | None = Field(
        None, description="The model's memory facts for GPU sizing (vllm-gate size, preflight); without them "
                          "preflight says sizing is not shown.")
    sizing: Sizing = Field(default_factory=Sizing)
    capacity: CapacitySearch = Field(default_factory=CapacitySearch)
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)

    @property
    def served_name(self) -> str:
        return self.served_model_name or self.model_id

    @property
    def in_cluster_url(self) -> str:
        return f"http://{self.service.name}.{self.namespace}.svc.cluster.local:{self.service.port}"

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        if self.vllm.tensor_parallel_size != self.resources.gpus:
            raise ValueError(f"vllm.tensor_parallel_size {self.vllm.tensor_parallel_size} must equal "
                             f"resources.gpus {self.resources.gpus} (one shard per GPU)")
        total = self.load.prompt_tokens + self.load.output_tokens
        if total > self.vllm.max_model_len:
            raise ValueError(f"load.prompt_tokens + load.output_tokens ({total}) exceed "
                             f"vllm.max_model_len {self.vllm.max_model_len}")
        if self.startup.assumes_warm_cache and self.model_cache.kind == "emptyDir":
            raise ValueError("startup.assumes_warm_cache needs a persistent model_cache (pvc or existingClaim): "
                             "an emptyDir starts empty in every new pod")
        return self


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into a path and a YAML-typed value, as ``helm --set`` does."""
    key, sep, raw = item.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise SpecError(f"--set {item}: expected KEY=VALUE with a dotted KEY, e.g. vllm.max_model_len=4096")
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError as exc:
        raise SpecError(f"--set {item}: value is not valid YAML ({exc.problem})") from exc
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return ``data`` with each ``--set KEY=VALUE`` applied (validation happens afterwards)."""
    merged = copy.deepcopy(data)
    for item in overrides:
        path, value = parse_override(item)
        node = merged
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise SpecError(f"--set {item}: {part} is not a mapping")
            node = child
        node[path[-1]] = value
    return merged


def resolve_path(ref: str, models_dir: Path) -> Path:
    """Turn ``llama3`` or ``path/to/spec.yaml`` into a spec file path."""
    if ref.endswith((".yaml", ".yml")) or "/" in ref:
        return Path(ref)
    return models_dir / f"{ref}.yaml"


def display_path(path: Path) -> str:
    """Return ``path`` relative to the working directory when it is below it (shorter messages)."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def available(models_dir: Path) -> list[str]:
    return sorted(p.stem for p in models_dir.glob("*.yaml"))


def _format_errors(where: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {loc or '(top level)'}: {msg}")
    return "\n".join(lines)


def load_spec(ref: str, models_dir: Path, overrides: list[str] | None = None) -> ModelSpec:
    """Load, override and validate a spec; any problem raises SpecError naming file and field."""
    path = resolve_path(ref, models_dir)
    shown = display_path(path)
    if not path.is_file():
        names = ", ".join(available(models_dir)) or "none"
        raise SpecError(f"{shown}: no such model spec (available in {models_dir}: {names})")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SpecError(f"{shown}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(data, dict):
        raise SpecError(f"{shown}: (top level): must be a mapping of spec fields, got {type(data).__name__}")
    data = apply_overrides(data, overrides or [])
    # A URL given with credentials (refused below) is echoed without them.
    where = shown + (f" (with --set {' '.join(redact_url(o) for o in overrides)})" if overrides else "")
    try:
        return ModelSpec.model_validate(data)
    except ValidationError as exc:
        message = _format_errors(where, exc)
        first, _, rest = message.partition("\n")
        raise SpecError(first, rest) from None
