"""Plotted series from raw load samples, checked against values worked out by hand."""

from __future__ import annotations

import pytest

from vllm_gate.load.samples import RequestSample
from vllm_gate.report.series import ERRORS, LATENCY_P50, OUTPUT_TOKENS, REQUESTS, latency_values, over_time


def sample(start: float, e2e: float, ttft: float | None = None, itl: list[float] | None = None,
           out: int | None = None, error: str | None = None) -> RequestSample:
    return RequestSample(start, ttft, itl or [], e2e, 16, out, error)


# Times are binary fractions, so every sum and bucket edge below is exact.
SAMPLES = [
    sample(100.0, 0.5, ttft=0.1, itl=[0.05, 0.1], out=10),       # ends at 0.5 s
    sample(100.25, 0.5, ttft=0.2, itl=[0.15], out=20),           # ends at 0.75 s
    sample(100.5, 1.0, ttft=0.3, itl=[0.02], error="HTTP 500"),  # ends at 1.5 s, failed
    sample(101.0, 2.0, ttft=0.25, out=30),                       # ends at 3.0 s: opens bucket 3
    sample(101.5, 1.75, ttft=0.5, out=6),                        # ends at 3.25 s
]


def test_latency_values_are_milliseconds_of_successful_requests():
    values = latency_values(SAMPLES)
    assert values["ttft"] == pytest.approx([100, 200, 250, 500])
    assert values["itl"] == pytest.approx([50, 100, 150])  # every gap, none from the failed request
    assert values["e2e"] == pytest.approx([500, 500, 2000, 1750])


def test_one_second_buckets_by_request_end():
    series = over_time(SAMPLES)
    # Bucket 0: two successes (e2e 0.5 s both, 30 tokens); 1: the failure; 2: nothing ended; 3: e2e 2.0 and 1.75 s.
    assert series[REQUESTS] == [(0.0, 2.0), (1.0, 1.0), (2.0, 0.0), (3.0, 2.0)]
    assert series[ERRORS] == [(0.0, 0.0), (1.0, 1.0), (2.0, 0.0), (3.0, 0.0)]
    assert series[OUTPUT_TOKENS] == [(0.0, 30.0), (1.0, 0.0), (2.0, 0.0), (3.0, 36.0)]
    # No success ended in buckets 1 and 2, so they have no latency to plot.
    assert series[LATENCY_P50] == [(0.0, 500.0), (3.0, 1875.0)]


def test_two_second_buckets_divide_by_the_bucket():
    series = over_time(SAMPLES, bucket_s=2.0)
    assert series[REQUESTS] == [(0.0, 1.5), (2.0, 1.0)]
    assert series[ERRORS] == [(0.0, 0.5), (2.0, 0.0)]
    assert series[OUTPUT_TOKENS] == [(0.0, 15.0), (2.0, 18.0)]
    assert series[LATENCY_P50] == [(0.0, 500.0), (2.0, 1875.0)]


def test_time_is_counted_from_the_first_start_whatever_the_order():
    assert over_time(list(reversed(SAMPLES))) == over_time(SAMPLES)


def test_no_samples_and_bad_bucket():
    assert latency_values([]) == {"ttft": [], "itl": [], "e2e": []}
    assert over_time([]) == {LATENCY_P50: [], REQUESTS: [], OUTPUT_TOKENS: [], ERRORS: []}
    with pytest.raises(ValueError, match="bucket_s must be positive"):
        over_time(SAMPLES, bucket_s=0)
