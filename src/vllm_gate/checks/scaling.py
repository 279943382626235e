"""Whether a model's scaling policy scales, judged from what the autoscaling test read: under a load above one
replica's capacity the HPA adds pods, they serve (Ready, in the Service's endpoints, answering requests) and the
latency SLOs hold again; after the load it removes them, no sooner than its scale-down window, never below
min_replicas. Also: the test's load and the queue target a measured capacity implies."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from vllm_gate.base.errors import GateError
from vllm_gate.load.capacity import Capacity, Step, judge
from vllm_gate.load.incluster import load_budget_s
from vllm_gate.load.samples import LoadRun, RequestSample
from vllm_gate.sizing.fit import engine_settings
from vllm_gate.sizing.gpus import known_gpu_type
from vllm_gate.spec import Autoscaling, Load, ModelSpec, Slos, UsersProfile

# After the window: the controller's 15 s sync, and a removed pod's graceful stop leaving the endpoints.
SCALE_IN_ALLOWANCE_S = 60
SCALE_DOWN_PERIOD_S = 120  # the chart's scale-down policy: one pod every two minutes (vllm.scalingBehavior)
# How stale the HPA's status may be: the controller writes it every 15 s sync; the test reads it every 2 s.
STATUS_LAG_S = 19
OVERFLOW_RISK = 0.01  # the test's load: how likely a random spread may overload one of two replicas


@dataclass(frozen=True)
class ScalePoint:
    """One reading: what the HPA wanted and had, what serves, and the metric it scaled on."""

    at: float  # epoch seconds, like the load samples' starts
    desired: int
    current: int
    ready: int  # the Deployment's Ready pods
    serving: int  # Ready endpoints in the Service's EndpointSlices: pods the Service sends requests to
    metric: float | None  # the HPA's current per-pod average of its metric; None: not read

    def as_dict(self) -> dict[str, Any]:
        return {"at": round(self.at, 3), "desired": self.desired, "current": self.current, "ready": self.ready,
                "serving": self.serving, "metric": self.metric}


def scale_in_s(policy: Autoscaling, peak: int) -> float:
    """How long after the load the autoscaler may take to go from ``peak`` pods back to min_replicas: its window,
    then the first pod at once and each further one a scale-down period later, and the allowance."""
    return (policy.scale_down_stabilization_s + max(0, peak - policy.min_replicas - 1) * SCALE_DOWN_PERIOD_S
            + SCALE_IN_ALLOWANCE_S)


@dataclass(frozen=True)
class Scaling:
    """One scaling test: its load, the readings, and the SLOs judged once the new pods served."""

    metric: str
    target: float
    min_replicas: int
    max_replicas: int
    users: int
    window_s: int  # the scale-down stabilization window
    within_s: int  # how long the load may run before a new pod serves
    scale_in_limit_s: float  # how long after the load the scale-in may take (scale_in_s)
    load_started: float  # its first request
    load_ended: float  # its last request's end
    points: tuple[ScalePoint, ...]
    # The requests of the load's last hold_s that started once the new pods served and the backlog before them had
    # drained, against the latency SLOs.
    after_scale_out: Step | None
    # Requests each pod answered from the scale-out to the load's end (Prometheus); None: not read, and why.
    served_by_pod: Mapping[str, float] | None = None
    served_unread: str = "not read"
    implied_target: float | None = None  # the queue target this run's measured capacity implies (queue_target)
    implied_from: str = ""  # from what: "capacity 4 users per replica, max_num_seqs 4"
    samples: tuple[RequestSample, ...] = field(default=(), repr=False)  # the test's requests (the report's plot)

    def _first(self, since: float, test: Callable[[ScalePoint], bool]) -> ScalePoint | None:
        return next((p for p in self.points if p.at >= since and test(p)), None)

    @property
    def scaled_out(self) -> ScalePoint | None:
        """The first reading with more pods serving than min_replicas, once the load started."""
        return self._first(self.load_started, lambda p: p.serving > self.min_replicas)

    @property
    def peak(self) -> int:
        """The most pods that served at once."""
        return max((p.serving for p in self.points), default=0)

    @property
    def peak_during_load(self) -> int:
        """The most pods that served at once from the scale-out to the load's end: those the load could reach."""
        out = self.scaled_out
        return max((p.serving for p in self.points if out and out.at <= p.at <= self.load_ended), default=0)

    @property
    def scaled_in(self) -> ScalePoint | None:
        """The first reading after the scale-out with min_replicas serving and the HPA wanting no more."""
        out = self.scaled_out
        if out is None:
            return None
        return self._first(out.at, lambda p: p.serving <= self.min_replicas and p.desired <= self.min_replicas)

    @property
    def first_removal(self) -> ScalePoint | None:
        """The first reading, after the scale-out, at which the HPA wanted fewer pods than it had."""
        out = self.scaled_out
        if out is None:
            return None
        return self._first(out.at, lambda p: 0 < p.desired < p.current)

    @property
    def last_above_target(self) -> float:
        """The last reading at which the metric was above target (the window counts from there), else the load's
        end."""
        above = [p.at for p in self.points if p.metric is not None and p.metric > self.target]
        return max(above, default=self.load_ended)

    def problems(self) -> list[str]:
        found: list[str] = []
        if self.implied_target is not None and self.target > self.implied_target:
            found.append(f"target {self.target:g} waiting requests per pod scales out only past the capacity this run "
                         f"measured ({self.implied_from}): set autoscaling.target to {self.implied_target:g}")
        out = self.scaled_out
        if out is None:
            wanted = max((p.desired for p in self.points), default=0)
            values = [p.metric for p in self.points if p.metric is not None]
            seen = f"averaged at most {max(values):g} per pod" if values else "was never read"
            found.append(f"did not scale out under {self.users} users within {self.within_s} s: the HPA wanted "
                         f"{wanted} replica(s) at most; {self.metric} {seen} (target {self.target:g})")
            return found
        if out.at - self.load_started > self.within_s:
            found.append(f"scaled out too late: a new pod served {out.at - self.load_started:.0f} s into the load, "
                         f"past autoscaling.scale_out_within_s {self.within_s} s")
        low = [p for p in self.points if 0 < p.current < self.min_replicas]
        if low:
            found.append(f"went below min_replicas {self.min_replicas}: {low[0].current} replica(s)")
        found += self._removal_problems(out)
        found += self._serving_problems()
        step = self.after_scale_out
        if step is None or step.requests == 0:
            found.append("no request started in the load's last hold_s once the new pods served: the SLOs after "
                         "scaling out are not shown")
        elif not step.passed:
            found.append(f"after scaling out to {self.peak} pods, {', '.join(step.broke)} still broke its SLO "
                         f"({step.requests} requests)")
        return found

    def _removal_problems(self, out: ScalePoint) -> list[str]:
        removal = self.first_removal
        if removal is not None and removal.at < self.load_ended:
            return [f"removed a pod while the load ran ({removal.at - out.at:.0f} s after scaling out): the "
                    f"scale-down window ({self.window_s} s) is shorter than the time {self.metric} stayed under its "
                    "target once the new pods served"]
        if removal is not None and removal.at - self.last_above_target < self.window_s - STATUS_LAG_S:
            return [f"scaled in {removal.at - self.last_above_target:.0f} s after the metric was last above target, "
                    f"sooner than its scale-down window ({self.window_s} s)"]
        back = self.scaled_in
        if back is None or back.at - self.load_ended > self.scale_in_limit_s:
            return [f"did not scale back in to {self.min_replicas} replica(s) within {self.scale_in_limit_s:.0f} s "
                    f"of the load's end (its {self.window_s} s window, a pod every {SCALE_DOWN_PERIOD_S} s after the "
                    f"first, and {SCALE_IN_ALLOWANCE_S} s)" + ("" if back is None else
                                                                f": it took {back.at - self.load_ended:.0f} s")]
        return []

    def _serving_problems(self) -> list[str]:
        """The new pods answered requests: being in the Service is not serving if the clients never reach them."""
        if self.served_by_pod is None:
            return [f"which pods answered the load after the scale-out is not shown: {self.served_unread}"]
        answering = sorted(pod for pod, requests in self.served_by_pod.items() if requests > 0)
        if len(answering) < self.peak_during_load:
            return [f"{self.peak_during_load} pods served, but only {len(answering)} answered requests after the "
                    f"scale-out ({', '.join(answering) or 'none'}): the load's clients never reached the new pods"]
        return []

    def headline(self) -> str:
        out, back = self.scaled_out, self.scaled_in
        if out is None:
            return f"autoscaling: {self.users} users; no scale-out within {self.within_s} s"
        text = (f"autoscaling: {self.users} users; scaled out to {self.peak} pods serving "
                f"{out.at - self.load_started:.0f} s into the load")
        if back is not None:
            text += f", back to {self.min_replicas} {back.at - self.load_ended:.0f} s after it"
        return text

    def summary(self) -> dict[str, Any]:
        out, back = self.scaled_out, self.scaled_in
        step = self.after_scale_out
        return {"metric": self.metric, "target": self.target, "implied_target": self.implied_target,
                "implied_from": self.implied_from, "users": self.users,
                "min_replicas": self.min_replicas, "max_replicas": self.max_replicas, "peak_serving": self.peak,
                "scale_out_s": None if out is None else round(out.at - self.load_started, 1),
                "scale_in_s": None if back is None else round(back.at - self.load_ended, 1),
                "window_s": self.window_s, "load_s": round(self.load_ended - self.load_started, 1),
                "served_by_pod": dict(self.served_by_pod) if self.served_by_pod is not None else None,
                "after_scale_out": None if step is None else {
                    "passed": step.passed, "broke": list(step.broke), "requests": step.requests,
                    "values": {k: v if math.isfinite(v) else None for k, v in step.values.items()}},
                "problems": self.problems(), "points": [p.as_dict() for p in self.points]}


