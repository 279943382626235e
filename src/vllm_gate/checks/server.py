"""Ask the server what it is: its vLLM version (/version), the model it loaded (/v1/models ``root``) and its
context length, and its KV cache (``vllm:cache_config_info``). A certification compares them with the spec: the
version the image's tag names, the spec's model id."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx
from packaging.version import InvalidVersion, Version

from vllm_gate.base.errors import EndpointError
from vllm_gate.checks import inference, metrics
from vllm_gate.spec import ModelSpec

TIMEOUT_S = 10
CACHE_INFO = "vllm:cache_config_info"
# What the report shows of cache_config_info's labels (it has some thirty).
CACHE_LABELS = ("block_size", "cache_dtype", "gpu_memory_utilization", "kv_cache_memory_bytes",
                "kv_cache_size_tokens", "num_gpu_blocks", "enable_prefix_caching")


@dataclass(frozen=True)
class ServerFacts:
    """What the server answered; None where it answered nothing (a 404: no such endpoint)."""

    version: str | None
    root: str | None
    max_model_len: int | None
    cache: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        """summary.json's ``server`` object (and the registry row's)."""
        return {"version": self.version, "root": self.root, "max_model_len": self.max_model_len,
                "cache_config": dict(self.cache)}

    def lines(self) -> list[str]:
        cache = ", ".join(f"{k}={self.cache[k]}" for k in CACHE_LABELS if k in self.cache)
        length = self.max_model_len if self.max_model_len is not None else "not given"
        return [f"/version: {self.version or 'not served'}",
                f"/v1/models: root {self.root or 'not given'}, max_model_len {length}",
                f"{CACHE_INFO}: {cache or 'not exposed'}"]


def _version(url: str) -> str | None:
    try:
        response = httpx.get(f"{url}/version", timeout=TIMEOUT_S)
    except httpx.TransportError as exc:
        raise EndpointError(f"GET {url}/version: no answer ({type(exc).__name__})") from None
    if response.status_code == 404:
        return None
    if response.status_code != 200:
        raise EndpointError(f"GET {url}/version answered {response.status_code}", response.text[:300])
    try:
        version = response.json().get("version")
    except (ValueError, AttributeError):
        raise EndpointError(f"GET {url}/version answered no JSON object with a version",
                            response.text[:300]) from None
    return str(version) if version else None


def ask(url: str, served_name: str) -> ServerFacts:
    """The server's own account of itself (one /version, one /v1/models, one /metrics)."""
    entry = next((m for m in inference.list_models(url) if m.get("id") == served_name), None)
    if entry is None:
        raise EndpointError(f"/v1/models at {url} does not list {served_name!r}")
    try:
        samples = metrics.scrape(url, TIMEOUT_S).family(CACHE_INFO) or []
    except EndpointError:  # the metrics suite says what is wrong with /metrics
        samples = []
    length = entry.get("max_model_len")
    return ServerFacts(_version(url), entry.get("root"), int(length) if length is not None else None,
                       dict(samples[0].labels) if samples else {})


def release(text: str) -> Version | None:
    """A vLLM release as a comparable version (``v0.11.0``, ``0.6.3.post1``, ``0.11.1rc1``), its local part
    (``+cpu``, ``+g1234``) dropped; None for text that names none (``latest-cuda``, ``nightly-2024``)."""
    try:
        return Version(Version(text.removeprefix("v")).public)
    except InvalidVersion:
        return None


def expected_release(spec: ModelSpec) -> Version | None:
    """The vLLM release the spec's image holds: ``image.vllm_version`` where set, else what its tag names."""
    return release(spec.image.vllm_version or spec.image.tag)


def problems(facts: ServerFacts, spec: ModelSpec, *, simulated: bool) -> list[str]:
    """Where the server is not the spec's: another model loaded, or (real vLLM only: a simulator's version is its
    own) a vLLM release other than the image's."""
    found: list[str] = []
    if facts.root != spec.model_id:
        found.append(f"the server loaded {facts.root or 'an unnamed model'} (/v1/models root), the spec's model is "
                     f"{spec.model_id}")
    if simulated:
        return found
    image = f"{spec.image.repository}:{spec.image.tag}"
    expected = expected_release(spec)
    served = release(facts.version) if facts.version else None
    if expected is None:  # the spec refuses such a tag without image.vllm_version; kept for specs built in code
        found.append(f"image {image} names no vLLM release: set image.vllm_version")
    elif facts.version is None:
        found.append(f"the server answers no /version: not vLLM's OpenAI server ({image} holds vLLM {expected})")
    elif served != expected:
        found.append(f"the server is vLLM {facts.version} (/version), the image {image} holds {expected}")
    return found
