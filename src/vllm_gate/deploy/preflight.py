"""Preflight: does the model fit the GPU pool, and may an upgrade surge? Decided before Helm touches the cluster.

The computation (``decide``) is pure: it takes the nodes and pods as plain records, so every rule
(tolerations, cordons, per-node fit, the surge pod) is testable without a cluster. ``preflight``
renders the chart locally (``helm template``) for the pod's needs, reads nodes and pods from the API,
and calls it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, Literal

from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.utils import parse_quantity
from urllib3.exceptions import HTTPError

from vllm_gate.base.errors import GateError
from vllm_gate.deploy.render import render_manifests
from vllm_gate.deploy.values import CHART_NAME, Strategy, chart_values
from vllm_gate.sizing.calibration import WORST_OVERESTIMATE
from vllm_gate.sizing.fit import breakdown, fit, gib, length_problem, safe_tokens, within_error
from vllm_gate.sizing.gpus import known_gpu_type
from vllm_gate.spec import ModelSpec

GPU_TYPE_LABEL = "gpu-type"
REQUEST_TIMEOUT_S = 15
# Taints with these effects keep a pod off the node unless tolerated; PreferNoSchedule is only a preference.
HARD_EFFECTS = ("NoSchedule", "NoExecute")
# Order of resources in messages, after the GPU (which comes first: it is what a pool runs out of).
SHOWN_ORDER = ("cpu", "memory", "ephemeral-storage")
BINARY_UNITS = (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10))

Choice = Literal["auto", "recreate", "rolling"]
Amounts = Mapping[str, Decimal]


class PreflightFailed(GateError):
    """The model cannot be deployed onto the pool as asked; the summary names the pool, free and needed."""


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str

    def __str__(self) -> str:
        return f"{self.key}={self.value}:{self.effect}" if self.value else f"{self.key}:{self.effect}"


@dataclass(frozen=True)
class Toleration:
    key: str = ""
    operator: str = "Equal"
    value: str = ""
    effect: str = ""

    def tolerates(self, taint: Taint) -> bool:
        """Kubernetes' rule: effect empty or equal, key empty (with Exists) or equal, value per operator."""
        if self.effect and self.effect != taint.effect:
            return False
        if self.operator == "Exists":
            return not self.key or self.key == taint.key
        return self.key == taint.key and self.value == taint.value


@dataclass(frozen=True)
class NodeInfo:
    name: str
    labels: Mapping[str, str]
    unschedulable: bool
    taints: tuple[Taint, ...]
    allocatable: Amounts


@dataclass(frozen=True)
class PodUse:
    """What one non-terminal pod bound to a node requests; ``own`` marks the release's current pods."""

    node: str
    requests: Amounts
    own: bool


@dataclass(frozen=True)
class Need:
    """What the model's pods need: per pod, how many, where, and the spec's rollout choice."""

    gpu_resource: str
    gpu_type: str
    node_selector: Mapping[str, str]
    tolerations: tuple[Toleration, ...]
    per_pod: Amounts
    replicas: int
    choice: Choice
    surge_blocker: str | None = None  # why a surge pod could not run beside the old one, whatever the GPUs
    max_replicas: int = 0  # what an autoscaler may scale the pods to (0: no autoscaler)
    room_or_fail: Literal["warn", "fail"] = "warn"  # when the pool cannot hold max_replicas


@dataclass(frozen=True)
class Decision:
    """The Deployment strategy the rollout uses, and one line saying why (for the report)."""

    strategy: Strategy
    reason: str
    autoscaling: str = ""  # whether the pool holds the autoscaler's max_replicas (a warning where it does not)


