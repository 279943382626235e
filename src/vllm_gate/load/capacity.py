"""The capacity search: the highest concurrency one replica serves with every latency SLO and the error rate held.

An exponential climb from the load profile's concurrency (doubling until a step breaks an SLO or the ceiling
holds), then bisection between the highest passing and the lowest failing step until they are within the stated
resolution, or the time budget would be overrun by one more step. Each step is a closed-loop load of N users for
the step's duration; requests that start within its warm-up are dropped before judging, so a step measures the
steady state, not the ramp. Throughput and goodput floors are not part of the knee (they grow with concurrency);
each step's output tokens/s is kept for the curve.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from vllm_gate.load.samples import RequestSample
from vllm_gate.load.slo import load_stats, slo_verdict
from vllm_gate.sizing.fit import load_concurrency
from vllm_gate.spec import CapacitySearch, Load, Slos, UsersProfile

# The SLOs the knee is judged by: every latency percentile and the error rate (slo_verdict's names).
JUDGED_PREFIXES = ("ttft p", "itl p", "e2e p")
ERROR_RATE = "error rate"
RESOLVED, CEILING = "resolved", "ceiling held"  # how a complete search ends (Capacity.ended starts with one)


@dataclass(frozen=True)
class Step:
    """One concurrency, measured: each judged SLO's value and whether it held."""

    users: int
    passed: bool
    broke: tuple[str, ...]  # what failed: the SLOs furthest over their limit first, or why it has no numbers
    values: dict[str, float]  # judged SLO -> measured (ms, share)
    limits: dict[str, float]
    requests: int  # judged (after the warm-up)
    output_tokens_per_s: float
    seconds: float  # wall time the step took, its load's start and copy-out included

    def line(self) -> str:
        """One progress line: the concurrency, each SLO's value, pass or fail."""
        values = ", ".join(f"{name} {_number(value)}" for name, value in self.values.items()) or "no values"
        verdict = "PASS" if self.passed else f"FAIL ({', '.join(self.broke)})"
        return (f"capacity: {self.users} users: {verdict}; {values}; {self.requests} requests, "
                f"{self.output_tokens_per_s:.1f} output tok/s, {self.seconds:.0f} s")

    def summary(self) -> dict[str, object]:
        """summary.json's entry for the step (NaN, no data, as null)."""
        values = {name: value if math.isfinite(value) else None for name, value in self.values.items()}
        return {"users": self.users, "passed": self.passed, "broke": list(self.broke), "values": values,
                "requests": self.requests, "output_tokens_per_s": self.output_tokens_per_s,
                "seconds": round(self.seconds, 1)}


def _number(value: float) -> str:
    """A measured value as the step line prints it (thousands separated, 4 significant digits)."""
    return "no data" if math.isnan(value) else f"{value:,.4g}"


def judge(users: int, samples: list[RequestSample], slos: Slos, warmup_s: float, seconds: float) -> Step:
    """A step's samples (those starting after ``warmup_s``) against the latency SLOs and the error rate."""
    first = min((s.start for s in samples), default=0.0)
    steady = [s for s in samples if s.start >= first + warmup_s]
    if not steady:
        return failed_step(users, f"no request started after the {warmup_s:g} s warm-up", seconds)
    judged = [r for r in slo_verdict(steady, slos) if r.name.startswith(JUDGED_PREFIXES) or r.name == ERROR_RATE]
    over = sorted((r for r in judged if not r.passed), key=lambda r: -_overshoot(r.measured, r.limit))
    return Step(users, not over, tuple(r.name for r in over), {r.name: r.measured for r in judged},
                {r.name: r.limit for r in judged}, len(steady), load_stats(steady).output_tokens_per_s, seconds)


def _overshoot(measured: float, limit: float) -> float:
    """How far past its limit a value is, as a share (no data: furthest)."""
    if math.isnan(measured):
        return math.inf
    return measured / limit if limit > 0 else (math.inf if measured > 0 else 0.0)


def failed_step(users: int, why: str, seconds: float) -> Step:
    """A step that gave no numbers to judge (its load failed, or no request ran): a failure, saying why."""
    return Step(users, False, (why,), {}, {}, 0, 0.0, seconds)


