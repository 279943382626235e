"""Plotted series from raw load samples, checked against values worked out by hand."""

from __future__ import annotations

import random

import pytest

from vllm_gate.load.samples import RequestSample
from vllm_gate.report.series import (
    ERRORS,
    LATENCY_P50,
    MAX_BINS,
    OUTPUT_TOKENS,
    REQUESTS,
    bin_width,
    latency_values,
    over_time,
)


def sample(start: float, e2e: float, ttft: float | None = None, itl: list[float] | None = None,
           out: int | None = None, error: str | None = None) -> RequestSample:
    return RequestSample(start, ttft, itl or [], e2e, 16, out, error)


# Times are binary fractions, so every sum and bin edge below is exact.
SAMPLES = [
    sample(100.0, 0.5, ttft=0.1, itl=[0.05, 0.1], out=10),       # ends at 0.5 s
    sample(100.25, 0.5, ttft=0.2, itl=[0.15], out=20),           # ends at 0.75 s
    sample(100.5, 1.0, ttft=0.3, itl=[0.02], error="HTTP 500"),  # ends at 1.5 s, failed
    sample(101.0, 2.0, ttft=0.25, out=30),                       # ends at 3.0 s
    sample(101.5, 1.75, ttft=0.5, out=6),                        # ends at 3.25 s
]


def test_latency_values_are_milliseconds_of_successful_requests():
    values = latency_values(SAMPLES)
    assert values["ttft"] == pytest.approx([100, 200, 250, 500])
    assert values["itl"] == pytest.approx([50, 100, 150])  # every gap, none from the failed request
    assert values["e2e"] == pytest.approx([500, 500, 2000, 1750])


def test_one_second_bins_by_request_end_the_last_quarter_second_joining_the_bin_before():
    series = over_time(SAMPLES, bin_s=1.0)
    # The run spans 3.25 s: bins [0, 1), [1, 2) and [2, 3.25], the quarter second too short for a bin of its own.
    # Bin 0: two successes (e2e 0.5 s both, 30 tokens); 1: the failure; 2: e2e 2.0 and 1.75 s (36 tokens).
    assert series[REQUESTS] == [(0.0, 2.0), (1.0, 1.0), (2.0, pytest.approx(2 / 1.25))]
    assert series[ERRORS] == [(0.0, 0.0), (1.0, 1.0), (2.0, 0.0)]
    assert series[OUTPUT_TOKENS] == [(0.0, 30.0), (1.0, 0.0), (2.0, pytest.approx(36 / 1.25))]
    assert series[LATENCY_P50] == [(0.0, 500.0), (2.0, 1875.0)]


def test_two_second_bins_divide_by_the_bin_and_the_last_partial_bin_by_its_real_width():
    series = over_time(SAMPLES, bin_s=2.0)
    # [0, 2) holds three requests over 2 s; [2, 3.25] two over 1.25 s, more than half a bin, so a bin of its own.
    assert series[REQUESTS] == [(0.0, 1.5), (2.0, pytest.approx(2 / 1.25))]
    assert series[ERRORS] == [(0.0, 0.5), (2.0, 0.0)]
    assert series[OUTPUT_TOKENS] == [(0.0, 15.0), (2.0, pytest.approx(36 / 1.25))]
    assert series[LATENCY_P50] == [(0.0, 500.0), (2.0, 1875.0)]


def test_one_second_bins_with_nothing_ending_in_one_rate_zero_there():
    samples = [*SAMPLES, sample(100.0, 5.0, out=1)]  # ends at 5.0 s: nothing ends in [3, 4)
    assert over_time(samples, bin_s=1.0)[REQUESTS] == [(0.0, 2.0), (1.0, 1.0), (2.0, 0.0), (3.0, 2.0), (4.0, 1.0)]


def poisson(rate: float, duration_s: float, seed: int) -> list[RequestSample]:
    """Requests arriving at random at a steady ``rate``, each taking 0.5 to 1.5 s, every 20th failing."""
    rng = random.Random(seed)  # noqa: S311 (a fixed, repeatable draw, not a secret)
    samples, t = [], rng.expovariate(rate)
    while t < duration_s:
        error = "HTTP 500" if len(samples) % 20 == 19 else None
        samples.append(sample(1000.0 + t, rng.uniform(0.5, 1.5), ttft=0.1, out=None if error else 16, error=error))
        t += rng.expovariate(rate)
    return samples