def check_sizing(spec: ModelSpec, *, refuse: bool = True) -> tuple[str, ...]:
    """Does the spec's model fit its GPU type (vllm_gate.sizing)? Lines to print, or PreflightFailed.

    A max_model_len vLLM would refuse at start-up (above the model's max_position_embeddings, or more than the KV
    cache holds for one request) fails, unless ``refuse`` is off (a server already running: said as a warning); a
    fit within the estimate's error, and a load profile that needs more concurrent requests than the KV cache holds,
    are warnings (the load a failure with ``sizing.concurrency: fail``). Where the model or the GPU type is unknown,
    the sizing is not shown.
    """
    gpu = known_gpu_type(spec.resources.gpu_type)
    if spec.architecture is None:
        return ("vllm-gate: sizing not shown: the spec has no architecture section (vllm-gate size needs it)",)
    if gpu is None:
        return (f"vllm-gate: sizing not shown: gpu_type {spec.resources.gpu_type} is not in the sizing table "
                "(vllm-gate size lists the known ones)",)
    result = fit(spec, gpu)
    problem = length_problem(spec, result)
    if problem is not None:
        if refuse:
            raise PreflightFailed(problem)
        return (f"vllm-gate: WARNING sizing: {problem.removeprefix('preflight: ')}",)
    est = result.estimate
    lines = [f"vllm-gate: sizing (estimate): {spec.name} on {gpu.name}: KV cache {gib(est.kv_cache_bytes)} = "
             f"{est.kv_cache_tokens:,} tokens ({breakdown(est)}); max_model_len {est.max_model_len} fits one "
             f"request (largest {est.largest_max_model_len:,}); {result.concurrency} requests of "
             f"{result.tokens_per_request} tokens fit at once, the load profile keeps {result.load_concurrency} in "
             "flight"]
    if within_error(result):
        lines.append(f"vllm-gate: WARNING sizing: max_model_len {est.max_model_len} fits by {gib(est.kv_cache_bytes)} "
                     f"of KV cache, but not by the estimate less its worst held-out error ({WORST_OVERESTIMATE:.1%}, "
                     f"{safe_tokens(est):,} tokens): vLLM may refuse to start")
    if not result.load_fits:
        problem = (f"the load profile keeps {result.load_concurrency} requests of {result.tokens_per_request} "
                   f"tokens in flight, the KV cache of {spec.name} on {gpu.name} holds {result.concurrency}: the "
                   "rest queue and the load test's latency shows it")
        if spec.sizing.concurrency == "fail" and refuse:
            raise PreflightFailed(f"preflight: {problem} (sizing.concurrency: fail); lower the load's users, or "
                                  "raise vllm.gpu_memory_utilization or the GPU type")
        lines.append(f"vllm-gate: WARNING sizing: {problem} (sizing.concurrency: fail makes this a failure)")
    if result.load_concurrency > est.max_num_seqs:
        lines.append(f"vllm-gate: WARNING sizing: the load profile keeps {result.load_concurrency} requests in "
                     f"flight, vLLM runs at most max_num_seqs {est.max_num_seqs} at once")
    return tuple(lines)


def need_of(spec: ModelSpec) -> Need:
    """What ``spec``'s pods ask of the pool, read from the Deployment the chart renders for it.

    The rendered pod template is what the scheduler will see (requests the chart adds, such as an emptyDir
    cache's ephemeral-storage, included), so the preflight never re-derives the chart's logic.
    """
    values = chart_values(spec)
    deployment = next(d for d in render_manifests(spec, values) if d["kind"] == "Deployment"
                      and "helm.sh/hook" not in (d["metadata"].get("annotations") or {}))
    pod = deployment["spec"]["template"]["spec"]
    return Need(
        gpu_resource=values["gpu"]["resourceName"], gpu_type=spec.resources.gpu_type,
        node_selector=dict(pod.get("nodeSelector") or {}),
        tolerations=tuple(Toleration(t.get("key", ""), t.get("operator", "Equal"), t.get("value", ""),
                                     t.get("effect", "")) for t in pod.get("tolerations") or []),
        # With an autoscaler the Deployment sets no replica count: the HPA starts it at min_replicas.
        per_pod=pod_requests(pod), replicas=int(deployment["spec"].get("replicas", spec.autoscaling.min_replicas)),
        choice=spec.rollout.strategy, surge_blocker=cache_surge_blocker(spec),
        max_replicas=spec.autoscaling.max_replicas if spec.autoscaling.enabled else 0,
        room_or_fail=spec.autoscaling.pool)


def cache_surge_blocker(spec: ModelSpec, claim_modes: Sequence[str] = ()) -> str | None:
    """Why the model cache keeps a surge pod from starting beside the old one, or None.

    A claim that is not ReadWriteMany mounts on one node (ReadWriteOncePod: one pod): a surge pod placed on
    another node waits on a Multi-Attach error, and maxUnavailable 0 keeps the rollout stuck there.
    ``claim_modes`` are an existing claim's access modes, read from the cluster.
    """
    cache = spec.model_cache
    if cache.kind == "emptyDir":
        return None
    modes = [cache.access_mode or "ReadWriteOnce"] if cache.kind == "pvc" else list(claim_modes)
    if "ReadWriteMany" in modes:
        return None
    what = f"claim {cache.claim_name}" if cache.kind == "existingClaim" else "claim the chart creates"
    return (f"the model cache {what} is {' '.join(modes) or 'of unknown access mode'}, not ReadWriteMany: a surge "
            "pod on another node could not mount it")


