"""Load statistics from raw samples and the SLO verdict against a spec."""

from __future__ import annotations

import math
from dataclasses import dataclass

from vllm_gate.load.samples import RequestSample, percentile
from vllm_gate.spec import Percentiles, Slos

PCTS = (50, 95, 99)


@dataclass(frozen=True)
class LoadStats:
    requests: int
    errors: int
    duration_s: float
    ttft_ms: dict[int, float]
    itl_ms: dict[int, float]
    tpot_ms: dict[int, float]
    e2e_ms: dict[int, float]
    output_tokens: int
    prompt_tokens: int

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 1.0

    @property
    def request_rate(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def output_tokens_per_s(self) -> float:
        return self.output_tokens / self.duration_s if self.duration_s else 0.0


def _pcts(values: list[float]) -> dict[int, float]:
    return {p: percentile(values, p) * 1000 for p in PCTS}


def load_stats(samples: list[RequestSample]) -> LoadStats:
    """Percentiles in ms from every sample; rates over the span from first start to last finish (of the requests that
    ended by themselves: one cut at the end ends when the test stops, and its tokens are not counted)."""
    ok = [s for s in samples if s.ok]
    ended = [s for s in samples if not s.cut] or samples
    span = (max(s.start + s.e2e_s for s in ended) - min(s.start for s in samples)) if samples else 0.0
    return LoadStats(
        requests=len(samples), errors=len(samples) - len(ok), duration_s=span,
        ttft_ms=_pcts([s.ttft_s for s in ok if s.ttft_s is not None]),
        itl_ms=_pcts([gap for s in ok for gap in s.itl_s]),
        tpot_ms=_pcts([t for s in ok if (t := s.tpot_s) is not None]),
        e2e_ms=_pcts([s.e2e_s for s in ok]),
        output_tokens=sum(s.output_tokens or 0 for s in ok),
        prompt_tokens=sum(s.prompt_tokens or 0 for s in ok),
    )


def good(sample: RequestSample, slos: Slos) -> bool:
    """A request counts toward goodput when it succeeded within every p99 latency limit."""
    if not sample.ok:
        return False
    checks = ((slos.ttft_ms.p99, sample.ttft_s), (slos.e2e_ms.p99, sample.e2e_s),
              (slos.itl_ms.p99, sample.tpot_s))
    return all(limit is None or value is None or value * 1000 <= limit for limit, value in checks)


def goodput(samples: list[RequestSample], slos: Slos) -> float:
    return sum(good(s, slos) for s in samples) / len(samples) if samples else 0.0


@dataclass(frozen=True)
class SloResult:
    name: str
    measured: float
    limit: float
    passed: bool
    unit: str
    note: str = ""  # what the number holds beyond its name (requests cut at the end of the load)

    @property
    def op(self) -> str:
        """How measured must compare with limit: ">=" for floors (throughput, goodput), "<=" for ceilings."""
        return ">=" if self.name.startswith(("min", "goodput")) else "<="

    def line(self) -> str:
        mark = "PASS" if self.passed else "FAIL"
        note = f"; {self.note}" if self.note else ""
        return (f"{mark} {self.name}: {self.measured:.4g} {self.unit} (limit {self.op} {self.limit:g} {self.unit})"
                f"{note}")


def _latency(name: str, measured: dict[int, float], limits: Percentiles) -> list[SloResult]:
    results = []
    for p in PCTS:
        limit = getattr(limits, f"p{p}")
        if limit is not None:
            value = measured[p]
            results.append(SloResult(f"{name} p{p}", value, limit, not math.isnan(value) and value <= limit, "ms"))
    return results


def slo_names(slos: Slos) -> list[str]:
    """Names of the SLOs ``slo_verdict`` will judge, in its order (known before any load runs)."""
    names = [f"{metric} p{p}" for metric in ("ttft", "itl", "e2e") for p in PCTS
             if getattr(getattr(slos, f"{metric}_ms"), f"p{p}") is not None]
    return [*names, "error rate", "min output tokens/s", "goodput"]


def _cut_note(samples: list[RequestSample]) -> str:
    cut = sum(s.cut for s in samples)
    return f"{cut} of {len(samples)} requests cut at the end of the load test, counted as not completed" if cut else ""


def slo_verdict(samples: list[RequestSample], slos: Slos) -> list[SloResult]:
    """Every SLO of the spec with its measured value and pass/fail; pure, so benches and suites share it."""
    stats = load_stats(samples)
    results = [
        *_latency("ttft", stats.ttft_ms, slos.ttft_ms),
        *_latency("itl", stats.itl_ms, slos.itl_ms),
        *_latency("e2e", stats.e2e_ms, slos.e2e_ms),
        SloResult("error rate", stats.error_rate, slos.max_error_rate, stats.error_rate <= slos.max_error_rate, "",
                  _cut_note(samples)),
        SloResult("min output tokens/s", stats.output_tokens_per_s, slos.min_output_tokens_per_s,
                  stats.output_tokens_per_s >= slos.min_output_tokens_per_s, "tok/s"),
    ]
    fraction = goodput(samples, slos)
    results.append(SloResult("goodput", fraction, slos.min_goodput, fraction >= slos.min_goodput, ""))
    return results