@dataclass(frozen=True)
class Capacity:
    """What the search found: the knee (highest passing concurrency), where it broke, and every step."""

    knee: int | None  # None: no step passed
    lowest_failing: int | None  # None: no step failed (the ceiling held, or the budget ended the climb)
    broke_first: tuple[str, ...]  # what failed at lowest_failing, furthest over its limit first
    steps: tuple[Step, ...]
    ended: str  # why the search stopped: resolved, ceiling held, budget spent, no step passed
    elapsed_s: float
    settings: CapacitySearch
    peak_users: int | None = None

    @property
    def complete(self) -> bool:
        """The knee is known to the stated resolution, or the ceiling held: a measurement, not only a floor."""
        return self.ended.startswith((RESOLVED, CEILING))

    @property
    def replicas_for_peak(self) -> int | None:
        """Replicas the spec's expected peak concurrency needs at this capacity."""
        if self.peak_users is None or not self.knee:
            return None
        return math.ceil(self.peak_users / self.knee)

    def headline(self) -> str:
        """One line: the knee, where it broke, how the search ended, and the replicas for the peak."""
        steps = f"{len(self.steps)} steps, {self.elapsed_s:.0f} s; {self.ended}"
        if self.knee is None:
            lowest = min((s.users for s in self.steps), default=None)
            if lowest is None:
                return f"capacity: not found, no step ran ({steps})"
            return f"capacity: not found, no step held; the lowest tried, {lowest} users, broke " \
                   f"{', '.join(self.broke_first)} ({steps})"
        above = (f", {self.lowest_failing} broke {', '.join(self.broke_first)}" if self.lowest_failing is not None
                 else "")
        replicas = (f"; peak {self.peak_users} users needs {self.replicas_for_peak} replicas"
                    if self.replicas_for_peak is not None else "")
        return (f"capacity: {self.knee} concurrent users per replica hold every latency SLO and the error rate"
                f"{above} ({steps}){replicas}")

    def summary(self) -> dict[str, object]:
        """summary.json's ``capacity`` object (and the certification's, which later runs compare with)."""
        return {"knee": self.knee, "lowest_failing": self.lowest_failing, "broke_first": list(self.broke_first),
                "ended": self.ended, "complete": self.complete, "elapsed_s": round(self.elapsed_s, 1),
                "settings": self.settings.model_dump(mode="json", exclude={"enabled", "peak_users", "max_drop"}),
                "peak_users": self.peak_users, "replicas_for_peak": self.replicas_for_peak,
                "steps": [s.summary() for s in self.steps]}


def resolved(passing: int, failing: int, resolution: float) -> bool:
    """The knee is known closely enough: the lowest failing step within ``resolution`` of the highest passing."""
    return failing - passing <= max(1, math.floor(resolution * passing))


def search(measure: Callable[[int], Step], settings: CapacitySearch, start_users: int,
           progress: Callable[[str], None], clock: Callable[[], float] = time.monotonic,
           peak_users: int | None = None, first_step_s: float | None = None) -> Capacity:
    """Climb from ``start_users`` by doubling to the first failing step (or the ceiling), then bisect; each step
    measured by ``measure(users)`` and said on one line, and none started that the budget could not finish (a step
    is taken to last as long as the longest so far, the first ``first_step_s``, default its load's length)."""
    started = clock()
    steps: list[Step] = []
    passing, failing = 0, None  # 0: nothing has passed yet (one user is the floor)
    broke: tuple[str, ...] = ()
    first_estimate = first_step_s if first_step_s is not None else settings.step_duration_s + settings.warmup_s

    def room() -> bool:
        longest = max((s.seconds for s in steps), default=first_estimate)
        return clock() - started + longest <= settings.budget_s

    def step(users: int) -> Step:
        measured = measure(users)
        steps.append(measured)
        progress(measured.line())
        return measured

    users = max(1, min(start_users, settings.max_users))
    ended = ""
    while not ended:  # the climb (or, when the first step fails, the way down by halves)
        if not room():
            ended = "budget spent before the knee was resolved"
            break
        if step(users).passed:
            passing = users
            if failing is not None:
                break
            if users >= settings.max_users:
                ended = f"{CEILING}: {settings.max_users} users"
            users = min(users * 2, settings.max_users)
        else:
            failing, broke = users, steps[-1].broke
            if passing or users == 1:
                break
            users = max(1, users // 2)
    while not ended and failing is not None and passing and not resolved(passing, failing, settings.resolution):
        if not room():
            ended = "budget spent before the knee was resolved"
            break
        users = (passing + failing) // 2
        if step(users).passed:
            passing = users
        else:
            failing, broke = users, steps[-1].broke
    if not ended:
        ended = "no step passed" if not passing else f"{RESOLVED} to {settings.resolution:.0%}"
    return Capacity(passing or None, failing, broke, tuple(steps), ended, clock() - started, settings, peak_users)


def step_load(load: Load, users: int, settings: CapacitySearch) -> Load:
    """The load of one step: ``users`` closed-loop users for the warm-up and the step, the spec's request shape."""
    return load.model_copy(update={"profile": UsersProfile(users=users,
                                                            duration_s=settings.warmup_s + settings.step_duration_s)})


def start_users(load: Load, settings: CapacitySearch, samples: list[RequestSample]) -> int:
    """The first step: the spec's choice; else the concurrency the SLO load test held (``samples``): its users, a
    ramp's peak, or for a rate profile the requests it kept in flight on average (Little's law)."""
    if settings.start_users is not None:
        return settings.start_users
    if load.profile.kind != "rate":
        return load_concurrency(load)
    span = max((s.start + s.e2e_s for s in samples), default=0.0) - min((s.start for s in samples), default=0.0)
    in_flight = sum(s.e2e_s for s in samples) / span if span > 0 else 1.0
    return max(1, min(load_concurrency(load), round(in_flight)))