def unusable_because(node: NodeInfo, tolerations: Sequence[Toleration]) -> str | None:
    """Why the scheduler would never place the model's pod on ``node`` (its labels aside), or None."""
    if node.unschedulable:
        return "cordoned"
    for taint in node.taints:
        if taint.effect in HARD_EFFECTS and not any(t.tolerates(taint) for t in tolerations):
            return f"taint {taint} not tolerated"
    return None


def fits(free: Amounts, per_pod: Amounts) -> int:
    """How many pods of size ``per_pod`` fit into ``free`` on one node (a pod never spans nodes)."""
    counts = [int(free.get(name, Decimal(0)) // amount) for name, amount in per_pod.items() if amount > 0]
    return max(0, min(counts)) if counts else 0


def _plus(base: Amounts, uses: Iterable[Amounts], sign: int = 1) -> dict[str, Decimal]:
    total = dict(base)
    for use in uses:
        for name, amount in use.items():
            total[name] = total.get(name, Decimal(0)) + sign * amount
    return total


def _minus(base: Amounts, uses: Iterable[Amounts]) -> dict[str, Decimal]:
    return _plus(base, uses, -1)


def _peak(a: Amounts, b: Amounts) -> dict[str, Decimal]:
    return {k: max(a.get(k, Decimal(0)), b.get(k, Decimal(0))) for k in {*a, *b}}


def decide(need: Need, nodes: Sequence[NodeInfo], pods: Sequence[PodUse]) -> Decision:
    """Choose Recreate or RollingUpdate for ``need`` on this pool, or raise PreflightFailed.

    Recreate stops the release's current pods first, so their share counts as free. RollingUpdate
    (maxSurge 1, maxUnavailable 0) keeps them until each replacement is Ready: it needs room for one
    surge pod beside them (for a fresh install or a scale-up: every missing pod plus the surge), and
    room for all replicas once the old pods are gone. With one replica that is exact; with more it
    assumes a removed old pod's place fits a new one.
    """
    pool = [n for n in nodes if all(n.labels.get(k) == v for k, v in need.node_selector.items())]
    excluded = {n.name: why for n in pool if (why := unusable_because(n, need.tolerations))}
    usable = [n for n in pool if n.name not in excluded]
    where = f"gpu-type={need.gpu_type}"
    pod = _pod_text(need)
    if not usable:
        raise PreflightFailed(f"preflight: {_pods(need.replicas)} of ({pod}) needed, but no schedulable node "
                              f"has {where}{_excluded_text(excluded) or _other_pools(nodes)}")
    own_count = sum(1 for p in pods if p.own)
    after_old = {n.name: _minus(n.allocatable, (p.requests for p in pods if p.node == n.name and not p.own))
                 for n in usable}
    now = {n.name: _minus(after_old[n.name], (p.requests for p in pods if p.node == n.name and p.own))
           for n in usable}
    fit_after_old = sum(fits(free, need.per_pod) for free in after_old.values())
    fit_now = sum(fits(free, need.per_pod) for free in now.values())
    surge = max(need.replicas - own_count, 0) + 1
    tail = _excluded_text(excluded) or f" (no other node has {where})"
    stopped = f", counting the release's {_pods(own_count, 'current pod')} as stopped" if own_count else ""
    if fit_after_old < need.replicas:
        one_node = " on one node" if need.replicas == 1 else ", each on one node"
        raise PreflightFailed(
            f"preflight: {_pods(need.replicas)} of ({pod}) needed{one_node} of {where}, {fit_after_old} fit; "
            f"{_free_text(need, after_old)}{stopped}{tail}")
    if own_count:
        room = f"room for {_pods(surge, 'more pod')} beside the release's {_pods(own_count, 'current pod')}"
    else:
        room = f"room for {_pods(surge)} ({need.replicas} new + 1 spare: no current pods)"
    beside = f"{room}, {fit_now} fit; {_free_text(need, now)}{tail}"
    if need.choice == "rolling" and need.surge_blocker:
        raise PreflightFailed(f"preflight: rollout.strategy rolling is impossible: {need.surge_blocker}")
    if need.choice == "auto" and need.surge_blocker:
        return Decision("Recreate", f"preflight: Recreate: {need.surge_blocker}; {_pods(need.replicas)} of ({pod}) "
                                    f"fit on {where}; {_free_text(need, after_old)}{stopped}{tail}")
    if need.choice == "rolling" and fit_now < surge:
        raise PreflightFailed(f"preflight: rollout.strategy rolling needs a spare ({pod}) on {where} for the "
                              f"surge pod: {beside}")
    if need.choice != "recreate" and fit_now >= surge:
        return Decision("RollingUpdate",
                        f"preflight: RollingUpdate (maxSurge 1, maxUnavailable 0): a spare ({pod}) on {where} "
                        f"for the surge pod, so the old pod serves until the new one is Ready: {beside}")
    if need.choice == "recreate":
        return Decision("Recreate", f"preflight: Recreate (rollout.strategy: recreate): {_pods(need.replicas)} of "
                                    f"({pod}) fit on {where}; {_free_text(need, after_old)}{stopped}{tail}")
    return Decision("Recreate", f"preflight: Recreate: no spare ({pod}) on {where} for a surge pod, so an "
                                f"upgrade stops the old pod before the new one starts (an outage): {beside}")


def autoscaling_room(need: Need, nodes: Sequence[NodeInfo], pods: Sequence[PodUse]) -> str:
    """Whether the pool holds the autoscaler's max_replicas pods beside everything else that runs (the release's own
    pods counted as its); a line for the report, or PreflightFailed where the spec says fail. "" without one."""
    if not need.max_replicas:
        return ""
    usable = [n for n in nodes if all(n.labels.get(k) == v for k, v in need.node_selector.items())
              and not unusable_because(n, need.tolerations)]
    free = [_minus(n.allocatable, (p.requests for p in pods if p.node == n.name and not p.own)) for n in usable]
    room = sum(fits(f, need.per_pod) for f in free)
    where = f"gpu-type={need.gpu_type}"
    if room >= need.max_replicas:
        return (f"preflight: autoscaling: room for {_pods(room)} of ({_pod_text(need)}) on {where}, max_replicas "
                f"{need.max_replicas} fits")
    problem = (f"autoscaling.max_replicas {need.max_replicas} needs {_pods(need.max_replicas)} of "
               f"({_pod_text(need)}) on {where}; the pool holds {room} beside what runs there: the autoscaler "
               f"would leave {_pods(need.max_replicas - room)} Pending")
    if need.room_or_fail == "fail":
        raise PreflightFailed(f"preflight: {problem} (autoscaling.pool: fail)")
    return f"preflight: WARNING {problem} (autoscaling.pool: fail makes this a failure)"


def _pods(count: int, noun: str = "pod") -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _pod_text(need: Need) -> str:
    names = [need.gpu_resource, *(n for n in SHOWN_ORDER if n in need.per_pod),
             *sorted(n for n in need.per_pod if n != need.gpu_resource and n not in SHOWN_ORDER)]
    return " + ".join(f"{_amount(n, need.per_pod[n])} {n}" for n in names if need.per_pod[n] > 0)


def _free_text(need: Need, free: Mapping[str, Amounts]) -> str:
    """Free amounts per node: the GPU, plus any resource that is short on some node."""
    short = sorted(n for n, amount in need.per_pod.items()
                   if n != need.gpu_resource and amount > 0 and any(f.get(n, Decimal(0)) < amount
                                                                    for f in free.values()))
    names = [need.gpu_resource, *short]

    def left(f: Amounts, name: str) -> str:
        return _amount(name, max(f.get(name, Decimal(0)), Decimal(0)))

    if not short:
        return f"free {need.gpu_resource}: " + ", ".join(f"{node} {left(f, need.gpu_resource)}"
                                                        for node, f in sorted(free.items()))
    return "free: " + ", ".join(f"{node} " + " + ".join(f"{left(f, n)} {n}" for n in names)
                                for node, f in sorted(free.items()))


def _excluded_text(excluded: Mapping[str, str]) -> str:
    if not excluded:
        return ""
    return "; not usable: " + ", ".join(f"{name} {why}" for name, why in sorted(excluded.items()))


def _other_pools(nodes: Sequence[NodeInfo]) -> str:
    types: dict[str, list[str]] = {}
    for node in nodes:
        if GPU_TYPE_LABEL in node.labels:
            types.setdefault(node.labels[GPU_TYPE_LABEL], []).append(node.name)
    if not types:
        return "; no node has a gpu-type label"
    return "; the cluster has gpu-type " + ", ".join(f"{t} ({', '.join(sorted(n))})" for t, n in sorted(types.items()))


def _amount(name: str, value: Decimal) -> str:
    if name in ("memory", "ephemeral-storage") or name.startswith("hugepages-"):
        for unit, size in BINARY_UNITS:
            if value >= size:
                return f"{(value / size).quantize(Decimal('0.1')).normalize():f}{unit}"
    return f"{value.normalize():f}"


def pod_requests(pod: Mapping[str, Any]) -> dict[str, Decimal]:
    """A pod spec's effective request, as the scheduler counts it (init containers, sidecars, overhead).

    ``pod`` is a pod spec as the API serializes it (camelCase keys), from a rendered manifest or a live pod.
    """
    def requests(container: Mapping[str, Any]) -> dict[str, Decimal]:
        return {k: parse_quantity(v) for k, v in ((container.get("resources") or {}).get("requests") or {}).items()}

    sidecars: dict[str, Decimal] = {}
    init_peak: dict[str, Decimal] = {}
    for init in pod.get("initContainers") or []:
        # A sidecar (restartPolicy Always) keeps running beside everything that starts after it.
        step = _plus(sidecars, [requests(init)])
        if init.get("restartPolicy") == "Always":
            sidecars = step
        init_peak = _peak(init_peak, step)
    regular = _plus(sidecars, (requests(c) for c in pod.get("containers") or []))
    overhead = {k: parse_quantity(v) for k, v in (pod.get("overhead") or {}).items()}
    return _plus(_peak(regular, init_peak), [overhead])


def node_info(node: client.V1Node) -> NodeInfo:
    return NodeInfo(
        name=node.metadata.name, labels=dict(node.metadata.labels or {}),
        unschedulable=bool(node.spec.unschedulable),
        taints=tuple(Taint(t.key, t.value or "", t.effect) for t in node.spec.taints or []),
        allocatable={k: parse_quantity(v) for k, v in (node.status.allocatable or {}).items()})


def pod_uses(pods: Iterable[Mapping[str, Any]], namespace: str, release: str) -> list[PodUse]:
    """Bound, non-terminal pods (as the API serializes them) as PodUse; the release's own are marked."""
    uses = []
    for pod in pods:
        node = pod["spec"].get("nodeName")
        if not node or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        meta = pod["metadata"]
        labels = meta.get("labels") or {}
        own = (meta.get("namespace") == namespace and labels.get("app.kubernetes.io/instance") == release
               and labels.get("app.kubernetes.io/name") == CHART_NAME)
        uses.append(PodUse(node, pod_requests(pod["spec"]), own))
    return uses


def check_pool(spec: ModelSpec, api: client.ApiClient, release: str | None = None) -> Decision:
    """Read nodes and pods, then decide (see ``decide``) for ``release`` (default: the spec's own); raise
    PreflightFailed when the model cannot fit. Only that release's pods count as replaced: a candidate release
    (its own name) needs room beside every pod that runs."""
    core = client.CoreV1Api(api)
    try:
        nodes = core.list_node(_request_timeout=REQUEST_TIMEOUT_S).items
        pods = core.list_pod_for_all_namespaces(field_selector="status.phase!=Succeeded,status.phase!=Failed",
                                                _request_timeout=REQUEST_TIMEOUT_S).items
    except ApiException as exc:
        raise PreflightFailed(f"preflight: cannot list nodes and pods (HTTP {exc.status} {exc.reason}); the gate "
                              "needs list on nodes and pods to check the GPU pool") from None
    except HTTPError as exc:
        raise PreflightFailed(f"preflight: cannot list nodes and pods: {' '.join(str(exc).split())[:200]}") from None
    serialized = [api.sanitize_for_serialization(p) for p in pods]
    need = need_of(spec)
    if spec.model_cache.kind == "existingClaim":
        need = replace(need, surge_blocker=cache_surge_blocker(spec, _claim_modes(core, spec)))
    infos, uses = [node_info(n) for n in nodes], pod_uses(serialized, spec.namespace, release or spec.name)
    return replace(decide(need, infos, uses), autoscaling=autoscaling_room(need, infos, uses))


def _claim_modes(core: client.CoreV1Api, spec: ModelSpec) -> list[str]:
    try:
        claim = core.read_namespaced_persistent_volume_claim(spec.model_cache.claim_name, spec.namespace,
                                                             _request_timeout=REQUEST_TIMEOUT_S)
    except ApiException as exc:
        if exc.status == 404:
            raise PreflightFailed(f"preflight: model_cache.claim_name {spec.model_cache.claim_name}: no such "
                                  f"PersistentVolumeClaim in {spec.namespace}") from None
        raise PreflightFailed(f"preflight: cannot read PersistentVolumeClaim {spec.namespace}/"
                              f"{spec.model_cache.claim_name} (HTTP {exc.status} {exc.reason})") from None
    except HTTPError as exc:
        raise PreflightFailed(f"preflight: cannot read PersistentVolumeClaim {spec.namespace}/"
                              f"{spec.model_cache.claim_name}: {' '.join(str(exc).split())[:200]}") from None
    return list(claim.spec.access_modes or [])