def widths(points: list[tuple[float, float]], samples: list[RequestSample]) -> list[float]:
    """Each bin's real width: to the next bin's start, the last one to the last request's end."""
    first = min(s.start for s in samples)
    end = max(s.start + s.e2e_s for s in samples) - first
    starts = [x for x, _ in points]
    return [b - a for a, b in zip(starts, [*starts[1:], end], strict=True)]


# Seed 2 draws what the issue saw: 180 requests in 60 s, 1 s bins swinging 0 to 8 requests/s.
STEADY = poisson(3.0, 60.0, seed=2)


def test_three_requests_a_second_for_a_minute_reads_as_a_rate_not_a_sawtooth():
    one_second = [rate for _, rate in over_time(STEADY, bin_s=1.0)[REQUESTS]]
    assert (min(one_second), max(one_second)) == (0.0, 8.0)  # what the report drew
    assert bin_width(STEADY) == 4  # 10 requests at 3/s take 3.3 s: the next whole second
    rates = [rate for _, rate in over_time(STEADY)[REQUESTS]]
    assert len(rates) >= 10
    # Within two thirds of the true rate either way: a 1 s bin holds 3 requests on average, a 4 s bin 12, and
    # random arrivals still vary by about the square root of that.
    assert all(1.0 <= rate <= 5.0 for rate in rates), rates


@pytest.mark.parametrize("samples", [STEADY, poisson(0.5, 600.0, seed=1), poisson(40.0, 30.0, seed=3), SAMPLES])
def test_no_request_token_or_error_is_lost_or_counted_twice(samples: list[RequestSample]):
    series = over_time(samples)
    requests, errors, tokens = series[REQUESTS], series[ERRORS], series[OUTPUT_TOKENS]
    width = widths(requests, samples)
    assert sum(rate * w for (_, rate), w in zip(requests, width, strict=True)) == pytest.approx(len(samples))
    assert sum(rate * w for (_, rate), w in zip(errors, width, strict=True)) == pytest.approx(
        sum(not s.ok for s in samples))
    assert sum(rate * w for (_, rate), w in zip(tokens, width, strict=True)) == pytest.approx(
        sum(s.output_tokens or 0 for s in samples if s.ok))
    # Every bin but the last is a whole bin; the last between half and one and a half bins (or the whole run).
    bin_s = bin_width(samples)
    assert all(w == pytest.approx(bin_s) for w in width[:-1])
    assert bin_s / 2 <= width[-1] < 1.5 * bin_s or len(width) == 1


@pytest.mark.parametrize(("rate", "duration_s", "expected"), [
    (3.0, 60.0, 4),      # 10 requests per bin
    (40.0, 30.0, 1),     # never under a second
    (0.5, 600.0, 20),    # 300 requests: 30 bins of 10
    (50.0, 7200.0, 36),  # a two-hour soak: 200 bins, not 7200
])
def test_the_bin_holds_ten_requests_in_whole_seconds_and_the_run_at_most_200_bins(rate: float, duration_s: float,
                                                                                   expected: int):
    samples = [sample(1000.0 + i / rate, 0.0) for i in range(round(rate * duration_s))]
    assert bin_width(samples) == expected
    assert len(over_time(samples)[REQUESTS]) <= MAX_BINS


def test_time_is_counted_from_the_first_start_whatever_the_order():
    assert over_time(list(reversed(SAMPLES))) == over_time(SAMPLES)
    assert over_time(list(reversed(STEADY))) == over_time(STEADY)


def test_a_run_shorter_than_its_bin_is_one_bin_over_its_real_length():
    samples = [sample(100.0, 0.5, out=4), sample(100.5, 1.5, out=4)]  # 2 requests over 2 s: a 10 s bin
    assert bin_width(samples) == 10
    assert over_time(samples)[REQUESTS] == [(0.0, 1.0)]
    assert over_time([sample(100.0, 0.0)])[REQUESTS] == [(0.0, 1.0)]  # no length at all: per one bin


def test_no_samples_and_bad_bin():
    assert latency_values([]) == {"ttft": [], "itl": [], "e2e": []}
    assert over_time([]) == {LATENCY_P50: [], REQUESTS: [], OUTPUT_TOKENS: [], ERRORS: []}
    assert bin_width([]) == 1
    with pytest.raises(ValueError, match="bin_s must be positive"):
        over_time(SAMPLES, bin_s=0)
