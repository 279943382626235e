"""What the platform's Prometheus knows about the model's pods: scrape targets, vLLM series and their rates."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from vllm_gate.base.errors import GateError
from vllm_gate.base.secret import redact_url
from vllm_gate.checks.metrics import GENERATION_TOKENS, PROMPT_TOKENS, REQUESTS, Counters

REQUEST_TIMEOUT_S = 10
REACH_TIMEOUT_S = 5
POLL_S = 0.5
# Series every vLLM pod must have in Prometheus, under the names Prometheus stores (counters with _total).
REQUIRED_SERIES = ("vllm:num_requests_running", "vllm:request_success_total", "vllm:prompt_tokens_total",
                   "vllm:generation_tokens_total", "vllm:time_to_first_token_seconds_bucket",
                   "vllm:e2e_request_latency_seconds_bucket")
# Beyond the scrape-interval dilution rate_problems corrects for, the rates may differ by this share
# (Prometheus timestamps are milliseconds; the load's wall time is measured around the Locust process).
RATE_SLACK = 0.02


class MonitoringError(GateError):
    """Prometheus could not be asked, or did not answer as Prometheus answers."""


def promql_string(value: str) -> str:
    """``value`` as a double-quoted PromQL string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _re2_literal(text: str) -> str:
    """``text`` as a literal in an RE2 regex (Python's re.escape escapes ``-``, which RE2 rejects)."""
    return "".join(f"\\{c}" if c in r"\.+*?()|[]{}^$" else c for c in text)


def label_matchers(namespace: str, pods: Sequence[str], prefix: str = "") -> str:
    """PromQL matchers for the pods of one namespace (``prefix``: ``exported_`` for relabelled series)."""
    alternatives = "|".join(_re2_literal(pod) for pod in sorted(pods))
    return f"{prefix}namespace={promql_string(namespace)},{prefix}pod=~{promql_string(alternatives)}"


class Prometheus:
    """The Prometheus HTTP API through prometheus-api-client; every failure is one MonitoringError line."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.shown = redact_url(self.url)
        self._client = PrometheusConnect(url=self.url, timeout=REQUEST_TIMEOUT_S,
                                         retry=Retry(total=2, backoff_factor=0.2, status_forcelist=(502, 503, 504)))

    def unreachable(self) -> str | None:
        """One quick try, no retries: None when anything answers the query API, else one line saying so (the
        URL redacted). Every later call retries (a Prometheus restarting); one that is not there is said once."""
        try:
            requests.get(f"{self.url}/api/v1/query", params={"query": "1"}, timeout=REACH_TIMEOUT_S)
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                requests.exceptions.InvalidSchema) as exc:
            return (f"Prometheus {self.shown} is not a usable URL ({type(exc).__name__}): percent-encode any '#', '/' "
                    "or '@' in its user-info")
        except requests.RequestException as exc:
            return f"Prometheus {self.shown} is unreachable ({type(exc).__name__} within {REACH_TIMEOUT_S} s)"
        return None

    def _call(self, what: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except requests.RequestException as exc:
            reason = type(exc).__name__
        except PrometheusApiClientException as exc:
            reason = " ".join(str(exc).split())[:200]
        except Exception as exc:  # an answer that is not Prometheus's shape: one line, never a traceback
            reason = f"unexpected answer ({type(exc).__name__})"
        raise MonitoringError(f"Prometheus {self.shown}: {what} failed: {reason}")

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"time": f"{at:.3f}"} if at is not None else None
        return self._call(f"query {promql}", lambda: self._client.custom_query(promql, params=params))

    def query_range(self, promql: str, start: float, end: float, step_s: float) -> list[dict[str, Any]]:
        return self._call(f"query_range {promql}", lambda: self._client.custom_query_range(
            promql, datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC), f"{step_s:g}s"))

    def active_targets(self) -> list[dict[str, Any]]:
        return self._call("GET /api/v1/targets", lambda: self._client.get_targets(state="active")["activeTargets"])

    def value(self, promql: str, at: float | None = None) -> float | None:
        """The single value of ``promql`` (an aggregate), or None when it has no series."""
        result = self.query(promql, at)
        return float(result[0]["value"][1]) if result else None


def _pod_targets(targets: Sequence[dict[str, Any]], namespace: str, pod: str) -> list[dict[str, Any]]:
    return [t for t in targets if t.get("labels", {}).get("namespace") == namespace
            and t.get("labels", {}).get("pod") == pod]


def target_problems(targets: Sequence[dict[str, Any]], namespace: str, pods: Sequence[str]) -> list[str]:
    """Name every model pod that is not an active scrape target, or whose scrapes fail."""
    problems = []
    for pod in pods:
        found = _pod_targets(targets, namespace, pod)
        if not found:
            problems.append(f"pod {namespace}/{pod} is not a scrape target (no active target labelled "
                            f'namespace="{namespace}", pod="{pod}")')
        for target in found:
            if target.get("health") != "up":
                problems.append(f"target {target.get('scrapeUrl')} of pod {namespace}/{pod} is "
                                f"{target.get('health')}: {target.get('lastError') or 'no error given'}")
    return problems


def wait_for_targets(prom: Prometheus, namespace: str, pods: Sequence[str], timeout_s: float) -> list[str]:
    """Give service discovery and the first scrape time to find new pods; return what is still wrong."""
    deadline = time.monotonic() + timeout_s
    while True:
        problems = target_problems(prom.active_targets(), namespace, pods)
        if not problems or time.monotonic() >= deadline:
            return problems
        time.sleep(POLL_S)


def _seconds(duration: str) -> float:
    """A Prometheus duration such as ``30s``, ``1m`` or ``1m30s``, in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration)
    if not parts:
        raise MonitoringError(f"Prometheus reported a scrape interval it does not document: {duration!r}")
    return sum(float(number) * units[unit] for number, unit in parts)