def overflow(users: int, capacity_users: int) -> float:
    """How likely a Service that spreads ``users`` connections at random over two pods puts more than
    ``capacity_users`` on one of them (kube-proxy picks a pod per connection)."""
    if users > 2 * capacity_users:
        return 1.0
    return 2 * sum(math.comb(users, k) for k in range(capacity_users + 1, users + 1)) / 2 ** users


def load_users(capacity_users: int) -> int:
    """The test's load from one replica's capacity: the most users two replicas hold with 99 % probability under a
    Service's random spread, and at least two above one replica's capacity (a queue the HPA sees); at small
    capacities that floor is all there is (4 per replica: 6 users, 22 % of spreads overload a pod)."""
    floor = capacity_users + 2
    fitting = [n for n in range(floor, 2 * capacity_users + 1) if overflow(n, capacity_users) <= OVERFLOW_RISK]
    return max(fitting, default=floor)


def scaling_users(policy: Autoscaling, capacity: Capacity | None) -> int:
    """The autoscaling test's users: the spec's, else from the knee this run's capacity search measured; GateError
    where there is neither."""
    if policy.load_users:
        return policy.load_users
    if capacity is None or not capacity.complete or not capacity.knee:
        why = "its search did not find a knee" if capacity else "no capacity search ran"
        raise GateError(f"autoscaling: no load above one replica's capacity to test the policy with ({why}): set "
                        "autoscaling.load_users, or search it (capacity.enabled: true or --find-capacity)")
    return load_users(capacity.knee)


