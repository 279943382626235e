"""The capacity search: the highest concurrency one replica serves with every latency SLO and the error rate held.

An exponential climb from the load profile's concurrency (doubling until a step breaks an SLO or the ceiling
passes), then bisection between the highest passing and the lowest failing step until they are within the stated
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
from vllm_gate.spec import CapacitySearch, Load, Slos, UsersProfile

# The SLOs the knee is judged by: every latency percentile and the error rate (slo_verdict's names).
JUDGED_PREFIXES = ("ttft p", "itl p", "e2e p")
ERROR_RATE = "error rate"


@dataclass(frozen=True)
class Step:
    """One concurrency, measured: each judged SLO's value and whether it held."""

    users: int
    passed: bool
    broke: tuple[str, ...]  # the judged SLOs that failed, in slo_verdict's order
    values: dict[str, float]  # judged SLO -> measured (ms, share)
    limits: dict[str, float]
    requests: int  # judged (after the warm-up)
    output_tokens_per_s: float
    seconds: float  # wall time the step took, its load's start and copy-out included

    def line(self) -> str:
        """One progress line: the concurrency, each SLO's value, pass or fail."""
        values = ", ".join(f"{name} {_number(value)}" for name, value in self.values.items())
        verdict = "PASS" if self.passed else f"FAIL ({', '.join(self.broke)})"
        return (f"capacity: {self.users} users: {verdict}; {values}; {self.requests} requests, "
                f"{self.output_tokens_per_s:.1f} output tok/s, {self.seconds:.0f} s")

    def summary(self) -> dict[str, object]:
        values = {name: value if math.isfinite(value) else None for name, value in self.values.items()}
        return {"users": self.users, "passed": self.passed, "broke": list(self.broke), "values": values,
                "requests": self.requests, "output_tokens_per_s": self.output_tokens_per_s,
                "seconds": round(self.seconds, 1)}


def _number(value: float) -> str:
    return "no data" if math.isnan(value) else f"{value:,.4g}"


def judge(users: int, samples: list[RequestSample], slos: Slos, warmup_s: float, seconds: float) -> Step:
    """A step's samples (those starting after ``warmup_s``) against the latency SLOs and the error rate."""
    first = min((s.start for s in samples), default=0.0)
    steady = [s for s in samples if s.start >= first + warmup_s]
    judged = [r for r in slo_verdict(steady, slos) if r.name.startswith(JUDGED_PREFIXES) or r.name == ERROR_RATE]
    return Step(users, bool(steady) and all(r.passed for r in judged),
                tuple(r.name for r in judged if not r.passed) or (() if steady else ("no requests",)),
                {r.name: r.measured for r in judged}, {r.name: r.limit for r in judged}, len(steady),
                load_stats(steady).output_tokens_per_s if steady else 0.0, seconds)


@dataclass(frozen=True)
class Capacity:
    """What the search found: the knee (highest passing concurrency), where it broke, and every step."""

    knee: int | None  # None: even one user broke an SLO
    lowest_failing: int | None  # None: the ceiling held
    broke_first: tuple[str, ...]  # at lowest_failing
    steps: tuple[Step, ...]
    ended: str  # why the search stopped: resolved, ceiling held, budget spent, one user failed
    elapsed_s: float
    peak_users: int | None = None

    @property
    def replicas_for_peak(self) -> int | None:
        """Replicas the spec's expected peak concurrency needs at this capacity."""
        if self.peak_users is None or not self.knee:
            return None
        return math.ceil(self.peak_users / self.knee)

    def headline(self) -> str:
        if self.knee is None:
            return f"capacity: below 1 user ({', '.join(self.broke_first)} broke at 1); {self.ended}"
        above = (f", {self.lowest_failing} broke {', '.join(self.broke_first)}" if self.lowest_failing is not None
                 else "")
        replicas = (f"; peak {self.peak_users} users needs {self.replicas_for_peak} replicas"
                    if self.replicas_for_peak is not None else "")
        return (f"capacity: {self.knee} concurrent users per replica hold every latency SLO and the error rate"
                f"{above} ({len(self.steps)} steps, {self.elapsed_s:.0f} s; {self.ended}){replicas}")

    def summary(self) -> dict[str, object]:
        """summary.json's ``capacity`` object (and the certification's, which later runs compare with)."""
        return {"knee": self.knee, "lowest_failing": self.lowest_failing, "broke_first": list(self.broke_first),
                "ended": self.ended, "elapsed_s": round(self.elapsed_s, 1), "peak_users": self.peak_users,
                "replicas_for_peak": self.replicas_for_peak, "steps": [s.summary() for s in self.steps]}


def resolved(passing: int, failing: int, resolution: float) -> bool:
    """The knee is known closely enough: the lowest failing step within ``resolution`` of the highest passing."""
    return failing - passing <= max(1, math.floor(resolution * passing))


def search(measure: Callable[[int], Step], settings: CapacitySearch, start_users: int,
           progress: Callable[[str], None], clock: Callable[[], float] = time.monotonic,
           peak_users: int | None = None) -> Capacity:
    """Climb from ``start_users`` by doubling to the first failing step (or the ceiling), then bisect; each step
    measured by ``measure(users)``, said on one line, and none started that the budget could not finish."""
    started = clock()
    steps: list[Step] = []
    passing, failing = 0, None  # 0: nothing has passed yet (one user is the floor)
    broke: tuple[str, ...] = ()

    def room() -> bool:
        """One more step fits the budget (a step takes about as long as the longest so far)."""
        longest = max((s.seconds for s in steps), default=settings.step_duration_s + settings.warmup_s)
        return clock() - started + longest <= settings.budget_s

    users = max(1, min(start_users, settings.max_users))
    ended = ""
    while True:  # the climb (or, when the first step fails, the way down by halves)
        if not room():
            ended = "budget spent"
            break
        step = measure(users)
        steps.append(step)
        progress(step.line())
        if step.passed:
            passing = users
            if failing is not None:
                break
            if users >= settings.max_users:
                ended = f"the ceiling of {settings.max_users} users held"
                break
            users = min(users * 2, settings.max_users)
        else:
            failing, broke = users, step.broke
            if passing or users == 1:
                break
            users = max(1, users // 2)
    while not ended and failing is not None and passing and not resolved(passing, failing, settings.resolution):
        if not room():
            ended = "budget spent"
            break
        users = (passing + failing) // 2
        step = measure(users)
        steps.append(step)
        progress(step.line())
        if step.passed:
            passing = users
        else:
            failing, broke = users, step.broke
    if not ended:
        ended = ("one user broke an SLO" if not passing else
                 f"resolved to {settings.resolution:.0%}" if failing is not None else "no failing step")
    return Capacity(passing or None, failing, broke, tuple(steps), ended, clock() - started, peak_users)


def step_load(load: Load, users: int, settings: CapacitySearch) -> Load:
    """The load of one step: ``users`` closed-loop users for the warm-up and the step, the spec's request shape."""
    return load.model_copy(update={"profile": UsersProfile(users=users,
                                                            duration_s=settings.warmup_s + settings.step_duration_s)})


def start_users(load: Load, settings: CapacitySearch) -> int:
    """The first step: the spec's choice, else the load profile's peak concurrency (which the SLO test just held)."""
    if settings.start_users is not None:
        return settings.start_users
    profile = load.profile
    if profile.kind == "users":
        return profile.users
    if profile.kind == "ramp":
        return max(profile.start_users, profile.end_users)
    return min(profile.max_users, max(1, math.ceil(profile.requests_per_s)))
