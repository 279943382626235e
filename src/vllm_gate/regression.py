"""Tonight's run against the last passed one: a slower or weaker model fails even when it still meets its SLOs."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from vllm_gate.registry.history import PastRun
from vllm_gate.spec import Regression

# The SLO results compared, and whether larger is worse (latency) or better (throughput).
LATENCY_METRICS = ("ttft p95", "itl p95", "e2e p95")
THROUGHPUT_METRICS = ("min output tokens/s",)


def _run(when: datetime, image: str | None) -> str:
    return f"{when:%Y-%m-%d %H:%M} UTC, {image or 'image unknown'}"


def regression_problems(now: Mapping[str, float], now_image: str, now_at: datetime, past: PastRun,
                        past_from: str, tolerance: Regression) -> list[str]:
    """Name each metric that moved past the spec's tolerance, with both values and both runs."""
    problems = []
    then = _run(past.finished_at, past.image)
    for name in (*LATENCY_METRICS, *THROUGHPUT_METRICS):
        if name not in now or name not in past.slo_values or past.slo_values[name] <= 0:
            continue
        before, after = past.slo_values[name], now[name]
        change = after / before - 1
        latency = name in LATENCY_METRICS
        allowed = tolerance.latency_p95_increase if latency else -tolerance.throughput_decrease
        if (latency and change > allowed) or (not latency and change < allowed):
            problems.append(f"{name.removeprefix('min ')} regressed {change:+.0%} (allowed {allowed:+.0%}): "
                            f"{after:.4g} now ({_run(now_at, now_image)}) vs {before:.4g} at {past_from} "
                            f"({then})")
    return problems