def scrape_interval_s(targets: Sequence[dict[str, Any]], namespace: str, pods: Sequence[str]) -> float:
    """The longest scrape interval among the pods' targets (what bounds how stale a reading can be)."""
    intervals = [_seconds(t["scrapeInterval"]) for pod in pods for t in _pod_targets(targets, namespace, pod)
                 if t.get("scrapeInterval")]
    if not intervals:
        raise MonitoringError(f"no scrape interval for the pods of {namespace}: they are not scrape targets")
    return max(intervals)


def series_problems(prom: Prometheus, namespace: str, pods: Sequence[str], model: str) -> list[str]:
    """Name each required vLLM series missing per pod, and series whose model_name is not the served name."""
    found = prom.query(f'count by (__name__, pod, model_name) ({{__name__=~"vllm:.+",'
                       f'{label_matchers(namespace, pods)}}})')
    problems = []
    for pod in pods:
        mine = [r["metric"] for r in found if r["metric"].get("pod") == pod]
        named = {m["__name__"] for m in mine if m.get("model_name") == model}
        missing = [name for name in REQUIRED_SERIES if name not in named]
        if not mine:
            problems.append(f"pod {namespace}/{pod}: no vllm:* series in Prometheus with namespace and pod labels")
        elif missing:
            # Info gauges (vllm:cache_config_info) carry the engine's settings and no model_name: not a model's.
            others = sorted({m.get("model_name", "(no model_name label)") for m in mine
                             if not m["__name__"].endswith("_info")} - {model})
            seen = f"; series carry model_name {', '.join(others)}" if others else ""
            problems.append(f"pod {namespace}/{pod}: no {', '.join(missing)} with model_name=\"{model}\"{seen}")
    return problems