def queue_target(capacity_users: int, max_num_seqs: int) -> float:
    """The per-pod waiting-requests target a measured capacity implies: vLLM queues only past max_num_seqs running
    requests, so a replica that holds ``capacity_users`` within its SLOs should scale out at that many in flight;
    where it breaks them before it queues, any queue at all is already past its capacity."""
    return float(max(1, capacity_users - max_num_seqs))


def implied(spec: ModelSpec, stand_in: str, capacity: Capacity | None) -> tuple[float | None, str]:
    """The queue target this run's capacity implies, and from what; (None, "") where none is implied: another
    signal, no complete search, or an engine whose max_num_seqs is not known here (the CPU build's)."""
    if spec.autoscaling.signal != "queue" or capacity is None or not capacity.complete or not capacity.knee:
        return None, ""
    if stand_in == "sim":
        seqs = spec.rehearsal.max_num_seqs
    elif stand_in == "":
        seqs = engine_settings(spec, known_gpu_type(spec.resources.gpu_type)).max_num_seqs
    else:
        return None, ""
    return queue_target(capacity.knee, seqs), f"capacity {capacity.knee} users per replica, max_num_seqs {seqs}"


def scaling_load(load: Load, users: int, policy: Autoscaling) -> Load:
    """The spec's requests, from ``users`` closed-loop users for scale_out_within_s + hold_s."""
    return load.model_copy(update={"profile": UsersProfile(users=users, duration_s=policy.scale_out_within_s
                                                                                   + policy.hold_s)})


def scaling_budget_s(load: Load, policy: Autoscaling) -> float:
    """What the test may take: the wait for min_replicas before it and for the scale-in from max_replicas after it,
    and its load (pods, copy-out included)."""
    return load_budget_s(scaling_load(load, 2, policy)) + 2 * scale_in_s(policy, policy.max_replicas)


def judged(load: LoadRun, started: float, points: tuple[ScalePoint, ...], policy: Autoscaling, metric: str,
           users: int, slos: Slos, *, implied: tuple[float | None, str] = (None, "")) -> Scaling:
    """The readings, with the requests of the load's last hold_s that started once a new pod served (and what queued
    before it had finished) held to the latency SLOs. Which pods answered the load comes from Prometheus
    (served_by_pod, set by the caller)."""
    samples = load.samples
    # The load ran from its first request to its last one's end (its pods start before, and stop after, that).
    began = min((s.start for s in samples), default=started)
    ended = max((s.start + s.e2e_s for s in samples), default=started)
    peak = max((max(p.current, p.serving) for p in points), default=0)  # pods still loading count: each goes too
    base = Scaling(metric, policy.target_value, policy.min_replicas, policy.max_replicas, users,
                   policy.scale_down_stabilization_s, policy.scale_out_within_s, scale_in_s(policy, peak), began,
                   ended, points, None, None, "not read", *implied, samples=tuple(samples))
    out = base.scaled_out
    if out is None:
        return base
    # The SLOs must hold again in the load's last hold_s (from scale_out_within_s on: by then a new pod serves, or
    # the test fails as too late): clients that keep their connections move to the new pods only as they reconnect,
    # and requests queued on the first pod before the scale-out still wait there (measured: 12 s of 3 s TTFTs after
    # a scale-out at 25 s, 21 users). Held from the latest of the three.
    drained = max((s.start + s.e2e_s for s in samples if s.start < out.at), default=out.at)
    after = [s for s in samples if s.start >= max(out.at, drained, began + policy.scale_out_within_s)]
    return replace(base, after_scale_out=judge(users, after, slos, 0.0, ended - out.at) if after else None)
