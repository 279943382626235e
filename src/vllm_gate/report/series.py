"""What the report plots, computed from the load test's raw samples."""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

from vllm_gate.load.samples import RequestSample, percentile

LATENCY_P50 = "latency p50 e2e (ms)"
REQUESTS = "requests/s"
OUTPUT_TOKENS = "output tokens/s"
ERRORS = "errors/s"
PER_BIN = 10  # requests a bin should hold on average: fewer, and a rate of a few whole counts reads as noise
MAX_BINS = 200  # more points than this would be drawn under a pixel apart on the plot


def latency_values(samples: Sequence[RequestSample]) -> dict[str, list[float]]:
    """Every successful request's TTFT, each of its inter-token gaps and its end-to-end time, in ms."""
    ok = [s for s in samples if s.ok]
    return {"ttft": [s.ttft_s * 1000 for s in ok if s.ttft_s is not None],
            "itl": [gap * 1000 for s in ok for gap in s.itl_s],
            "e2e": [s.e2e_s * 1000 for s in ok]}


def _span(samples: Sequence[RequestSample]) -> tuple[float, float]:
    """The first request's start and the seconds from it to the last request's end: what the series cover."""
    first = min(s.start for s in samples)
    return first, max(s.start + s.e2e_s for s in samples) - first


def bin_width(samples: Sequence[RequestSample]) -> int:
    """Seconds per bin of the over-time series, from the run's request rate and length.

    The narrowest whole number of seconds, at least 1, that holds PER_BIN requests at the run's average rate
    (requests over the span from the first start to the last end), widened only so the run has at most MAX_BINS.
    A run of about 10 x PER_BIN requests or more gets at least ten bins; a shorter one gets fewer, wider bins,
    as a finer plot of it would draw counts of a few requests, not a rate (1 s bins at 3 requests/s swing 0-8).
    """
    if not samples:
        return 1
    _, span = _span(samples)
    if span <= 0:
        return 1
    rate = len(samples) / span
    return max(1, math.ceil(PER_BIN / rate), math.ceil(span / MAX_BINS))


def _edges(span: float, bin_s: float) -> list[float]:
    """Bin edges from 0 to ``span``: whole bins, the last one stretched to ``span`` or a partial one after them.

    A remainder under half a bin joins the bin before, so no bin is so short that one request in it is a spike;
    a longer one is a bin of its own. Either way each rate is divided by its bin's real width.
    """
    whole = math.floor(span / bin_s)
    edges = [float(i * bin_s) for i in range(whole + 1)]
    rest = span - edges[-1]
    if whole == 0 or rest >= bin_s / 2:
        edges.append(span)
    elif rest > 0:
        edges[-1] = span
    return edges


def over_time(samples: Sequence[RequestSample],
              bin_s: float | None = None) -> dict[str, list[tuple[float, float]]]:
    """Per-bin series over the run, each request counted in the bin where it ended.

    ``bin_s``: seconds per bin, bin_width(samples) when None. x is the bin's start in seconds since the first
    request started; every bin up to the last request's end has a rate (zero when nothing ended in it), and a p50
    latency only when a request in it succeeded. A rate is the requests (or tokens) that ended in the bin over the
    bin's real width, so the last bin, which ends with the last request and may be shorter or longer than the
    others (see _edges), reads true; no request is dropped.
    """
    if bin_s is None:
        bin_s = bin_width(samples)
    if bin_s <= 0:
        raise ValueError(f"bin_s must be positive, not {bin_s}")
    series: dict[str, list[tuple[float, float]]] = {LATENCY_P50: [], REQUESTS: [], OUTPUT_TOKENS: [], ERRORS: []}
    if not samples:
        return series
    first, span = _span(samples)
    edges = _edges(span, bin_s)
    bins: dict[int, list[RequestSample]] = {}
    for s in samples:
        # min(): the last request ends on the last edge, and a stretched last bin holds the remainder's requests.
        index = min(math.floor((s.start + s.e2e_s - first) / bin_s), len(edges) - 2)
        bins.setdefault(index, []).append(s)
    for index, (x, end) in enumerate(pairwise(edges)):
        ended = bins.get(index, [])
        ok = [s for s in ended if s.ok]
        width = end - x or bin_s  # every request ended the instant the first started: no width to divide by
        if ok:
            series[LATENCY_P50].append((x, percentile([s.e2e_s for s in ok], 50) * 1000))
        series[REQUESTS].append((x, len(ended) / width))
        series[OUTPUT_TOKENS].append((x, sum(s.output_tokens or 0 for s in ok) / width))
        series[ERRORS].append((x, (len(ended) - len(ok)) / width))
    return series