def counters_at(prom: Prometheus, namespace: str, pods: Sequence[str], model: str, at: float) -> Counters:
    """The pods' request and token counters summed, as Prometheus held them at ``at``."""
    matchers = f"{label_matchers(namespace, pods)},model_name={promql_string(model)}"

    def total(family: str) -> float:
        return prom.value(f"sum({family}_total{{{matchers}}})", at) or 0.0

    return Counters(total(REQUESTS), total(PROMPT_TOKENS), total(GENERATION_TOKENS))


def wait_for_scrape(prom: Prometheus, namespace: str, pods: Sequence[str], after: float, timeout_s: float) -> float:
    """Wait until Prometheus has scraped every pod after ``after``; return the newest of those scrapes' times.

    At that moment every pod's latest sample is one taken after ``after`` (the oldest pod's included).
    """
    selector = f"timestamp(up{{{label_matchers(namespace, pods)}}})"
    deadline = time.monotonic() + timeout_s
    while True:
        latest = prom.value(f"min({selector})")
        if latest is not None and latest > after:
            return prom.value(f"max({selector})") or latest
        if time.monotonic() >= deadline:
            raise MonitoringError(f"Prometheus {prom.shown} did not scrape the pods of {namespace} within "
                                  f"{timeout_s:.0f} s (last scrape: {_when(latest)})")
        time.sleep(POLL_S)


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S UTC") if ts is not None else "never"


@dataclass(frozen=True)
class CounterWindow:
    """The pods' counters as Prometheus held them at its first scrape before and after the load test."""

    start: float  # Prometheus timestamps of those scrapes
    end: float
    before: Counters
    after: Counters
    scrape_interval_s: float


_RATES = (("requests", "successful requests/s"), ("prompt_tokens", "prompt tokens/s"),
          ("generation_tokens", "completion tokens/s"))


def rate_problems(window: CounterWindow, client: Counters, load_wall_s: float) -> list[str]:
    """Compare Prometheus's rates over its window with the load client's over the load test.

    Prometheus's window runs from its last scrape before the load to its first after, so it is the load test
    plus up to one scrape interval on each side with no traffic: its rate is the client's diluted by
    load_wall_s / window, and is compared with that, within RATE_SLACK.
    """
    span = window.end - window.start
    if span <= 0 or load_wall_s <= 0 or load_wall_s > span + window.scrape_interval_s:
        return [f"Prometheus's scrapes ({span:.1f} s apart) do not bracket the load test ({load_wall_s:.1f} s)"]
    problems = []
    for field, unit in _RATES:
        grew = getattr(window.after, field) - getattr(window.before, field)
        theirs = grew / span
        ours = getattr(client, field) / load_wall_s
        expected = ours * min(1.0, load_wall_s / span)
        if ours == 0:
            problems.append(f"the load client measured no {unit.removesuffix('/s')}: nothing to compare")
        elif abs(theirs - expected) > RATE_SLACK * expected:
            problems.append(f"Prometheus: {theirs:.2f} {unit} over its {span:.1f} s window (grew by {grew:g}); "
                            f"the load client's {ours:.2f} over {load_wall_s:.1f} s makes {expected:.2f} over that "
                            f"window; allowed difference {RATE_SLACK:.0%} (scrape interval "
                            f"{window.scrape_interval_s:g} s)")
    return problems


def requests_by_pod(prom: Prometheus, namespace: str, pod_prefix: str, start: float, end: float) -> dict[str, float]:
    """Requests each pod named ``<pod_prefix>...`` in ``namespace`` answered between ``start`` and ``end``
    (``vllm:request_success_total``'s increase, as Prometheus held it at ``end``: a pod removed since still counts)."""
    window = max(1, round(end - start))
    selector = f"namespace={promql_string(namespace)},pod=~{promql_string(_re2_literal(pod_prefix) + '.*')}"
    result = prom.query(f"sum by (pod) (increase({REQUESTS}_total{{{selector}}}[{window}s]))", end)
    return {r["metric"]["pod"]: float(r["value"][1]) for r in result if "pod" in r["metric"]}
