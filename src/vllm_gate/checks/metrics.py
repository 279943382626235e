"""Scrape and read vLLM's Prometheus metrics, old and new names alike."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import astuple, dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

from vllm_gate.base.errors import EndpointError
from vllm_gate.load.samples import RequestSample

# Families the platform relies on. Each tuple is (current name, older names vLLM used before).
REQUIRED_FAMILIES: tuple[tuple[str, ...], ...] = (
    ("vllm:num_requests_running",),
    ("vllm:num_requests_waiting",),
    ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    ("vllm:e2e_request_latency_seconds",),
    ("vllm:time_to_first_token_seconds",),
    ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
    ("vllm:request_success",),
    ("vllm:prompt_tokens",),
    ("vllm:generation_tokens",),
)
REQUESTS, PROMPT_TOKENS, GENERATION_TOKENS = "vllm:request_success", "vllm:prompt_tokens", "vllm:generation_tokens"


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class Scrape:
    """One /metrics scrape: family names (counters without ``_total``, as the parser gives them)."""

    families: dict[str, list[Sample]]

    def family(self, *names: str) -> list[Sample] | None:
        for name in names:
            if name in self.families:
                return self.families[name]
        return None

    def total(self, family: str, model_name: str | None = None) -> float:
        """Sum a counter's ``_total`` samples, optionally of one ``model_name`` label."""
        samples = self.family(family) or []
        return sum(s.value for s in samples if s.name == f"{family}_total"
                   and (model_name is None or s.labels.get("model_name") == model_name))


def parse(text: str) -> Scrape:
    families: dict[str, list[Sample]] = {}
    for fam in text_string_to_metric_families(text):
        families[fam.name] = [Sample(s.name, dict(s.labels), s.value) for s in fam.samples]
    return Scrape(families)


def fetch(url: str, timeout_s: float = 10) -> str:
    """The server's /metrics text."""
    try:
        response = httpx.get(f"{url}/metrics", timeout=timeout_s)
    except httpx.TransportError as exc:
        raise EndpointError(f"GET {url}/metrics: no answer ({type(exc).__name__})") from None
    if response.status_code != 200:
        raise EndpointError(f"GET {url}/metrics answered {response.status_code}")
    return response.text


def scrape(url: str, timeout_s: float = 10) -> Scrape:
    return parse(fetch(url, timeout_s))


def family_problems(scraped: Scrape) -> list[str]:
    """Name each required family that is absent, or declared (``# TYPE``) without a single sample.

    A family passes when any of its accepted names carries samples.
    """
    problems = []
    for names in REQUIRED_FAMILIES:
        if any(scraped.families.get(name) for name in names):
            continue
        declared = scraped.family(*names) is not None
        problems.append(f"{' or '.join(names)}: {'declared but carries no samples' if declared else 'absent'}")
    return problems


@dataclass(frozen=True)
class Counters:
    """Successful requests and tokens, as the server's counters or the load client count them."""

    requests: float
    prompt_tokens: float
    generation_tokens: float


def counters(scraped: Scrape, model_name: str | None = None) -> Counters:
    return Counters(scraped.total(REQUESTS, model_name=model_name),
                    scraped.total(PROMPT_TOKENS, model_name=model_name),
                    scraped.total(GENERATION_TOKENS, model_name=model_name))


def client_counters(samples: Iterable[RequestSample]) -> Counters:
    """What the load client measured: its successful requests and their usage-reported tokens."""
    ok = [s for s in samples if s.ok]
    return Counters(len(ok), sum(s.prompt_tokens or 0 for s in ok), sum(s.output_tokens or 0 for s in ok))


# Counters fields in order, with the server family and the client's word for each.
_COUNTED = ((REQUESTS, "successful requests"), (PROMPT_TOKENS, "prompt tokens"),
            (GENERATION_TOKENS, "completion tokens"))


def counter_problems(before: Counters, after: Counters, client: Counters) -> list[str]:
    """Name every way the server's counters fail to grow by what the load client measured.

    Equal deltas prove nothing when the client saw no success: 0 == 0 holds for a server that failed everything.
    """
    problems = []
    if client.requests == 0:
        problems.append("the load client saw no successful request: nothing to compare")
    for (family, what), old, new, measured in zip(_COUNTED, astuple(before), astuple(after), astuple(client),
                                                   strict=True):
        if new < old:
            problems.append(f"{family} went down from {old:g} to {new:g} (did the server restart?)")
        elif new == old:
            problems.append(f"{family} did not grow (stayed at {new:g}) while the load client measured "
                            f"{measured:g} {what}")
        elif new - old != measured:
            problems.append(f"{family} grew by {new - old:g}, the load client measured {measured:g} {what}")
    return problems
