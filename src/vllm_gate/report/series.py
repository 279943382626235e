"""What the report plots, computed from the load test's raw samples."""

from __future__ import annotations

import math
from collections.abc import Sequence

from vllm_gate.load.samples import RequestSample, percentile

LATENCY_P50 = "latency p50 e2e (ms)"
REQUESTS = "requests/s"
OUTPUT_TOKENS = "output tokens/s"
ERRORS = "errors/s"


def latency_values(samples: Sequence[RequestSample]) -> dict[str, list[float]]:
    """Every successful request's TTFT, each of its inter-token gaps and its end-to-end time, in ms."""
    ok = [s for s in samples if s.ok]
    return {"ttft": [s.ttft_s * 1000 for s in ok if s.ttft_s is not None],
            "itl": [gap * 1000 for s in ok for gap in s.itl_s],
            "e2e": [s.e2e_s * 1000 for s in ok]}


def over_time(samples: Sequence[RequestSample], bucket_s: float = 1.0) -> dict[str, list[tuple[float, float]]]:
    """Per-bucket series over the run, each request counted in the bucket where it ended.

    x is the bucket's start in seconds since the first request started; every bucket up to the last request's end
    has a rate (zero when nothing ended in it), and a p50 latency only when a request in it succeeded. Rates are
    per second of a whole bucket, so the last, possibly partial, bucket can read low.
    """
    if bucket_s <= 0:
        raise ValueError(f"bucket_s must be positive, not {bucket_s}")
    series: dict[str, list[tuple[float, float]]] = {LATENCY_P50: [], REQUESTS: [], OUTPUT_TOKENS: [], ERRORS: []}
    if not samples:
        return series
    first = min(s.start for s in samples)
    buckets: dict[int, list[RequestSample]] = {}
    for s in samples:
        buckets.setdefault(math.floor((s.start + s.e2e_s - first) / bucket_s), []).append(s)
    for index in range(max(buckets) + 1):
        ended = buckets.get(index, [])
        ok = [s for s in ended if s.ok]
        x = index * bucket_s
        if ok:
            series[LATENCY_P50].append((x, percentile([s.e2e_s for s in ok], 50) * 1000))
        series[REQUESTS].append((x, len(ended) / bucket_s))
        series[OUTPUT_TOKENS].append((x, sum(s.output_tokens or 0 for s in ok) / bucket_s))
        series[ERRORS].append((x, (len(ended) - len(ok)) / bucket_s))
    return series
